//! The binary interface between a module library and its host.
//!
//! Everything here is plain `#[repr(C)]` data that both sides compile from
//! the same source. A library exports one [`ModuleHeader`] under a symbol
//! named after its crate and module ([`symbol_name`]); the header's fixed
//! prefix (magic, header version, `abi_stable` version) is checked before
//! anything behind it is read.

use std::any::TypeId;
use std::ffi::c_void;

use abi_stable::library::AbiHeader;
use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use abi_stable::type_layout::TypeLayout;

use crate::future::FfiFuture;

/// First bytes of every module header.
pub const MAGIC: [u8; 16] = *b"hotswap-module\0\0";

/// Version of the layout of [`ModuleHeader`], [`ModuleDescriptor`],
/// [`FnEntry`] and the shim calling convention. Bump on any change.
pub const HEADER_VERSION: u32 = 4;

/// How the state handoff is encoded. A library that hands off in another
/// format is refused.
pub const HANDOFF_FORMAT: &str = "messagepack/rmp-serde-named";

/// What the name of every module's exported symbol starts with.
pub const SYMBOL_PREFIX: &str = "__hotswap_module__";

/// The exported symbol of a module: unique per crate and module, so that a
/// host linking several module crates (as rlibs) never sees two definitions.
pub fn symbol_name(crate_name: &str, module: &str) -> String {
    format!("{SYMBOL_PREFIX}{crate_name}__{module}")
}

/// `setup`/`teardown` result: the out slot was written.
pub const STATUS_OK: u8 = 0;
/// `setup`/`teardown` result: the module panicked; the message was written.
pub const STATUS_PANICKED: u8 = 1;
/// `setup`/`teardown` result: the module reported a failure; the message
/// was written.
pub const STATUS_FAILED: u8 = 2;
/// `teardown` result: the handoff value could not be encoded, so the module
/// set itself up again from that value, in-process; the restored state was
/// written to the `restored` slot and the encoding error to the message.
pub const STATUS_KEPT: u8 = 3;

/// What a function shim returns: the value, or (with `panicked` set) an
/// uninitialised value and the panic message written to the message slot.
///
/// Every exported function is one shim, called with its arguments in
/// registers where the C ABI allows:
/// `unsafe extern "C" fn(state: *mut c_void, message: *mut PanicMessage,
/// args...) -> ShimReturn<Ret>`, with `state` null for stateless functions.
/// A small return value and the flag come back in registers too, so the
/// call path touches no memory the plain function would not.
#[repr(C)]
pub struct ShimReturn<R> {
    /// The function's result, initialised unless `panicked`.
    pub value: std::mem::MaybeUninit<R>,
    /// Whether the function panicked.
    pub panicked: bool,
}

/// Where a shim writes the panic message; left untouched otherwise.
pub type PanicMessage = std::mem::MaybeUninit<RString>;

/// Creates the module state from the previous version's handoff bytes
/// (`prev` is null when there are none).
pub type SetupFn = unsafe extern "C" fn(
    prev: *const u8,
    prev_len: usize,
    state_out: *mut *mut c_void,
    message: *mut RString,
) -> u8;

/// Consumes the module state; writes its handoff bytes to `sink` unless the
/// sink is null (then the handoff value is dropped). If the handoff value
/// cannot be encoded, the module passes it back to its own `setup` and
/// writes the state that makes to `restored` ([`STATUS_KEPT`]): a failed
/// encoding never loses the state.
pub type TeardownFn = unsafe extern "C" fn(
    state: *mut c_void,
    sink: *const HandoffSink,
    restored: *mut *mut c_void,
    message: *mut RString,
) -> u8;

/// Hands the module the host's thread hooks (see [`ThreadHooks`]); called
/// once per load, after the header was checked and before `setup`.
pub type InstallFn = unsafe extern "C" fn(hooks: *const ThreadHooks);

