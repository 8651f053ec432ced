//! The module side of calls out of a module: into other hot modules (the
//! generated `HotLink` of each module) and into services of the host
//! ([`service`]).
//!
//! A module declares what it calls, `#[hot_module(uses(other::module),
//! services(Clock))]`; the declarations are part of its descriptor, so the
//! host resolves and checks them when it loads the module (by the same
//! layout checks as its own calls) and refuses a build that does not fit
//! before any of its code runs past the initializers. The host then hands
//! the library a [`HostLink`] (the descriptor's `link` entry), and every
//! call goes through it:
//!
//! - a call into another module asks the host to pin that module's serving
//!   version and lock its state, and the host calls back into this image
//!   (a [`Thunk`]) with the callee's entry point and state: this image
//!   calls the callee's shim itself, with the arguments typed as it was
//!   compiled, and converts the result while the callee is still pinned;
//! - a service is a value the host owns for as long as this library is
//!   mapped, borrowed through a guard that cannot leave the thread.

use std::any::TypeId;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use abi_stable::std_types::RString;
use abi_stable::StableAbi;

use crate::abi::{HostLink, Lease, ModuleDescriptor, PanicMessage, Thunk, STATUS_OK};
use crate::export::Export;
use crate::future::{FfiFuture, LeasedCall};
use crate::shim::ShimFn;

/// The host's link, once installed; null in the host binary itself and in
/// a library no host has linked.
static LINK: AtomicPtr<HostLink> = AtomicPtr::new(ptr::null_mut());

/// Installs the host's link (the descriptor's `link` entry).
///
/// # Safety
/// `link` stays valid for as long as this library is mapped.
pub unsafe extern "C" fn install(link: *const HostLink) {
    LINK.store(link.cast_mut(), Ordering::Release);
}

fn link() -> &'static HostLink {
    let link = LINK.load(Ordering::Acquire);
    if link.is_null() {
        not_linked();
    }
    // SAFETY: the host keeps the link alive as long as this library is
    // mapped (`install`'s contract), and this code is in the library.
    unsafe { &*link }
}

#[cold]
#[inline(never)]
fn not_linked() -> ! {
    panic!(
        "hotswap: another hot module or a host service was called from code that no hotswap host loaded (a `HotLink` or `service()` works inside a module library opened through a `Registry`, not in the host binary itself)"
    )
}

/// A `#[hot_module]` module that others can call: implemented by the macro
/// for the module's marker type.
///
/// # Safety
/// `DESCRIPTOR` is the module's own descriptor, whose function entries
/// describe the `Export` impls the module's `HotLink` calls with.
pub unsafe trait Linkable: 'static {
    /// The module's descriptor, in this image.
    const DESCRIPTOR: &'static ModuleDescriptor;
}

/// What crosses between [`call`] and [`thunk`]: the work to do inside the
/// host's call, and what it came to.
struct Env<F, R> {
    run: Option<F>,
    outcome: Option<std::thread::Result<R>>,
}

/// Runs the caller's work inside the host's call; never unwinds into the
/// host.
///
/// # Safety
/// `env` is the `Env<F, R>` of the [`call`] that passed this thunk.
unsafe extern "C" fn thunk<F, R>(env: *mut c_void, shim: *const c_void, state: *mut c_void)
where
    F: FnOnce(*const c_void, *mut c_void) -> R,
{
    // SAFETY: the caller's contract; `call` waits for the host, which runs
    // the thunk (at most once) before it returns.
    let env = unsafe { &mut *env.cast::<Env<F, R>>() };
    if let Some(run) = env.run.take() {
        env.outcome = Some(catch_unwind(AssertUnwindSafe(|| run(shim, state))));
    }
}

