//! A future that crosses the boundary: what an exported `async fn` returns
//! to the host, and what the host's runtime services return to a module.
//!
//! [`FfiFuture`] is a boxed future behind two `extern "C"` functions (poll,
//! drop) of the image that made it. Its poll catches a panic and reports
//! the message as text. Wakers cross as [`FfiWaker`]s, and *unwrap*
//! instead of nesting: each image compiles this file and has its own copy
//! of the vtables below, so comparing a vtable's address tells a waker this
//! image made from a foreign one. A waker that only wraps a foreign
//! `FfiWaker` is handed back as that original when this image polls a
//! foreign future: host → module → host gives the host's own future (a
//! timer) the host's own waker, so nothing the host keeps points into
//! module code. (Async calls across FFI usually nest a wrapper per
//! crossing; a host timer then keeps a waker whose vtable is in the module,
//! which crashes once the module is unloaded.)

use std::ffi::c_void;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use abi_stable::std_types::RString;

use crate::abi::WakerHold;
use crate::export::take_panic_message;

/// The functions of an [`FfiWaker`], in the image that made it.
#[repr(C)]
pub struct FfiWakerVTable {
    /// Returns an owned copy.
    pub clone: unsafe extern "C" fn(*const FfiWaker) -> *const FfiWaker,
    /// Wakes and consumes an owned waker.
    pub wake: unsafe extern "C" fn(*const FfiWaker),
    /// Wakes without consuming.
    pub wake_by_ref: unsafe extern "C" fn(*const FfiWaker),
    /// Drops an owned waker.
    pub drop: unsafe extern "C" fn(*const FfiWaker),
}

/// The C-visible head of a waker; what follows depends on its maker.
#[repr(C)]
pub struct FfiWaker {
    /// Its maker's functions.
    pub vtable: &'static FfiWakerVTable,
    /// How a hold on it is counted, when its maker is a module version
    /// (null for the host's): another image that keeps a clone counts it,
    /// so the version is not unloaded while the clone can still run its
    /// code.
    pub hold: *const WakerHold,
}

/// This image's hold counting: a module version's, once the host
/// installed its hooks; none in the host.
fn own_hold() -> *const WakerHold {
    crate::interpose::installed().map_or(std::ptr::null(), |hooks| &raw const hooks.waker_hold)
}

/// A waker lent for one poll.
#[repr(C)]
struct Borrowed<'a> {
    head: FfiWaker,
    waker: &'a Waker,
}

/// A waker owned across the boundary.
#[repr(C)]
struct Owned {
    head: FfiWaker,
    waker: Waker,
}

/// A waker function must not unwind into the other image; a waker that
/// panics has broken its runtime anyway.
fn abort_on_unwind<R>(body: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| std::process::abort())
}

fn clone_to_owned(waker: &Waker) -> *const FfiWaker {
    let owned = Box::new(Owned {
        head: FfiWaker {
            vtable: &OWNED_VTABLE,
            hold: own_hold(),
        },
        waker: waker.clone(),
    });
    Box::into_raw(owned).cast()
}

