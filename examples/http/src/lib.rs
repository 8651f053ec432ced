//! An HTTP service on loopback, hyper on tokio, whose request handlers are
//! a hot module (`examples/http-handlers`) of `async fn`s, swapped while
//! keep-alive clients keep sending requests.
//!
//! For each request the host counts it in the module's state, a
//! synchronous call (`record`), then awaits the module's async handler
//! (`handle`), which runs on the host's runtime. A swap never cuts a
//! request: one in flight finishes on the version it started on.
//!
//! [`serve`] runs the server; [`Client`] speaks HTTP/1.1 over one
//! keep-alive connection; [`load`] drives a server from several clients
//! and checks every response; [`build_handlers`] builds either version of
//! the module.

#![warn(missing_docs)]

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use hotswap_scratch::ScratchCrate;

/// The handler module as the host sees it.
pub use http_handlers::handlers::Hot;

/// Accepts connections on `listener` and serves each (HTTP/1.1,
/// keep-alive) on a task of its own, until the runtime stops.
pub async fn serve(hot: Arc<Hot>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hot = hot.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(hot.clone(), request));
            // A connection that fails is the client's to see closed.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request: counted in the module's state (synchronously, under its
/// lock), then answered by the module's async handler (no lock held).
async fn respond(
    hot: Arc<Hot>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let answered = CatchUnwind(Box::pin(async move {
        let number = hot.get().record();
        // The guard is let go before the await (the call holds its version
        // by itself): a guard kept across an await keeps a pin slot of the
        // thread that took it.
        let call = hot.get().handle(path, number);
        call.await
    }))
    .await;
    // A handler's panic comes back as a panic here: a 500, and the module
    // and its state stay usable.
    let (status, body) =
        answered.unwrap_or_else(|message| (500, format!("handler panicked: {message}")));
    let response = Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"bad status"))));
    Ok(response)
}

/// Polls a future and turns a panic into its message.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| {
                        payload
                            .downcast_ref::<&str>()
                            .map(|text| (*text).to_owned())
                    })
                    .unwrap_or_default();
                Poll::Ready(Err(message))
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection, one request at a time.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `address`.
    pub async fn connect(address: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// `GET path`: the status and the body.
    pub async fn get(&mut self, path: &str) -> io::Result<(u16, String)> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server closed the connection instead of answering GET {path}"),
            ));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("not a status line: {line:?}")))?;
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let length = length.ok_or_else(|| invalid("no content-length".to_owned()))?;
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        let body = String::from_utf8(body).map_err(|error| invalid(error.to_string()))?;
        Ok((status, body))
    }
}

/// What [`load`] saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each request's time from sending to the whole response (but for
    /// `/slow`, which waits on purpose).
    pub latencies: Vec<Duration>,
    /// Responses by handler version (1 and 2).
    pub by_version: [u64; 2],
    /// The request numbers the handlers gave out (from the state).
    pub numbers: Vec<u64>,
    /// Every request that failed or was answered wrongly, and why.
    pub failures: Vec<String>,
}

impl Outcome {
    /// Requests answered.
    pub fn answered(&self) -> u64 {
        self.by_version[0] + self.by_version[1]
    }

    /// The latency below which `percent` % of requests were answered.
    pub fn percentile(&self, percent: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * percent / 100.0).ceil() as usize).saturating_sub(1);
        sorted.get(index).copied().unwrap_or_default()
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.by_version[0] += other.by_version[0];
        self.by_version[1] += other.by_version[1];
        self.numbers.extend(other.numbers);
        self.failures.extend(other.failures);
    }
}

/// Checks a response to `GET path` against the version that says it
/// answered: that version (0 for v1, 1 for v2) and the request's number,
/// or what is wrong.
fn check(path: &str, status: u16, body: &str) -> Result<(usize, u64), String> {
    let unknown = || format!("{status} {body:?} is from no known version");
    let (tag, rest) = body.split_once(" #").ok_or_else(unknown)?;
    let version = match tag {
        "v1" => 0,
        "v2" => 1,
        _ => return Err(unknown()),
    };
    let (number, text) = rest.split_once(": ").ok_or_else(unknown)?;
    let number = number.parse().map_err(|_| unknown())?;
    let expected = match path {
        "/" => (200, "hello".to_owned()),
        "/slow" => (200, "slow".to_owned()),
        _ => match path.strip_prefix("/echo/") {
            Some(word) if version == 0 => (200, word.to_owned()),
            Some(word) => (200, word.to_uppercase()),
            None => (404, format!("no route for {path}")),
        },
    };
    if (status, text) == (expected.0, expected.1.as_str()) {
        Ok((version, number))
    } else {
        Err(format!(
            "{status} {body:?}, expected {expected:?} from v{}",
            version + 1
        ))
    }
}

