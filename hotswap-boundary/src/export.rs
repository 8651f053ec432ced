//! The module side: what `#[hot_module]` generates code against.
//!
//! The macro describes each exported function with a marker type that
//! implements [`Export`] plus one of [`CallStateless`], [`CallShared`] or
//! [`CallExclusive`], and writes one `extern "C"` shim per function whose body
//! is [`run_stateless`], [`run_shared`] or [`run_exclusive`]: those convert
//! a panic into a [`ShimReturn`] report instead of unwinding across the
//! boundary. This, and the `setup`/`teardown` shims, is the module-side
//! `unsafe`.

use std::ffi::c_void;
use std::io::{self, Write};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RSlice, RStr, RString};
use abi_stable::StableAbi;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::abi::{
    FnEntry, HandoffSink, InstallFn, LinkFn, ModuleDescriptor, PanicMessage, ServiceDecl, SetupFn,
    ShimReturn, StateAccess, TeardownFn, HANDOFF_FORMAT, STATUS_FAILED, STATUS_KEPT, STATUS_OK,
    STATUS_PANICKED,
};
use crate::shim::ShimFn;

/// Describes one exported function; shared by the module and the host.
///
/// # Safety
/// The host calls a library's shim for this function as [`Export::Fn`]
/// once the library's [`Export::Layout`] matched its own. So `Fn` must be
/// exactly `unsafe extern "C" fn(*mut c_void, *mut PanicMessage, Args...)
/// -> ShimReturn<Ret>` with the argument and return types that `Layout`
/// describes (`PhantomData<(Ret, Args...)>`), `RECEIVER` must be how the
/// shim reaches the state, and `KEPT` must list every user type inside
/// `Ret`. `#[hot_module]` writes these impls; nothing else should.
pub unsafe trait Export: 'static {
    /// The function's name.
    const NAME: &'static str;
    /// Its Rust signature, for messages.
    const RUST_SIGNATURE: &'static str;
    /// How it reaches the state.
    const RECEIVER: StateAccess;
    /// Its arguments as a tuple of FFI-safe types (each passed separately).
    type Args<'a>;
    /// Its FFI-safe return type.
    type Ret;
    /// The shim's function pointer type.
    type Fn<'a>: ShimFn<Self::Args<'a>, Ret = Self::Ret>;
    /// `PhantomData<(Ret, Args...)>` with `'static` lifetimes: what the
    /// layout check compares.
    type Layout: StableAbi;
    /// Layouts of the user types in the return value, which the host keeps
    /// as they are: checked to hold no pointer into the module.
    const KEPT: &'static [&'static abi_stable::type_layout::TypeLayout];
}

/// A function without state.
pub trait CallStateless: Export {
    /// Converts the arguments, calls the function, converts the result.
    fn call(args: Self::Args<'_>) -> Self::Ret;
}

/// A function taking `&State`.
pub trait CallShared: Export {
    /// The module state.
    type State;
    /// Converts the arguments, calls the function, converts the result.
    fn call(state: &Self::State, args: Self::Args<'_>) -> Self::Ret;
}

/// A function taking `&mut State`.
pub trait CallExclusive: Export {
    /// The module state.
    type State;
    /// Converts the arguments, calls the function, converts the result.
    fn call(state: &mut Self::State, args: Self::Args<'_>) -> Self::Ret;
}

/// The module's `setup`/`teardown`, as the macro found them.
pub trait Lifecycle: 'static {
    /// What `setup` returns.
    type State: Send + Sync + 'static;
    /// What `teardown` returns and `setup` receives.
    type Handoff: Serialize + DeserializeOwned;
    /// Calls `setup`; `Err` carries the failure's message.
    fn setup(prev: Option<Self::Handoff>) -> Result<Self::State, String>;
    /// Calls `teardown`; `None` when the module hands nothing over.
    fn teardown(state: Self::State) -> Option<Self::Handoff>;
}

impl FnEntry {
    const fn of<E: Export>(call: *const c_void) -> Self {
        Self {
            name: RStr::from_str(E::NAME),
            signature: RStr::from_str(E::RUST_SIGNATURE),
            receiver: E::RECEIVER as u8,
            layout: <E::Layout as StableAbi>::LAYOUT,
            call,
        }
    }

    /// The entry of a stateless function; `call` is its shim.
    pub const fn stateless<E: CallStateless>(call: *const c_void) -> Self {
        Self::of::<E>(call)
    }

    /// The entry of a `&State` function; `call` is its shim.
    pub const fn shared<E: CallShared>(call: *const c_void) -> Self {
        Self::of::<E>(call)
    }