/// What a module's thread creation and thread-local destructor
/// registration are routed to, so the host knows which threads run a
/// version's code and no destructor of a version runs after it is unmapped.
///
/// The module defines `pthread_create`, `pthread_key_create` and
/// `__cxa_thread_atexit_impl` for
/// its own image (hidden symbols, so they bind inside the library only) and
/// forwards them here once installed. Owned by the host and kept alive for
/// as long as the library is mapped.
#[repr(C)]
pub struct ThreadHooks {
    /// Opaque host context: the version's thread tracker.
    pub ctx: *const c_void,
    /// Replaces `pthread_create` for the module's code.
    pub create: unsafe extern "C" fn(
        ctx: *const c_void,
        thread: *mut c_void,
        attr: *const c_void,
        start: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
        arg: *mut c_void,
    ) -> i32,
    /// Replaces `__cxa_thread_atexit_impl` for the module's code.
    pub thread_atexit: unsafe extern "C" fn(
        ctx: *const c_void,
        dtor: unsafe extern "C" fn(*mut c_void),
        obj: *mut c_void,
        dso: *mut c_void,
    ) -> i32,
    /// Replaces `pthread_key_create` for the module's code (std keeps its
    /// thread cleanup behind a key whose destructor is module code).
    pub key_create: unsafe extern "C" fn(
        ctx: *const c_void,
        key: *mut u32,
        dtor: Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> i32,
    /// A future, made by the host's async runtime, that is ready `nanos`
    /// nanoseconds from now (`hotswap_runtime::rt::sleep`).
    pub sleep: unsafe extern "C" fn(ctx: *const c_void, nanos: u64) -> FfiFuture<()>,
    /// Runs `task` on the host's async runtime as a task of this version
    /// (`hotswap_runtime::rt::spawn`): cancelled when the version retires,
    /// which is unloaded only once the task is gone. Returns whether it was
    /// spawned; if not, `message` says why (and `task` was dropped).
    pub spawn: unsafe extern "C" fn(
        ctx: *const c_void,
        task: FfiFuture<()>,
        message: *mut RString,
    ) -> bool,
    /// Connects a TCP stream of the host's runtime to `address` (copied
    /// during the call): a handle for the functions below, or why not.
    pub tcp_connect: unsafe extern "C" fn(
        ctx: *const c_void,
        address: RStr<'_>,
    ) -> FfiFuture<RResult<TcpHandle, RString>>,
    /// Reads up to `max` bytes (none at the end of the stream).
    pub tcp_read: unsafe extern "C" fn(
        stream: TcpHandle,
        max: usize,
    ) -> FfiFuture<RResult<RVec<u8>, RString>>,
    /// Writes all of `data` (copied during the call).
    pub tcp_write: unsafe extern "C" fn(
        stream: TcpHandle,
        data: RSlice<'_, u8>,
    ) -> FfiFuture<RResult<(), RString>>,
    /// Closes the stream: the handle is not used again.
    pub tcp_close: unsafe extern "C" fn(stream: TcpHandle),
    /// Counts the version's wakers another image holds (see `future`).
    pub waker_hold: WakerHold,
}

/// How another image's hold on a waker made by a module version is
/// counted: the version is not unloaded while one is held, since waking
/// or dropping it runs the version's code. Both functions are the host's.
#[repr(C)]
pub struct WakerHold {
    /// The version's tracker.
    pub ctx: *const c_void,
    /// One more waker of the version held.
    pub acquire: unsafe extern "C" fn(ctx: *const c_void),
    /// One fewer, once its code has returned.
    pub release: unsafe extern "C" fn(ctx: *const c_void),
}

/// A hold on a version of another module, from the host: released once,
/// with `release(version)`, in host code.
#[repr(C)]
pub struct Lease {
    /// Opaque to the module.
    pub version: *const c_void,
    /// Lets the version go (it may unload then).
    pub release: unsafe extern "C" fn(version: *const c_void),
}

// SAFETY: the host's hold on a version, which any thread may release.
unsafe impl Send for Lease {}
// SAFETY: as above; nothing is done through a shared reference.
unsafe impl Sync for Lease {}

impl Drop for Lease {
    fn drop(&mut self) {
        // SAFETY: the host's function for its own lease, called once.
        unsafe { (self.release)(self.version) }
    }
}

/// A TCP stream of the host's runtime, owned by the module code that
/// connected it (`hotswap_runtime::rt::TcpStream`).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct TcpHandle(pub *const c_void);

// SAFETY: a handle to the host's stream, which is `Send + Sync` (locked
// per operation).
unsafe impl Send for TcpHandle {}
// SAFETY: as above.
unsafe impl Sync for TcpHandle {}

// SAFETY: never written once installed; `ctx` points at the host's
// tracker, which is `Sync`, and the functions may be called from any
// thread.
unsafe impl Sync for ThreadHooks {}

/// A host-owned byte buffer the module's teardown writes the handoff into.
#[repr(C)]
pub struct HandoffSink {
    /// Opaque host context passed back to `write`.
    pub ctx: *mut c_void,
    /// Appends `len` bytes at `data` to the host buffer.
    pub write: unsafe extern "C" fn(ctx: *mut c_void, data: *const u8, len: usize),
}

/// How an exported function reaches the module state.
///
/// Ordered: a library's function may use *less* access than the host was
/// compiled for (the host then holds a stronger lock than needed), never more.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StateAccess {
    /// No state.
    None = 0,
    /// `&State`.
    Shared = 1,
    /// `&mut State`.
    Exclusive = 2,
}