/// Drives the server at `address` from `clients` keep-alive connections
/// for `duration`, and checks every response against the version that
/// says it answered.
pub async fn load(address: SocketAddr, clients: usize, duration: Duration) -> Outcome {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|id| {
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                let mut client = match Client::connect(address).await {
                    Ok(client) => client,
                    Err(error) => {
                        outcome
                            .failures
                            .push(format!("client {id}: connect: {error}"));
                        return outcome;
                    }
                };
                for request in 0_u64.. {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let path = match request % 4 {
                        0 => "/".to_owned(),
                        1 => format!("/echo/c{id}r{request}"),
                        2 => "/slow".to_owned(),
                        _ => "/missing".to_owned(),
                    };
                    let sent = Instant::now();
                    match client.get(&path).await {
                        Ok((status, body)) => {
                            // `/slow` waits 2 ms on purpose: not a latency.
                            if path != "/slow" {
                                outcome.latencies.push(sent.elapsed());
                            }
                            match check(&path, status, &body) {
                                Ok((version, number)) => {
                                    outcome.by_version[version] += 1;
                                    outcome.numbers.push(number);
                                }
                                Err(problem) => {
                                    outcome.failures.push(format!("GET {path}: {problem}"))
                                }
                            }
                        }
                        Err(error) => {
                            outcome.failures.push(format!("GET {path}: {error}"));
                            return outcome;
                        }
                    }
                }
                outcome
            })
        })
        .collect();
    let mut total = Outcome::default();
    for task in tasks {
        match task.await {
            Ok(outcome) => total.merge(outcome),
            Err(error) => total
                .failures
                .push(format!("a client task failed: {error}")),
        }
    }
    total
}

/// A version of the handler module's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `examples/http-handlers/src/lib.rs`, what the host is compiled against.
    V1,
    /// `examples/http-handlers/next/lib.rs`: `v2` responses, upper-case
    /// echoes, a new state field.
    V2,
}

/// Builds `version` of the handler module with cargo and installs the
/// library at `destination` atomically (written beside it, then renamed
/// over it). The build runs in a scratch crate under `target/hotswap-http`,
/// into `target/hotswap-modules`. Calls in one process take turns.
pub fn build_handlers(
    version: Version,
    destination: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let root = hotswap_scratch::workspace_root();
    let source = root.join("examples/http-handlers").join(match version {
        Version::V1 => "src/lib.rs",
        Version::V2 => "next/lib.rs",
    });
    let built = ScratchCrate::new(
        root.join("target/hotswap-http/http-handlers"),
        "http-handlers",
    )
    .source(std::fs::read_to_string(source)?)
    // A fraction of the size: quicker to copy and load on each swap.
    .manifest_extra("\n[profile.dev.package.http-handlers]\nstrip = \"debuginfo\"\n")
    .build(&root.join("target/hotswap-modules"))?;
    hotswap_scratch::install(&built, destination)?;
    Ok(())
}

/// Swaps the handler module every `period`, between two builds, from a
/// thread of its own, until [`Swapper::stop`].
#[derive(Debug)]
pub struct Swapper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, String>>,
}

impl Swapper {
    /// Starts swapping: writes `builds[1]`, `builds[0]`, `builds[1]`, ...
    /// over `library` (atomically) and reloads `hot` after each.
    pub fn start(
        hot: Arc<Hot>,
        library: &Path,
        builds: [&Path; 2],
        period: Duration,
    ) -> io::Result<Self> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bytes = [std::fs::read(builds[0])?, std::fs::read(builds[1])?];
        let library = library.to_owned();
        let thread = std::thread::Builder::new()
            .name("http-swapper".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let mut swaps = 0_u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let next = library.with_extension("next");
                        let write = || -> io::Result<()> {
                            std::fs::write(&next, &bytes[usize::from(swaps.is_multiple_of(2))])?;
                            std::fs::rename(&next, &library)
                        };
                        write().map_err(|error| format!("install build {}: {error}", swaps + 1))?;
                        hot.reload()
                            .map_err(|error| format!("swap {}: {error}", swaps + 1))?;
                        swaps += 1;
                        std::thread::sleep(period);
                    }
                    Ok(swaps)
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops swapping; how many swaps succeeded, or the first that failed.
    pub fn stop(self) -> Result<u64, String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| "the swapper panicked".to_owned())?
    }
}