    /// The entry of a `&mut State` function; `call` is its shim.
    pub const fn exclusive<E: CallExclusive>(call: *const c_void) -> Self {
        Self::of::<E>(call)
    }
}

/// What a module calls besides its own functions: the hot modules and the
/// host services it declared (`#[hot_module(uses(...), services(...))]`).
#[derive(Clone, Copy)]
pub struct Uses {
    /// The descriptors of the modules it calls, as it was compiled against them.
    pub imports: &'static [&'static ModuleDescriptor],
    /// The host services it calls.
    pub services: &'static [ServiceDecl],
}

impl Uses {
    /// Calls nothing outside itself.
    pub const NOTHING: Self = Self {
        imports: &[],
        services: &[],
    };
}

impl ModuleDescriptor {
    /// A module without state.
    pub const fn stateless(
        module: &'static str,
        crate_name: &'static str,
        crate_version: &'static str,
        functions: &'static [FnEntry],
        uses: Uses,
    ) -> Self {
        let install: InstallFn = crate::interpose::install;
        let link: LinkFn = crate::link::install;
        Self {
            module: RStr::from_str(module),
            crate_name: RStr::from_str(crate_name),
            crate_version: RStr::from_str(crate_version),
            handoff_format: RStr::from_str(HANDOFF_FORMAT),
            functions: RSlice::from_slice(functions),
            setup: None,
            teardown: None,
            // The whole image is built with one panic strategy, this crate
            // included.
            panic_unwinds: cfg!(panic = "unwind"),
            install,
            imports: RSlice::from_slice(uses.imports),
            services: RSlice::from_slice(uses.services),
            link,
        }
    }

    /// A module whose state is managed by `L`.
    pub const fn stateful<L: Lifecycle>(
        module: &'static str,
        crate_name: &'static str,
        crate_version: &'static str,
        functions: &'static [FnEntry],
        uses: Uses,
    ) -> Self {
        let setup: SetupFn = setup_shim::<L>;
        let teardown: TeardownFn = teardown_shim::<L>;
        Self {
            setup: Some(setup),
            teardown: Some(teardown),
            ..Self::stateless(module, crate_name, crate_version, functions, uses)
        }
    }
}

impl ServiceDecl {
    /// The declaration of service type `T`.
    pub const fn of<T: crate::link::HostService>() -> Self {
        Self {
            layout: <T as StableAbi>::LAYOUT,
            type_id: std::any::TypeId::of::<T>,
        }
    }
}

/// The message carried by a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "module panicked with a non-string payload".to_owned()
    }
}

/// The message of a caught panic; drops the payload inside the boundary,
/// where a payload whose `Drop` panics too cannot unwind into the host.
pub fn take_panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = panic_message(&*payload);
    if let Err(nested) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // Dropping this one could panic again; leaking it cannot.
        std::mem::forget(nested);
    }
    message
}

/// Writes a panic's message into the host's slot.
///
/// # Safety
/// `slot` must be valid for writes.
#[cold]
#[inline(never)]
unsafe fn report_panic(payload: Box<dyn std::any::Any + Send>, slot: *mut PanicMessage) {
    let message = RString::from(take_panic_message(payload));
    // SAFETY: the caller guarantees `slot` is valid for writes.
    unsafe { (*slot).write(message) };
}

#[inline(always)]
fn returned<R>(outcome: std::thread::Result<R>, slot: *mut PanicMessage) -> ShimReturn<R> {
    match outcome {
        Ok(value) => ShimReturn {
            value: MaybeUninit::new(value),
            panicked: false,
        },
        Err(payload) => {
            // SAFETY: every `run_*` caller guarantees `slot` is valid for writes.
            unsafe { report_panic(payload, slot) };
            ShimReturn {
                value: MaybeUninit::uninit(),
                panicked: true,
            }
        }
    }
}

/// The body of a stateless function's shim.
///
/// # Safety
/// `slot` is valid for writes (the host's message slot for this call).
#[inline(always)]
pub unsafe fn run_stateless<E: CallStateless>(
    slot: *mut PanicMessage,
    args: E::Args<'_>,
) -> ShimReturn<E::Ret> {
    returned(catch_unwind(AssertUnwindSafe(|| E::call(args))), slot)
}

/// The body of a `&State` function's shim.
///
/// # Safety
/// As [`run_stateless`], and `state` is this version's live state, which the
/// host holds at least a shared lock on.
#[inline(always)]
pub unsafe fn run_shared<E: CallShared>(
    state: *mut c_void,
    slot: *mut PanicMessage,
    args: E::Args<'_>,
) -> ShimReturn<E::Ret> {
    // SAFETY: the caller guarantees `state` is the live state, shared-locked.
    let state = unsafe { &*state.cast::<E::State>() };
    returned(
        catch_unwind(AssertUnwindSafe(|| E::call(state, args))),
        slot,
    )
}

/// The body of a `&mut State` function's shim.
///
/// # Safety
/// As [`run_stateless`], and `state` is this version's live state, which the
/// host holds the exclusive lock on.
#[inline(always)]
pub unsafe fn run_exclusive<E: CallExclusive>(
    state: *mut c_void,
    slot: *mut PanicMessage,
    args: E::Args<'_>,
) -> ShimReturn<E::Ret> {
    // SAFETY: the caller guarantees `state` is the live state, locked exclusively.
    let state = unsafe { &mut *state.cast::<E::State>() };
    returned(
        catch_unwind(AssertUnwindSafe(|| E::call(state, args))),
        slot,
    )
}

