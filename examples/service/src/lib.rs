//! A small line-protocol service on loopback whose request handling is a hot
//! module (`examples/service-module`): the server owns the sockets and
//! threads, the module owns every reply and the state behind them (a
//! request count and a key-value cache), and a new build of the module is
//! swapped in while connections stay open.
//!
//! [`Server`] accepts connections on `127.0.0.1` and serves each on its own
//! thread, one reply line per request line. [`Client`] speaks the protocol
//! over one persistent connection. [`build_handler`] builds either version
//! of the module from source and installs it where a [`Hot`] watches.

#![warn(missing_docs)]

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use hotswap_scratch::ScratchCrate;

/// The handler module as the host sees it: open its library with
/// `Hot::open`, share it with the [`Server`].
pub use service_handler::service::Hot;

/// Serves the line protocol on an ephemeral loopback port until dropped.
///
/// Every request line is passed to the handler version serving at that
/// moment (`hot.get().handle(line)`) and its reply written back as one line.
/// A panic in the handler becomes an `error: ...` reply; the connection and
/// the handler's state stay usable. A line that is not UTF-8, or a reply
/// that does not say to keep the connection open (`quit`), ends the
/// connection.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and starts accepting connections, each served
    /// on its own thread by `hot`.
    pub fn start(hot: Arc<Hot>) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let acceptor = thread::Builder::new()
            .name("service-accept".into())
            .spawn({
                let stopping = stopping.clone();
                move || accept(&listener, &hot, &stopping)
            })?;
        Ok(Self {
            address,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    /// Stops accepting. Connections already open are served until their
    /// clients close them.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // A connection wakes the blocked `accept`, which then sees the flag.
        if TcpStream::connect(self.address).is_ok()
            && let Some(acceptor) = self.acceptor.take()
        {
            let _ = acceptor.join();
        }
    }
}

fn accept(listener: &TcpListener, hot: &Arc<Hot>, stopping: &AtomicBool) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors or similar: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let hot = hot.clone();
        // If no thread can be started, dropping the stream refuses the client.
        let _ = thread::Builder::new()
            .name("service-connection".into())
            .spawn(move || serve(&hot, &stream));
    }
}

/// Serves one connection until the client closes it, a reply ends it, or
/// it fails (nobody is left to tell: the client sees it closed).
fn serve(hot: &Hot, stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream;
    for line in BufReader::new(stream).lines() {
        let (reply, keep_open) = handle(hot, &line?);
        writer.write_all(format!("{reply}\n").as_bytes())?;
        if !keep_open {
            break;
        }
    }
    Ok(())
}

/// Passes one request to the serving handler version.
fn handle(hot: &Hot, line: &str) -> (String, bool) {
    // The runtime keeps the module and its state usable after a panic.
    panic::catch_unwind(AssertUnwindSafe(|| hot.get().handle(line))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        (format!("error: the handler panicked: {message}"), true)
    })
}

/// One persistent connection to a [`Server`], one request at a time.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to the server at `address`.
    pub fn connect(address: SocketAddr) -> io::Result<Self> {
        let writer = TcpStream::connect(address)?;
        writer.set_nodelay(true)?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// Sends `line` as one request and returns its reply, without the line
    /// end.
    pub fn request(&mut self, line: &str) -> io::Result<String> {
        if line.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a request is one line",
            ));
        }
        self.writer.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        self.reader.read_line(&mut reply)?;
        match reply.strip_suffix('\n') {
            Some(reply) => Ok(reply.to_owned()),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the server closed the connection instead of replying to {line:?}"),
            )),
        }
    }

    /// Closes the sending half and returns what the server sends until it
    /// closes the connection: nothing, if every request got exactly one
    /// reply.
    pub fn finish(mut self) -> io::Result<String> {
        self.writer.shutdown(Shutdown::Write)?;
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest)?;
        Ok(rest)
    }
}

/// A version of the handler module's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `examples/service-module/src/lib.rs`, what the host is compiled against.
    V1,
    /// `examples/service-module/next/lib.rs`: new reply tag, a new request,
    /// a new state field.
    V2,
}

/// Builds `version` of the handler module with cargo and installs the
/// library at `destination` atomically (written beside it, then renamed
/// over it), the way a [`Hot`] watching that path expects a new build.
///
/// The build runs in a scratch copy of `examples/service-module` (under
/// `target/hotswap-service`) with the chosen source as its `src/lib.rs`,
/// into `target/hotswap-modules`, whose dependency builds it shares with
/// the test suite's module builds. Calls in one process take turns.
pub fn build_handler(
    version: Version,
    destination: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let root = hotswap_scratch::workspace_root();
    let source = root.join("examples/service-module").join(match version {
        Version::V1 => "src/lib.rs",
        Version::V2 => "next/lib.rs",
    });
    let built = ScratchCrate::new(
        root.join("target/hotswap-service/service-handler"),
        "service-handler",
    )
    .source(std::fs::read_to_string(source)?)
    // A tenth of the size: quicker to copy, hash and load on each swap.
    .manifest_extra("\n[profile.dev.package.service-handler]\nstrip = \"debuginfo\"\n")
    .build(&root.join("target/hotswap-modules"))?;
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = destination.with_extension("partial");
    std::fs::copy(built, &partial)?;
    std::fs::rename(partial, destination)?;
    Ok(())
}