/// Calls function `index` of the module described by `callee` on its
/// serving version, with `args`, and converts what it returns with
/// `convert` while that version is still pinned. `HotLink`'s methods are
/// this.
///
/// # Panics
/// When the callee panics (with its message, as a call from the host
/// does), when the host cannot make the call (the callee's state is lost,
/// or the call re-enters a module this thread is inside a call of, which
/// would wait for itself), when this module did not declare the callee in
/// `uses(...)`, or outside a module library a hotswap host loaded.
pub fn call<E: Export, R>(
    callee: &'static ModuleDescriptor,
    index: usize,
    args: E::Args<'_>,
    convert: impl FnOnce(E::Ret) -> R,
) -> R {
    let (link, import) = import_of(callee, E::NAME);
    let run = move |shim: *const c_void, state: *mut c_void| -> Result<R, String> {
        // SAFETY: the host runs this inside its call, with the version
        // pinned and `state` locked as the function needs.
        unsafe { invoke::<E>(shim, state, args) }.map(convert)
    };
    let mut env = Env {
        run: Some(run),
        outcome: None,
    };
    let thunk = thunk_for(&env);
    let mut message = MaybeUninit::<RString>::uninit();
    // SAFETY: `link.call` is the host's; `env` outlives the call and is the
    // `Env` that `thunk` is instantiated for; `message` is writable.
    let status = unsafe {
        (link.call)(
            link.ctx,
            import,
            index,
            (&raw mut env).cast(),
            thunk,
            message.as_mut_ptr(),
        )
    };
    if status != STATUS_OK {
        // SAFETY: a failed status means the host wrote the message.
        refused(callee, E::NAME, unsafe { message.assume_init() });
    }
    outcome(env, E::NAME)
}

/// This image's link, and the index of `callee` among its imports.
fn import_of(callee: &'static ModuleDescriptor, function: &str) -> (&'static HostLink, usize) {
    let link = link();
    match link
        .imports
        .iter()
        .position(|declared| ptr::eq(*declared, callee))
    {
        Some(import) => (link, import),
        None => undeclared(callee, function),
    }
}

/// Calls `async fn` number `index` of the module described by `callee` on
/// its serving version: the returned future holds that version (a lease
/// from the host) until it completes or is dropped, and converts the
/// output with `convert` while it is held. `HotLink`'s async methods are
/// this.
///
/// # Panics
/// As [`call`], when the call cannot be made; when awaited, if the
/// callee's future panics.
pub fn call_async<E, T, R, C>(
    callee: &'static ModuleDescriptor,
    index: usize,
    args: E::Args<'_>,
    convert: C,
) -> LeasedCall<T, C, Lease>
where
    E: Export<Ret = FfiFuture<T>>,
    C: FnOnce(T) -> R,
{
    let (link, import) = import_of(callee, E::NAME);
    let run = move |shim: *const c_void, state: *mut c_void| -> Result<FfiFuture<T>, String> {
        // SAFETY: as in `call`; an `async fn` takes no state.
        unsafe { invoke::<E>(shim, state, args) }
    };
    let mut env = Env {
        run: Some(run),
        outcome: None,
    };
    let thunk = thunk_for(&env);
    let mut lease = MaybeUninit::<Lease>::uninit();
    let mut message = MaybeUninit::<RString>::uninit();
    // SAFETY: as in `call`; `lease` is writable.
    let status = unsafe {
        (link.call_async)(
            link.ctx,
            import,
            index,
            (&raw mut env).cast(),
            thunk,
            lease.as_mut_ptr(),
            message.as_mut_ptr(),
        )
    };
    if status != STATUS_OK {
        // SAFETY: a failed status means the host wrote the message (and
        // no lease).
        refused(callee, E::NAME, unsafe { message.assume_init() });
    }
    // SAFETY: success means the host wrote the lease; it is released when
    // dropped, after the future made on the version it holds.
    let lease = unsafe { lease.assume_init() };
    LeasedCall::new(outcome(env, E::NAME), convert, lease)
}

/// Calls the callee's entry point `shim` with `args`: what it returned, or
/// its panic's message.
///
/// # Safety
/// The host handed `shim` over for function `E` (the descriptor entry this
/// image was compiled against) on a version whose layouts it checked
/// against that entry, and keeps that version pinned, with `state` locked
/// as the function needs, for the length of this call.
unsafe fn invoke<E: Export>(
    shim: *const c_void,
    state: *mut c_void,
    args: E::Args<'_>,
) -> Result<E::Ret, String> {
    // SAFETY: the entry point has type `E::Fn` (the caller's contract); a
    // function pointer and an address have the same size.
    let shim: E::Fn<'_> = unsafe { std::mem::transmute_copy(&shim) };
    let mut message = PanicMessage::uninit();
    // SAFETY: the caller's contract.
    let returned = unsafe { shim.call(state, &mut message, args) };
    if returned.panicked {
        // SAFETY: `panicked` means the shim wrote the message.
        Err(unsafe { message.assume_init() }.into_string())
    } else {
        // SAFETY: no panic means the shim returned a value.
        Ok(unsafe { returned.value.assume_init() })
    }
}

