//! The host side of `hotswap_runtime::rt`: a module's timers, tasks and
//! TCP streams on the host's async runtime (tokio, feature `tokio`).
//!
//! Module code cannot use its own copy of tokio (no runtime is ever entered
//! in its image), so its [`sleep`](hotswap_boundary::rt::sleep) and
//! [`spawn`](hotswap_boundary::rt::spawn) come here, through the version's
//! hooks. The timer is made and polled in host code, inside the host's
//! runtime; the task runs on it as a task of the version ([`Tasks`]):
//! counted, cancelled when the version retires, and the version unloads
//! only once its tasks are gone (its futures' drops are module code).

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize;
#[cfg(feature = "tokio")]
use std::sync::atomic::Ordering;
use std::sync::Arc;
#[cfg(feature = "tokio")]
use std::sync::Mutex;

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use hotswap_boundary::abi::TcpHandle;
use hotswap_boundary::future::FfiFuture;

use crate::ffi::threads::Tracker;

/// The tasks one version spawned.
pub(crate) struct Tasks {
    /// The version's count of what can still run its code (its tracker's):
    /// one more per task, one less once the task's future (module code) has
    /// been dropped.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    live: Arc<AtomicUsize>,
    /// How to cancel the ones still running, and whether cancelling began:
    /// a task spawned after that (by a task's drop, say) is cancelled at
    /// once.
    #[cfg(feature = "tokio")]
    aborts: Mutex<Aborts>,
}

#[cfg(feature = "tokio")]
#[derive(Default)]
struct Aborts {
    handles: Vec<tokio::task::AbortHandle>,
    closed: bool,
}

/// Counts a task out when dropped, after the future it follows in its
/// task (fields drop in order).
#[cfg(feature = "tokio")]
struct LiveTask(Arc<AtomicUsize>);

#[cfg(feature = "tokio")]
impl Drop for LiveTask {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// At most this many bytes per read of a module's TCP stream (the module
/// asks for a size; the host allocates it).
#[cfg(feature = "tokio")]
const MAX_READ: usize = 64 << 10;

impl Tasks {
    /// The tasks of a version whose count of live code is `live`.
    pub(crate) fn new(live: Arc<AtomicUsize>) -> Self {
        Self {
            live,
            #[cfg(feature = "tokio")]
            aborts: Mutex::new(Aborts::default()),
        }
    }

    /// Cancels every task of the version, those spawned from now on
    /// included: each is dropped where it last waited, on the runtime's
    /// threads, and counted out then.
    pub(crate) fn cancel(&self) {
        #[cfg(feature = "tokio")]
        {
            let mut aborts = lock(&self.aborts);
            aborts.closed = true;
            for abort in aborts.handles.drain(..) {
                abort.abort();
            }
        }
    }

    #[cfg(feature = "tokio")]
    fn spawn(&self, task: FfiFuture<()>) -> Result<(), String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            format!("it was not called inside the host's tokio runtime ({error})")
        })?;
        if lock(&self.aborts).closed {
            // Spawned by a retired version (from a cancelled task's drop,
            // say): cancelled at once, here, where its drop can run.
            drop(task);
            return Ok(());
        }
        self.live.fetch_add(1, Ordering::AcqRel);
        let counted = LiveTask(self.live.clone());
        // Not under the lock: a runtime shutting down drops the future
        // here, and its drop (module code) may spawn again.
        let handle = runtime.spawn(async move {
            // Dropped here, before `counted`: the count goes down only
            // once the module's future is gone.
            task.await;
            drop(counted);
        });
        let mut aborts = lock(&self.aborts);
        if aborts.closed {
            // Cancelling began meanwhile: this one is cancelled too.
            handle.abort();
            return Ok(());
        }
        if aborts.handles.len() >= 64 && aborts.handles.len().is_power_of_two() {
            aborts.handles.retain(|abort| !abort.is_finished());
        }
        aborts.handles.push(handle.abort_handle());
        Ok(())
    }

    #[cfg(not(feature = "tokio"))]
    fn spawn(&self, task: FfiFuture<()>) -> Result<(), String> {
        drop(task);
        Err(NO_RUNTIME.to_owned())
    }
}

/// `ThreadHooks::sleep`: a timer of the host's runtime, made at its first
/// poll (in host code, on the runtime's thread).
pub(crate) unsafe extern "C" fn sleep_hook(_ctx: *const c_void, nanos: u64) -> FfiFuture<()> {
    let duration = std::time::Duration::from_nanos(nanos);
    FfiFuture::new(async move {
        #[cfg(feature = "tokio")]
        tokio::time::sleep(duration).await;
        #[cfg(not(feature = "tokio"))]
        panic!("hotswap: rt::sleep({duration:?}): {NO_RUNTIME}");
    })
}

