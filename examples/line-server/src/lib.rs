//! A line-protocol server on loopback and its client, shared by the
//! examples whose request handling is hot modules (`examples/service`,
//! `examples/shop`): the server owns the sockets and threads, the handler
//! owns every reply.
//!
//! [`Server`] accepts connections on `127.0.0.1` and serves each on its own
//! thread, one reply line per request line. [`Client`] speaks the protocol
//! over one persistent connection.

#![warn(missing_docs)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Answers one request line: the reply, and whether to keep the connection
/// open.
pub trait Handler: Send + Sync + 'static {
    /// The reply to `line`, and whether to keep the connection open.
    fn handle(&self, line: &str) -> (String, bool);
}

impl<F: Fn(&str) -> (String, bool) + Send + Sync + 'static> Handler for F {
    fn handle(&self, line: &str) -> (String, bool) {
        self(line)
    }
}

/// Serves the line protocol on an ephemeral loopback port until dropped.
///
/// Every request line is passed to the handler and its reply written back
/// as one line. A panic in the handler (a hot module's panic is resumed in
/// its caller) becomes an `error: ...` reply, and the connection stays
/// open. A line that is not UTF-8, or a reply that does not say to keep the
/// connection open, ends the connection.
#[derive(Debug)]
pub struct Server {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and starts accepting connections, each served
    /// on its own thread by `handler`.
    pub fn start(handler: impl Handler) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let acceptor = thread::Builder::new().name("line-accept".into()).spawn({
            let stopping = stopping.clone();
            move || accept(&listener, &handler, &stopping)
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

fn accept(listener: &TcpListener, handler: &Arc<dyn Handler>, stopping: &AtomicBool) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else {
            // Out of descriptors or similar: back off instead of spinning.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let handler = handler.clone();
        // If no thread can be started, dropping the stream refuses the client.
        let _ = thread::Builder::new()
            .name("line-connection".into())
            .spawn(move || serve(&*handler, &stream));
    }
}

/// Serves one connection until the client closes it, a reply ends it, or
/// it fails (nobody is left to tell: the client sees it closed).
fn serve(handler: &dyn Handler, stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream;
    for line in BufReader::new(stream).lines() {
        let (reply, keep_open) = answer(handler, &line?);
        writer.write_all(format!("{reply}\n").as_bytes())?;
        if !keep_open {
            break;
        }
    }
    Ok(())
}

/// The handler's reply, or an `error: ...` reply if it panicked.
fn answer(handler: &dyn Handler, line: &str) -> (String, bool) {
    panic::catch_unwind(AssertUnwindSafe(|| handler.handle(line))).unwrap_or_else(|panic| {
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

    /// Sends each of `requests` and prints it and its reply (a reply's
    /// ` | `-separated parts one per line), as the demos show a session.
    pub fn talk(&mut self, requests: &[&str]) -> io::Result<()> {
        for request in requests {
            println!("  > {request}");
            for part in self.request(request)?.split(" | ") {
                println!("  < {part}");
            }
        }
        Ok(())
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