/// What the caller's work inside the host's call came to: its value, or
/// the callee's panic resumed here with its message, as a panic of this
/// module (which its own boundary catches in turn).
fn outcome<F, R>(env: Env<F, Result<R, String>>, function: &str) -> R {
    match env.outcome {
        Some(Ok(Ok(value))) => value,
        Some(Ok(Err(message))) => std::panic::panic_any(message),
        Some(Err(payload)) => resume_unwind(payload),
        None => panic!("hotswap: the host did not run the call of `{function}`"),
    }
}

/// The host could not make a call: why, as a panic of the caller.
#[cold]
#[inline(never)]
fn refused(callee: &ModuleDescriptor, function: &str, message: RString) -> ! {
    panic!(
        "hotswap: cannot call `{function}` of `{}::{}`: {}",
        callee.crate_name,
        callee.module,
        message.as_str().trim_start_matches("hotswap: ")
    )
}

/// The [`thunk`] for `env`'s closure type, which has no name to write.
fn thunk_for<F, R>(_env: &Env<F, R>) -> Thunk
where
    F: FnOnce(*const c_void, *mut c_void) -> R,
{
    thunk::<F, R>
}

#[cold]
#[inline(never)]
fn undeclared(callee: &ModuleDescriptor, function: &str) -> ! {
    panic!(
        "hotswap: `{}::{}` called `{function}` of hot module `{}::{}` without declaring it: add its path to `#[hot_module(uses(...))]`, so the host checks and links it when this module loads",
        callee.crate_name, callee.module, callee.crate_name, callee.module
    )
}

/// What can be a host service: an FFI-safe type (its layout is checked
/// between host and module) that any thread may use.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a host service",
    label = "not an FFI-safe `Send + Sync` type",
    note = "a host service is an `abi_stable::StableAbi` type that is `Send + Sync + 'static`, such as a `#[sabi_trait]` trait object (`Trait_TO<'static, RBox<()>>`) from an interface crate that the host and the module share"
)]
pub trait HostService: StableAbi + Send + Sync + 'static {}

impl<T: StableAbi + Send + Sync + 'static> HostService for T {}

/// The host's service of type `T`, which this module declared in
/// `#[hot_module(services(...))]` and the host provides
/// (`Registry::provide`).
///
/// The guard borrows a value that lives in the host as long as this
/// version is mapped; it cannot be sent to another thread or kept in the
/// module state (which must be `Send`), so it lasts no longer than the call
/// that took it.
///
/// # Panics
/// When `T` was not declared in `services(...)`, or outside a module
/// library a hotswap host loaded.
pub fn service<T: HostService>() -> Service<T> {
    let link = link();
    let wanted = TypeId::of::<T>();
    let Some(index) = link
        .services
        .iter()
        .position(|declared| (declared.type_id)() == wanted)
    else {
        panic!(
            "hotswap: service `{}` was not declared: add it to `#[hot_module(services(...))]`, so the host checks and provides it when this module loads",
            std::any::type_name::<T>()
        );
    };
    let value = link.service_values[index];
    Service {
        // SAFETY: the host provides a `T` for declared service `index`
        // (its layout checked against `T`'s when this library loaded) and
        // keeps it alive as long as this library is mapped.
        value: unsafe { &*value.cast::<T>() },
        _not_send: PhantomData,
    }
}

/// A host service, borrowed for the call that took it: see [`service`].
pub struct Service<T: 'static> {
    value: &'static T,
    /// Neither `Send` nor `Sync`: it stays on the thread of the call.
    _not_send: PhantomData<*const ()>,
}

impl<T> std::ops::Deref for Service<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}