/// `ThreadHooks::spawn`: runs `task` as a task of the version whose
/// tracker `ctx` is. Never unwinds into the module.
pub(crate) unsafe extern "C" fn spawn_hook(
    ctx: *const c_void,
    task: FfiFuture<()>,
    message: *mut RString,
) -> bool {
    // SAFETY: `ctx` is the tracker the hooks live in, alive as long as the
    // version's library is mapped (see `Tracker::hooks`).
    let tracker = unsafe { &*ctx.cast::<Tracker>() };
    let spawned = catch_unwind(AssertUnwindSafe(|| tracker.spawn(task)))
        .unwrap_or_else(|_| Err("the host panicked spawning it".to_owned()));
    match spawned {
        Ok(()) => true,
        Err(why) => {
            // SAFETY: the module passes a writable message slot.
            unsafe { message.write(RString::from(why)) };
            false
        }
    }
}

#[cfg(feature = "tokio")]
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Tracker {
    fn spawn(&self, task: FfiFuture<()>) -> Result<(), String> {
        self.tasks().spawn(task)
    }
}

/// A module's TCP stream: the host's, locked per operation (a module may
/// read and write from two tasks at once).
#[cfg(feature = "tokio")]
type Stream = Arc<tokio::sync::Mutex<tokio::net::TcpStream>>;

/// Why a module's async runtime call fails in a host built without one.
#[cfg(not(feature = "tokio"))]
const NO_RUNTIME: &str =
    "the host was built without an async runtime (feature `tokio` of hotswap-runtime)";

/// `ThreadHooks::tcp_connect`: connects on the host's runtime (at the
/// future's first poll, in host code).
pub(crate) unsafe extern "C" fn tcp_connect_hook(
    _ctx: *const c_void,
    address: RStr<'_>,
) -> FfiFuture<RResult<TcpHandle, RString>> {
    let address = address.as_str().to_owned();
    FfiFuture::new(async move {
        #[cfg(feature = "tokio")]
        {
            match tokio::net::TcpStream::connect(&address).await {
                Ok(stream) => {
                    let stream: Stream = Arc::new(tokio::sync::Mutex::new(stream));
                    RResult::ROk(TcpHandle(Box::into_raw(Box::new(stream)).cast_const().cast()))
                }
                Err(error) => RResult::RErr(RString::from(format!("connect to {address}: {error}"))),
            }
        }
        #[cfg(not(feature = "tokio"))]
        RResult::RErr(RString::from(format!("connect to {address}: {NO_RUNTIME}")))
    })
}

/// The stream behind a handle, for one more operation.
///
/// # Safety
/// `handle` came from `tcp_connect_hook` and was not closed.
#[cfg(feature = "tokio")]
unsafe fn stream(handle: TcpHandle) -> Stream {
    // SAFETY: the caller's contract: a live `Box<Stream>`.
    unsafe { (*handle.0.cast::<Stream>()).clone() }
}

/// `ThreadHooks::tcp_read`.
pub(crate) unsafe extern "C" fn tcp_read_hook(
    handle: TcpHandle,
    max: usize,
) -> FfiFuture<RResult<RVec<u8>, RString>> {
    #[cfg(feature = "tokio")]
    {
        use tokio::io::AsyncReadExt;
        // SAFETY: the module passes the live handle of its stream.
        let stream = unsafe { stream(handle) };
        FfiFuture::new(async move {
            let mut data = vec![0; max.min(MAX_READ)];
            match stream.lock().await.read(&mut data).await {
                Ok(read) => {
                    data.truncate(read);
                    RResult::ROk(RVec::from(data))
                }
                Err(error) => RResult::RErr(RString::from(format!("read: {error}"))),
            }
        })
    }
    #[cfg(not(feature = "tokio"))]
    {
        let _ = (handle, max);
        FfiFuture::new(async { RResult::RErr(RString::from(NO_RUNTIME)) })
    }
}

/// `ThreadHooks::tcp_write`.
pub(crate) unsafe extern "C" fn tcp_write_hook(
    handle: TcpHandle,
    data: RSlice<'_, u8>,
) -> FfiFuture<RResult<(), RString>> {
    // Copied now: the host keeps nothing of the module's.
    let data = data.as_slice().to_vec();
    #[cfg(feature = "tokio")]
    {
        use tokio::io::AsyncWriteExt;
        // SAFETY: the module passes the live handle of its stream.
        let stream = unsafe { stream(handle) };
        FfiFuture::new(async move {
            match stream.lock().await.write_all(&data).await {
                Ok(()) => RResult::ROk(()),
                Err(error) => RResult::RErr(RString::from(format!("write: {error}"))),
            }
        })
    }
    #[cfg(not(feature = "tokio"))]
    {
        let _ = (handle, data);
        FfiFuture::new(async { RResult::RErr(RString::from(NO_RUNTIME)) })
    }
}

/// `ThreadHooks::tcp_close`: drops the module's reference; the stream
/// closes once no read or write of it is in flight.
pub(crate) unsafe extern "C" fn tcp_close_hook(handle: TcpHandle) {
    #[cfg(feature = "tokio")]
    // SAFETY: the module closes each handle once, after its last use.
    drop(unsafe { Box::from_raw(handle.0.cast_mut().cast::<Stream>()) });
    #[cfg(not(feature = "tokio"))]
    let _ = handle;
}
