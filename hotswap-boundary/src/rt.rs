//! The host's async runtime, from module code: timers, tasks and TCP.
//!
//! A module library has its own copy of every crate it links, tokio
//! included, with its own thread-local runtime context, which no host
//! runtime ever enters: tokio's timers and `spawn` called from module code
//! fail with "there is no reactor running". These run on the host's
//! runtime instead, through hooks the host installs into each version: a
//! [`sleep`] is the host's timer, polled through an [`FfiFuture`] whose
//! waker is the host's own (see `future`), and a task [`spawn`]ed here is
//! the host's task, tied to the version that spawned it.
//!
//! Everything else of `async` that needs no runtime (`async` blocks,
//! `futures` combinators, channels that only use wakers) works as it is.

use std::future::Future;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use abi_stable::std_types::RString;

use crate::future::FfiFuture;
use crate::interpose;

#[cold]
#[inline(never)]
fn not_loaded() -> ! {
    panic!(
        "hotswap: the async runtime was used from code that no hotswap host loaded (`rt::sleep` and `rt::spawn` run on the host's runtime, inside a module library a `Hot` opened)"
    )
}

/// A future that is ready after `duration`, on the host's runtime.
///
/// # Panics
/// Outside a module library a hotswap host loaded; and, when polled, if the
/// host was not polling inside its async runtime (or was built without
/// one).
pub fn sleep(duration: Duration) -> FfiFuture<()> {
    let Some(hooks) = interpose::installed() else {
        not_loaded();
    };
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: the host's hook with its own context.
    unsafe { (hooks.sleep)(hooks.ctx, nanos) }
}

/// Runs `task` on the host's runtime, as a task of this version: it is
/// cancelled (dropped where it last waited) when the version retires, and
/// the version is unloaded only once the task is gone.
///
/// # Panics
/// Outside a module library a hotswap host loaded, or if the host has no
/// async runtime to run it on (the message says which).
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    let Some(hooks) = interpose::installed() else {
        not_loaded();
    };
    let mut message = MaybeUninit::<RString>::uninit();
    // SAFETY: the host's hook with its own context; `message` is writable.
    let spawned = unsafe { (hooks.spawn)(hooks.ctx, FfiFuture::new(task), message.as_mut_ptr()) };
    if !spawned {
        // SAFETY: not spawned means the host wrote the message.
        let message = unsafe { message.assume_init() };
        panic!("hotswap: cannot spawn a task: {message}");
    }
}

/// Yields to the runtime once: ready on the second poll. Needs no host.
pub fn yield_now() -> impl Future<Output = ()> + Send {
    struct YieldNow(bool);
    impl Future for YieldNow {
        type Output = ();
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            Waker::wake_by_ref(cx.waker());
            Poll::Pending
        }
    }
    YieldNow(false)
}

/// A TCP connection of the host's runtime, for module code: tokio's own
/// `TcpStream` needs a reactor, which a module's copy of tokio never has.
///
/// Each read and write is a future of the host's runtime; the data is
/// copied across, so nothing the host keeps points into the module.
/// Dropping the stream closes it.
pub struct TcpStream {
    handle: crate::abi::TcpHandle,
    hooks: &'static crate::abi::ThreadHooks,
}

// SAFETY: the handle is the host's `Send + Sync` stream (locked per
// operation), usable from any thread.
unsafe impl Send for TcpStream {}
// SAFETY: as above.
unsafe impl Sync for TcpStream {}

fn io_error(message: RString) -> std::io::Error {
    std::io::Error::other(message.into_string())
}

impl TcpStream {
    /// Connects to `address` (`host:port`).
    pub async fn connect(address: &str) -> std::io::Result<Self> {
        let Some(hooks) = interpose::installed() else {
            not_loaded();
        };
        // SAFETY: the host's hook with its own context; it copies
        // `address` before returning.
        let connecting = unsafe { (hooks.tcp_connect)(hooks.ctx, address.into()) };
        let handle = connecting.await.into_result().map_err(io_error)?;
        Ok(Self { handle, hooks })
    }

    /// Reads up to `max` bytes; an empty vector at the end of the stream.
    pub async fn read(&mut self, max: usize) -> std::io::Result<Vec<u8>> {
        // SAFETY: a live handle of this stream (`&mut self`: one operation
        // at a time).
        let reading = unsafe { (self.hooks.tcp_read)(self.handle, max) };
        let data = reading.await.into_result().map_err(io_error)?;
        // Copied out while the host's vector is at hand.
        Ok(data.as_slice().to_vec())
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        // SAFETY: as in `read`; the host copies `data` before returning.
        let writing = unsafe { (self.hooks.tcp_write)(self.handle, data.into()) };
        writing.await.into_result().map_err(io_error)
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // SAFETY: the handle, closed once.
        unsafe { (self.hooks.tcp_close)(self.handle) }
    }
}