/// Writes the outcome of `setup`/`teardown`, which may also fail without
/// panicking, into the host's slots.
///
/// # Safety
/// `ret` and `message` must be valid for writes of their types.
unsafe fn finish<R>(
    outcome: std::thread::Result<Result<R, String>>,
    ret: *mut R,
    message: *mut RString,
) -> u8 {
    let (status, text) = match outcome {
        Ok(Ok(value)) => {
            // SAFETY: the caller guarantees `ret` is valid for writes.
            unsafe { ret.write(value) };
            return STATUS_OK;
        }
        Ok(Err(text)) => (STATUS_FAILED, text),
        Err(payload) => (STATUS_PANICKED, take_panic_message(payload)),
    };
    // SAFETY: the caller guarantees `message` is valid for writes.
    unsafe { message.write(RString::from(text)) };
    status
}

/// Decodes the previous version's handoff (if any) and runs `setup`.
///
/// # Safety
/// `prev` is null or valid for `prev_len` bytes; `state_out` and `message`
/// are writable. On success `*state_out` owns a `Box<L::State>` that only
/// [`teardown_shim`] of this library may consume.
unsafe extern "C" fn setup_shim<L: Lifecycle>(
    prev: *const u8,
    prev_len: usize,
    state_out: *mut *mut c_void,
    message: *mut RString,
) -> u8 {
    let bytes = if prev.is_null() {
        None
    } else {
        // SAFETY: the host passes a buffer valid for `prev_len` bytes.
        Some(unsafe { std::slice::from_raw_parts(prev, prev_len) })
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let prev = match bytes {
            None => None,
            Some(bytes) => Some(rmp_serde::from_slice::<L::Handoff>(bytes).map_err(|error| {
                format!("cannot decode the state handed over by the previous version: {error}")
            })?),
        };
        L::setup(prev).map(|state| Box::into_raw(Box::new(state)).cast::<c_void>())
    }));
    // SAFETY: the host passes writable slots.
    unsafe { finish(outcome, state_out, message) }
}

/// Streams encoded bytes into the host's buffer.
struct SinkWriter(*const HandoffSink);

impl Write for SinkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: the sink is valid for the duration of `teardown_shim`,
        // which owns this writer.
        unsafe { ((*self.0).write)((*self.0).ctx, data.as_ptr(), data.len()) };
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `teardown` on the state and encodes what it returns into `sink`.
///
/// If the value cannot be encoded, the module sets itself up again from it
/// (`setup(Some(value))`) and writes that state to `restored`: the state is
/// kept, never reset, and the host reports the encoding error.
///
/// # Safety
/// `state` came from this library's [`setup_shim`] and is not used again;
/// `sink` is null or valid for the call; `restored` and `message` are
/// writable.
unsafe extern "C" fn teardown_shim<L: Lifecycle>(
    state: *mut c_void,
    sink: *const HandoffSink,
    restored: *mut *mut c_void,
    message: *mut RString,
) -> u8 {
    // SAFETY: `state` is the `Box<L::State>` made by `setup_shim`.
    let state = unsafe { Box::from_raw(state.cast::<L::State>()) };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let handoff = L::teardown(*state);
        match handoff {
            Some(handoff) if !sink.is_null() => {
                // Many small writes: buffer them so the host callback runs per 64 KiB.
                let mut out = io::BufWriter::with_capacity(64 * 1024, SinkWriter(sink));
                let encoded = rmp_serde::encode::write_named(&mut out, &handoff)
                    .map_err(|error| error.to_string())
                    .and_then(|()| out.flush().map_err(|error| error.to_string()));
                match encoded {
                    Ok(()) => Ok(None),
                    Err(error) => {
                        let error = format!("cannot encode the state for handoff: {error}");
                        match L::setup(Some(handoff)) {
                            Ok(state) => Ok(Some((
                                Box::into_raw(Box::new(state)).cast::<c_void>(),
                                error,
                            ))),
                            Err(setup) => Err(format!(
                                "{error}; and `setup` could not take the state back: {setup}"
                            )),
                        }
                    }
                }
            }
            _ => Ok(None),
        }
    }));
    let outcome = match outcome {
        Ok(Ok(Some((state, error)))) => {
            // SAFETY: the host passes writable slots.
            unsafe {
                restored.write(state);
                message.write(RString::from(error));
            }
            return STATUS_KEPT;
        }
        Ok(Ok(None)) => Ok(Ok(())),
        Ok(Err(error)) => Ok(Err(error)),
        Err(payload) => Err(payload),
    };
    let mut unit = ();
    // SAFETY: `unit` is a local; the host passes a writable message slot.
    unsafe { finish(outcome, &mut unit, message) }
}