impl std::fmt::Display for StateAccess {
    /// As the state parameter is written: `stateless`, `&State` or
    /// `&mut State`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "stateless",
            Self::Shared => "&State",
            Self::Exclusive => "&mut State",
        })
    }
}

impl StateAccess {
    /// Decodes the byte stored in a [`FnEntry`].
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Self::None),
            1 => Some(Self::Shared),
            2 => Some(Self::Exclusive),
            _ => None,
        }
    }
}

/// The `abi_stable` version a library was built with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiStableVersion {
    /// `abi_stable`'s own magic string.
    pub magic: [u8; 32],
    /// Major ABI version.
    pub major: u32,
    /// Minor ABI version (significant while major is 0).
    pub minor: u32,
}

impl AbiStableVersion {
    /// The version this crate was compiled with.
    pub const CURRENT: Self = Self {
        magic: AbiHeader::VALUE.magic_string,
        major: AbiHeader::VALUE.abi_major,
        minor: AbiHeader::VALUE.abi_minor,
    };

    /// Mirrors `abi_stable::library::AbiHeader::is_compatible`.
    pub fn is_compatible(&self, other: &Self) -> bool {
        self.magic == other.magic
            && self.major == other.major
            && (self.major != 0 || self.minor == other.minor)
    }
}

impl std::fmt::Display for AbiStableVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "abi_stable ABI {}.{}", self.major, self.minor)
    }
}

/// The exported root of a module library.
#[repr(C)]
pub struct ModuleHeader {
    /// Always `MAGIC`.
    pub magic: [u8; 16],
    /// Always `HEADER_VERSION` of the runtime that built the library.
    pub header_version: u32,
    /// The `abi_stable` version the library was built with.
    pub abi_stable: AbiStableVersion,
    /// Everything else; read only after the fields above were checked.
    pub descriptor: &'static ModuleDescriptor,
}

impl ModuleHeader {
    /// The header of a library built with this runtime.
    pub const fn new(descriptor: &'static ModuleDescriptor) -> Self {
        Self {
            magic: MAGIC,
            header_version: HEADER_VERSION,
            abi_stable: AbiStableVersion::CURRENT,
            descriptor,
        }
    }
}

/// What a module library contains.
#[repr(C)]
pub struct ModuleDescriptor {
    /// The annotated module's name.
    pub module: RStr<'static>,
    /// The crate's name.
    pub crate_name: RStr<'static>,
    /// The crate's version.
    pub crate_version: RStr<'static>,
    /// Always `HANDOFF_FORMAT` of the runtime that built the library.
    pub handoff_format: RStr<'static>,
    /// Every exported function.
    pub functions: RSlice<'static, FnEntry>,
    /// Present when the module has state.
    pub setup: Option<SetupFn>,
    /// Present when the module has state.
    pub teardown: Option<TeardownFn>,
    /// Whether the library was built with `panic = "unwind"`: the boundary
    /// catches panics, which a library built with `panic = "abort"` cannot
    /// let it do (its first panic would abort the host).
    pub panic_unwinds: bool,
    /// Routes the module's thread creation to the host (see `ThreadHooks`).
    pub install: InstallFn,
    /// The hot modules this one calls (`#[hot_module(uses(...))]`): each
    /// one's descriptor as this library was compiled against it (the
    /// functions, signatures and layouts its calls expect).
    pub imports: RSlice<'static, &'static ModuleDescriptor>,
    /// The host services this one calls (`#[hot_module(services(...))]`).
    pub services: RSlice<'static, ServiceDecl>,
    /// Hands the module the host's [`HostLink`]; called once per load,
    /// after the imports and services were resolved and before `setup`.
    pub link: LinkFn,
}