unsafe extern "C" fn borrowed_clone(waker: *const FfiWaker) -> *const FfiWaker {
    // SAFETY: `waker` is a `Borrowed` of this image (its vtable says so),
    // alive for the poll that lent it.
    abort_on_unwind(|| clone_to_owned(unsafe { (*waker.cast::<Borrowed<'_>>()).waker }))
}

unsafe extern "C" fn borrowed_wake_by_ref(waker: *const FfiWaker) {
    // SAFETY: as in `borrowed_clone`.
    abort_on_unwind(|| unsafe { (*waker.cast::<Borrowed<'_>>()).waker }.wake_by_ref())
}

unsafe extern "C" fn not_owned(_: *const FfiWaker) {
    // Consuming a lent waker is a bug of the other image's glue.
    std::process::abort()
}

static BORROWED_VTABLE: FfiWakerVTable = FfiWakerVTable {
    clone: borrowed_clone,
    wake: not_owned,
    wake_by_ref: borrowed_wake_by_ref,
    drop: not_owned,
};

unsafe extern "C" fn owned_clone(waker: *const FfiWaker) -> *const FfiWaker {
    // SAFETY: `waker` is an `Owned` of this image, alive until consumed.
    abort_on_unwind(|| clone_to_owned(unsafe { &(*waker.cast::<Owned>()).waker }))
}

unsafe extern "C" fn owned_wake(waker: *const FfiWaker) {
    abort_on_unwind(|| {
        // SAFETY: an `Owned` of this image, consumed here.
        let owned = unsafe { Box::from_raw(waker.cast_mut().cast::<Owned>()) };
        owned.waker.wake();
    })
}

unsafe extern "C" fn owned_wake_by_ref(waker: *const FfiWaker) {
    // SAFETY: an `Owned` of this image, alive until consumed.
    abort_on_unwind(|| unsafe { &(*waker.cast::<Owned>()).waker }.wake_by_ref())
}

unsafe extern "C" fn owned_drop(waker: *const FfiWaker) {
    // SAFETY: an `Owned` of this image, consumed here.
    abort_on_unwind(|| drop(unsafe { Box::from_raw(waker.cast_mut().cast::<Owned>()) }))
}

static OWNED_VTABLE: FfiWakerVTable = FfiWakerVTable {
    clone: owned_clone,
    wake: owned_wake,
    wake_by_ref: owned_wake_by_ref,
    drop: owned_drop,
};

// A Rust waker of this image around a foreign, owned `FfiWaker`, counted
// with its maker's hold (if it has one) from the clone that made it until
// its maker's code that wakes or drops it has returned.
unsafe fn foreign_clone(data: *const ()) -> RawWaker {
    let waker = data.cast::<FfiWaker>();
    // SAFETY: `data` is an owned (or, for the lent wrapper, a lent) foreign
    // waker; cloning gives an owned one. Its maker is loaded: the waker
    // cloned is counted, or lent during a poll of the maker's future.
    let cloned = unsafe { ((*waker).vtable.clone)(waker) };
    // SAFETY: the clone's head, made by its maker just now.
    unsafe { hold_acquire((*cloned).hold) };
    RawWaker::new(cloned.cast(), &FOREIGN_VTABLE)
}

unsafe fn foreign_wake(data: *const ()) {
    let waker = data.cast::<FfiWaker>();
    // SAFETY: an owned foreign waker, counted; read before it is consumed.
    let hold = unsafe { (*waker).hold };
    // SAFETY: consumed here.
    unsafe { ((*waker).vtable.wake)(waker) };
    // SAFETY: the count this clone took, given back after its code ran.
    unsafe { hold_release(hold) };
}

unsafe fn foreign_wake_by_ref(data: *const ()) {
    let waker = data.cast::<FfiWaker>();
    // SAFETY: a foreign waker, alive and counted.
    unsafe { ((*waker).vtable.wake_by_ref)(waker) }
}

unsafe fn foreign_drop(data: *const ()) {
    let waker = data.cast::<FfiWaker>();
    // SAFETY: as in `foreign_wake`.
    let hold = unsafe { (*waker).hold };
    // SAFETY: consumed here.
    unsafe { ((*waker).vtable.drop)(waker) };
    // SAFETY: as in `foreign_wake`.
    unsafe { hold_release(hold) };
}

/// Counts one more held waker of `hold`'s version.
///
/// # Safety
/// `hold` is null or a module version's, whose tracker is alive.
unsafe fn hold_acquire(hold: *const WakerHold) {
    // SAFETY: null, or the host's `WakerHold` (the caller's contract).
    if let Some(hold) = unsafe { hold.as_ref() } {
        // SAFETY: the host's function for its own tracker.
        unsafe { (hold.acquire)(hold.ctx) }
    }
}

/// Counts one fewer; the version may unload from here on.
///
/// # Safety
/// As [`hold_acquire`], and matching one of its calls.
unsafe fn hold_release(hold: *const WakerHold) {
    // SAFETY: null, or the host's `WakerHold` (the caller's contract).
    if let Some(hold) = unsafe { hold.as_ref() } {
        // SAFETY: as above; host code, which stays loaded.
        unsafe { (hold.release)(hold.ctx) }
    }
}

static FOREIGN_VTABLE: RawWakerVTable = RawWakerVTable::new(
    foreign_clone,
    foreign_wake,
    foreign_wake_by_ref,
    foreign_drop,
);

/// Runs `body` with a `Waker` for the `FfiWaker` a poll was given: this
/// image's own waker if it made it, else a wrapper that is only ever
/// borrowed (never woken by value or dropped: `ManuallyDrop`).
///
/// # Safety
/// `waker` is a live `FfiWaker` lent for the length of the call.
unsafe fn with_incoming<R>(waker: *const FfiWaker, body: impl FnOnce(&Waker) -> R) -> R {
    // SAFETY: the caller's contract.
    let vtable: *const FfiWakerVTable = unsafe { (*waker).vtable };
    if std::ptr::eq(vtable, &BORROWED_VTABLE) {
        // SAFETY: made by this image as a `Borrowed`.
        body(unsafe { (*waker.cast::<Borrowed<'_>>()).waker })
    } else if std::ptr::eq(vtable, &OWNED_VTABLE) {
        // SAFETY: made by this image as an `Owned`.
        body(unsafe { &(*waker.cast::<Owned>()).waker })
    } else {
        // SAFETY: the wrapper only borrows `waker` (it is never dropped or
        // woken by value); clones made of it are owned foreign wakers.
        let wrapper = ManuallyDrop::new(unsafe {
            Waker::from_raw(RawWaker::new(waker.cast(), &FOREIGN_VTABLE))
        });
        body(&wrapper)
    }
}

/// Runs `body` with an `FfiWaker` for `waker`: the foreign original if
/// `waker` only wraps one, else `waker` lent for the call.
fn with_outgoing<R>(waker: &Waker, body: impl FnOnce(*const FfiWaker) -> R) -> R {
    if std::ptr::eq(waker.vtable(), &FOREIGN_VTABLE) {
        body(waker.data().cast())
    } else {
        let lent = Borrowed {
            head: FfiWaker {
                vtable: &BORROWED_VTABLE,
                hold: own_hold(),
            },
            waker,
        };
        body(std::ptr::from_ref(&lent).cast())
    }
}

/// What a poll of an [`FfiFuture`] came to.
#[repr(C, u8)]
pub enum FfiPoll<T> {
    /// The output.
    Ready(T),
    /// Not yet.
    Pending,
    /// The future panicked; its message.
    Panicked(RString),
}

/// A boxed future of one image, polled and dropped through that image's
/// functions (see the module docs).
#[repr(C)]
pub struct FfiFuture<T> {
    future: *mut c_void,
    poll: unsafe extern "C" fn(*mut c_void, *const FfiWaker) -> FfiPoll<T>,
    drop: unsafe extern "C" fn(*mut c_void),
    _output: PhantomData<fn() -> T>,
}

// SAFETY: only made from `Send` futures (`FfiFuture::new`), and `T` is
// sent with it.
unsafe impl<T: Send> Send for FfiFuture<T> {}

impl<T> FfiFuture<T> {
    /// Boxes `future` in this image.
    pub fn new<F: Future<Output = T> + Send + 'static>(future: F) -> Self {
        unsafe extern "C" fn poll<F: Future>(
            future: *mut c_void,
            waker: *const FfiWaker,
        ) -> FfiPoll<F::Output> {
            let polled = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `future` is the box `new` made, never moved out
                // of (pinned by living on the heap), polled by one thread
                // at a time (`&mut` through `FfiFuture::poll`); `waker` is
                // lent for this call.
                unsafe {
                    with_incoming(waker, |waker| {
                        Pin::new_unchecked(&mut *future.cast::<F>())
                            .poll(&mut Context::from_waker(waker))
                    })
                }
            }));
            match polled {
                Ok(Poll::Ready(value)) => FfiPoll::Ready(value),
                Ok(Poll::Pending) => FfiPoll::Pending,
                Err(payload) => FfiPoll::Panicked(RString::from(take_panic_message(payload))),
            }
        }
        unsafe extern "C" fn drop<F>(future: *mut c_void) {
            // SAFETY: the box `new` made, dropped once (`FfiFuture::drop`).
            // A panic while dropping cannot be reported: abort.
            abort_on_unwind(|| std::mem::drop(unsafe { Box::from_raw(future.cast::<F>()) }));
        }
        Self {
            future: Box::into_raw(Box::new(future)).cast(),
            poll: poll::<F>,
            drop: drop::<F>,
            _output: PhantomData,
        }
    }

    /// Polls it once; a panic of the future comes back as its message.
    pub fn poll_ffi(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, String>> {
        let polled = with_outgoing(cx.waker(), |waker| {
            // SAFETY: the maker's poll, with its own future and a waker
            // lent for the call; `&mut self` makes polls exclusive.
            unsafe { (self.poll)(self.future, waker) }
        });
        match polled {
            FfiPoll::Ready(value) => Poll::Ready(Ok(value)),
            FfiPoll::Pending => Poll::Pending,
            // Converted here, while the maker is loaded.
            FfiPoll::Panicked(message) => Poll::Ready(Err(message.into_string())),
        }
    }
}

impl<T> Future for FfiFuture<T> {
    type Output = T;

    /// A panic of the future is resumed here, with its message.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.poll_ffi(cx) {
            Poll::Ready(Ok(value)) => Poll::Ready(value),
            Poll::Ready(Err(message)) => std::panic::panic_any(message),
            Poll::Pending => Poll::Pending,
        }
    }
}

// `FfiFuture` is `Unpin`: the future it owns is boxed by its maker.
impl<T> Unpin for FfiFuture<T> {}

impl<T> Drop for FfiFuture<T> {
    fn drop(&mut self) {
        // SAFETY: the maker's drop, once, of its own box.
        unsafe { (self.drop)(self.future) }
    }
}

/// An `async fn` call in flight: the callee's future and a hold `L` on the
/// version it runs on, kept until the future completes or is dropped (the
/// host's async methods hold an `Arc` of the version, a module's
/// `HotLink` a host [`Lease`](crate::abi::Lease)).
///
/// Polled, it polls the callee's future (a panic in it is resumed here,
/// with the callee's message); ready, it converts the output with `C`
/// while the version is still held, and drops the callee's future.
/// Dropped before that (cancelled), it drops the callee's future, then
/// lets the version go.
pub struct LeasedCall<T, C, L> {
    // First: the callee's future drops before its version may unload.
    future: Option<FfiFuture<T>>,
    convert: Option<C>,
    _lease: L,
}

impl<T, C, L> LeasedCall<T, C, L> {
    /// `future`, made by the version `lease` holds.
    pub fn new(future: FfiFuture<T>, convert: C, lease: L) -> Self {
        Self {
            future: Some(future),
            convert: Some(convert),
            _lease: lease,
        }
    }
}

impl<T, R, C: FnOnce(T) -> R + Unpin, L: Unpin> Future for LeasedCall<T, C, L> {
    type Output = R;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let this = self.get_mut();
        let future = this
            .future
            .as_mut()
            .expect("an async call polled after it completed");
        let outcome = match future.poll_ffi(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        let outcome = outcome.map(|value| {
            let convert = this.convert.take().expect("converted once");
            convert(value)
        });
        // The callee's future is done: dropped now, while it is held.
        this.future = None;
        match outcome {
            Ok(value) => Poll::Ready(value),
            Err(message) => std::panic::panic_any(message),
        }
    }
}

/// The marker an `async fn`'s layout starts with: a host compiled for an
/// `async fn` never calls a function that returns its value directly, nor
/// the other way round.
#[repr(C)]
#[derive(abi_stable::StableAbi)]
pub struct AsyncReturn;