/// A host service a module declared it calls: a `StableAbi` type the host
/// provides one value of (an `abi_stable` `#[sabi_trait]` object, say).
#[repr(C)]
pub struct ServiceDecl {
    /// The service type's layout, as the module was compiled against it;
    /// checked against the host's.
    pub layout: &'static TypeLayout,
    /// Identifies the type inside the module's own image only (the host
    /// never calls it): how `service::<T>()` finds its slot.
    pub type_id: fn() -> TypeId,
}

/// Hands a module its [`HostLink`]. The link stays valid for as long as the
/// library is mapped.
pub type LinkFn = unsafe extern "C" fn(link: *const HostLink);

/// Runs inside the host's call into another module: `env` is the calling
/// module's, `shim` the callee's entry point on the version the host chose,
/// `state` that version's state locked as the function needs (null for
/// stateless functions). Never unwinds.
pub type Thunk = unsafe extern "C" fn(env: *mut c_void, shim: *const c_void, state: *mut c_void);

/// What a module calls out through: other hot modules and host services.
///
/// Owned by the host, built per loaded version from the imports and
/// services its descriptor declares, valid as long as the library is
/// mapped.
#[repr(C)]
pub struct HostLink {
    /// Opaque host context passed back to `call`.
    pub ctx: *const c_void,
    /// The module's own `imports`, in the same order (pointers into its
    /// image): the index of a callee is its position here.
    pub imports: RSlice<'static, &'static ModuleDescriptor>,
    /// Calls function `function` (its index in the callee's descriptor as
    /// the module saw it) of import `import` on the callee's serving
    /// version: pins it, takes its state lock, runs `thunk(env, shim,
    /// state)`, releases. Returns [`STATUS_OK`], or [`STATUS_FAILED`] with
    /// why in `message` (the callee's state is lost, a re-entrant call,
    /// ...), in which case `thunk` did not run.
    pub call: unsafe extern "C" fn(
        ctx: *const c_void,
        import: usize,
        function: usize,
        env: *mut c_void,
        thunk: Thunk,
        message: *mut RString,
    ) -> u8,
    /// `call` for an `async fn`: the thunk gets the shim of the callee's
    /// serving version (state null) and makes its future; the host writes a
    /// [`Lease`] on that version to `lease`, which keeps it loaded until
    /// released (after the future is dropped). On failure nothing is
    /// written but the message.
    pub call_async: unsafe extern "C" fn(
        ctx: *const c_void,
        import: usize,
        function: usize,
        env: *mut c_void,
        thunk: Thunk,
        lease: *mut Lease,
        message: *mut RString,
    ) -> u8,
    /// The module's own `services`, in the same order.
    pub services: RSlice<'static, ServiceDecl>,
    /// The host's value for each of `services`, in the same order.
    pub service_values: RSlice<'static, *const c_void>,
}

/// One exported function.
#[repr(C)]
pub struct FnEntry {
    /// The function's name.
    pub name: RStr<'static>,
    /// Its Rust signature, for error messages.
    pub signature: RStr<'static>,
    /// A [`StateAccess`] as a byte.
    pub receiver: u8,
    /// Layout of its return and argument types, compared with the host's.
    pub layout: &'static TypeLayout,
    /// The shim to call, type-erased (see [`ShimReturn`] for its signature).
    pub call: *const c_void,
}

// SAFETY: `call` is the address of code in the library image, never written.
unsafe impl Sync for FnEntry {}
// SAFETY: as above.
unsafe impl Send for FnEntry {}
