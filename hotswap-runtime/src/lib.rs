//! Hot-swappable Rust modules: replace a module's code inside a running
//! process and keep its state.
//!
//! Restarting a service to change one function drops its connections, its
//! caches and whatever else it held in memory. hotswap lets a crate mark
//! one module `#[hot_module]` and build as a `cdylib`; a host opens the
//! built library, calls the module through generated typed accessors, and
//! swaps in a new build whenever one lands on disk, handing the module's
//! state from the old version to the new one without losing an update.
//!
//! # A module crate
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! # A module compiles only the boundary; a host keeps the default `host`
//! # feature.
//! hotswap-runtime = { version = "0.1", default-features = false }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! ```no_run
//! use hotswap_runtime::hot_module;
//!
//! #[hot_module]
//! pub mod counter {
//!     use serde::{Deserialize, Serialize};
//!
//!     #[derive(Default, Serialize, Deserialize)]
//!     pub struct State {
//!         pub count: u64,
//!     }
//!
//!     // Receives what the previous version's teardown returned (None at first).
//!     pub fn setup(prev: Option<State>) -> State {
//!         prev.unwrap_or_default()
//!     }
//!
//!     // Its value is handed to the next version's setup.
//!     pub fn teardown(state: State) -> State {
//!         state
//!     }
//!
//!     pub fn increment(state: &mut State, by: u64) -> u64 {
//!         state.count += by;
//!         state.count
//!     }
//!
//!     pub fn greet(name: &str) -> String {
//!         format!("hello, {name}")
//!     }
//! }
//!
//! // A host depends on the module crate too, for the typed accessors:
//! fn main() -> Result<(), hotswap_runtime::Error> {
//!     let hot = counter::Hot::open("target/debug/libcounter.so")?; // loads, checks, setup(None)
//!     assert_eq!(hot.get().increment(5), 5); // state injected by the runtime
//!     println!("{}", hot.get().greet("world"));
//!     // ... rebuild the crate ...
//!     hot.reload()?; // teardown -> handoff -> setup, as one critical section
//!     assert_eq!(hot.get().increment(1), 6); // the count came through
//!     Ok(())
//! }
//! ```
//!
//! # How a swap works
//!
//! 0. [`Hot::open`] starts a watcher on the library's directory. A new build
//!    is taken once its writer has finished and its bytes differ from the
//!    serving build's; [`SwapMode`] chooses whether the watcher swaps it in
//!    (default), the next [`Hot::get`] does, or only [`Hot::reload`]. A
//!    build the watcher could not load for a reason that may pass (reading
//!    it or `dlopen` failed: [`Error::is_transient`]) is tried again with a
//!    growing delay and reported each time ([`SwapEvent::Retrying`]).
//! 1. The library is read once and checked ([`trust`], ELF), and those
//!    bytes are written to a new in-memory file (`memfd_create`), sealed
//!    against any change, and loaded from `/proc/self/fd/N` with
//!    `RTLD_NOW | RTLD_LOCAL`: a new inode under a new name each time
//!    (`dlopen` caches by both), nothing written to disk, nothing left
//!    behind by any exit, and nothing anyone else can write.
//! 2. Its header is checked: magic, module header version, `abi_stable`
//!    version, handoff format, and for every function the host calls, that it
//!    exists, that it needs no more access to the state than the host grants,
//!    and that the `abi_stable` layouts of its argument and return types match
//!    what the host was compiled against (with a fresh `CheckingGlobals`, so
//!    nothing keeps pointers into retired libraries).
//! 3. Critical section: stateful calls are held off, the old `teardown` runs,
//!    its value is encoded (MessagePack with field names, see below) into a
//!    host-owned buffer, and the new `setup` decodes it. If that fails the old
//!    `setup` takes the same bytes back and the old version keeps serving.
//! 4. The old version is unloaded when the last guard
//!    pinning it drops and every thread it started has finished (threads
//!    still running a moment later are reported,
//!    [`SwapEvent::ThreadsOutlived`]). Its thread-local destructors never run
//!    after that: the runtime routes thread creation and destructor
//!    registration inside module images to itself (see
//!    [`docs::boundary`](crate::docs::boundary#what-a-module-must-not-do)).
//!    Whether it really left the address space is
//!    checked, by the device and inode of its in-memory file
//!    ([`FileId::is_mapped`]), and reported ([`SwapEvent::StayedResident`]).
//!
//! Every swap, refusal and unload is a [`SwapEvent`] ([`Hot::subscribe`])
//! and a `tracing` record.
//!
//! # Modules that call modules and host services
//!
//! A [`Registry`] holds every hot module of an application. A module that
//! declares `#[hot_module(uses(other::module), services(Clock))]` calls the
//! other module through its generated `HotLink` and the host's service
//! through [`service`]; the registry resolves both when each version loads,
//! with the same layout checks as the host's calls, and checks every swap of
//! a callee against the callers loaded at the time. Each call reaches the
//! callee's serving version. See [`docs::linking`].
//!
//! # State handoff
//!
//! The handoff uses MessagePack via `rmp-serde`, with structs encoded as maps
//! of field names: it is self-describing, so a new version may add a field
//! with `#[serde(default)]` or drop one and keep the rest, and it is a compact
//! binary format that encodes and decodes at memory-bandwidth-like speeds.
//!
//! # Panics
//!
//! A panic inside a module function is caught at the boundary (it never
//! unwinds through `extern "C"`), and resumed in the caller as a panic whose
//! payload is the module's message (a `String`). The module and its state
//! stay usable.
//!
//! # Inspecting and checking builds
//!
//! [`inspect::ModuleLibrary`] reads what a library exports (modules,
//! functions with their signatures, state, `abi_stable` version) without
//! setting anything up, and [`inspect::check`] tells whether a host built
//! against one build would accept another, with the very checks and errors
//! of [`Hot::reload`]. The `hotswap` command-line tool (feature `cli`:
//! `cargo install hotswap-runtime --features cli`) runs both:
//! `hotswap inspect LIB` and `hotswap check OLD NEW`.
//!
//! # Rebuild on save
//!
//! [`Options::rebuild_on_save`] names the module crate's directory: when
//! one of its sources changes, the runtime runs `cargo build --lib` for it
//! (debounced, in the profile the opened library came from) and swaps the
//! result in. Cargo's output reaches the host as [`SwapEvent::Built`] or
//! [`SwapEvent::BuildFailed`]; a failed build leaves the serving version
//! serving.
//!
//! ```no_run
//! # #[hotswap_runtime::hot_module] pub mod counter { pub fn one() -> u32 { 1 } }
//! use hotswap_runtime::{Options, SwapEvent};
//!
//! # fn main() -> Result<(), hotswap_runtime::Error> {
//! let hot = counter::Hot::open_with(
//!     "counter/target/debug/libcounter.so",
//!     Options::new().rebuild_on_save("counter"),
//! )?;
//! for event in hot.subscribe() {
//!     match event {
//!         SwapEvent::BuildFailed { error, .. } => eprintln!("{error}"),
//!         SwapEvent::Swapped { to, .. } => println!("now serving generation {to}"),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # What is checked, and what cannot be
//!
//! Before a build is loaded ([`trust`]): the library file and its directory
//! belong to the current user (or root) and only their owner can write them
//! (unless [`Options::allow_insecure_files`]), its SHA-256 is one of
//! [`Options::allow_digests`] if given, and its detached signature verifies
//! with one of [`Options::trust_keys`] if given. The libraries it needs
//! are checked too: with pinned digests or keys they must be loaded
//! already, otherwise they must pass the permission checks where the
//! dynamic loader would find them. Its dynamic symbol table must define the
//! expected module's header. These checks and the ELF
//! check run on the bytes read from disk, and exactly those bytes are
//! loaded, from a sealed in-memory file.
//!
//! After loading, before anything is called: the module header, the
//! `abi_stable` version, the handoff format, and every function the host
//! calls, including the layouts of every type crossing the boundary (user
//! types deriving `abi_stable::StableAbi` too).
//!
//! What cannot be checked: loading a library runs its initializers before
//! the header can be read, and a library that forges its header is believed,
//! so only load builds you trust (pin them with digests or signatures). The
//! module's state type never crosses the boundary, only its serialized
//! handoff does, so its layout is not checked: the handoff's field names are
//! what versions agree on. Native code that passed every check still runs
//! with the process's full rights.
//!
//! # Safety
//!
//! The API is safe to call, but it rests on promises no runtime check can
//! fully verify: that a library exporting a hotswap header was produced by
//! `#[hot_module]` from the same `hotswap-runtime` (the header's magic,
//! version and layouts are checked, not forged), and that nothing a module
//! version created outlives it (the generated code keeps to this: values are
//! converted to host types before the version is released). Every `unsafe`
//! block that relies on these is in the host's `ffi` layer or in the
//! boundary's shims, each with the reason it holds; the only other host
//! `unsafe` is the lock-free pinning of versions (`serve/pin.rs`), which
//! is model-checked with loom.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

// The boundary, under the paths the host code names it by.
#[cfg(feature = "host")]
use hotswap_boundary::{abi, export};

macro_rules! host {
    ($($item:item)*) => { $(#[cfg(feature = "host")] $item)* };
}

host! {
    // The host in layers. A file imports only from its own layer and the
    // layers above it (no import cycle between files or layers):
    //
    // base: what every layer reports with
    mod digest; //      SHA-256 digests, hex keys
    mod problem; //     why a build is not trusted
    mod error; //       the one error enum
    mod residency; //   which files are mapped, by device and inode
    mod events; //      swap events and their fan-out
    // ffi: loading and calling foreign code; all of the host's `unsafe`
    // but the pin protocol's (serve/pin.rs, serve/pins.rs)
    mod ffi;
    // admit: a build from disk, decided on before any of its code runs
    mod admit;
    // serve: versions, pinning, the critical section, retiring
    mod serve;
    // what runs beside the swap core, then the API on top
    mod watch; //       picking up new builds
    mod cargo_build; // running cargo for a module crate
    mod rebuild; //     rebuild on save
    mod hot; //         `Hot`, `HotModule`, `Pinned`
    mod registry; //    every module of a host, by type and by name
    pub mod inspect; // reading and comparing builds (the CLI's core)
    // the long-form documentation
    pub mod docs;

    pub use admit::trust;
    pub use error::Error;
    pub use events::{SwapEvent, SwapTimings};
    pub use hot::{Hot, HotModule};
    pub use registry::{ModuleStatus, Registrable, Registry};
    pub use residency::FileId;
    pub use serve::options::{Options, SwapMode};
}
/// What this repository's tests and examples use to build modules and
/// look at the address space. Not public API (feature `test-hooks`).
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod __test_hooks {
    pub use crate::cargo_build::build_module;
    pub use crate::residency::{is_path_mapped, mapped_files, mapped_module_images, MappedFile};
}
pub use hotswap_boundary::link::{service, HostService, Service};
pub use hotswap_boundary::rt;
pub use hotswap_macros::hot_module;

/// The README's Rust code blocks, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// What generated code uses. Not public API: no stability guarantees. The
/// version in its name pairs it with the `hotswap-macros` that generates
/// code against it (both are released together, at one exact version): a
/// mismatched pair fails to compile on this path.
#[doc(hidden)]
pub mod __private_0_1 {
    pub use hotswap_boundary::__private::*;

    #[cfg(feature = "host")]
    pub use crate::ffi::loader::{ExclusiveState, ModulePanic, SharedState};
    #[cfg(feature = "host")]
    pub use crate::ffi::module::{FnSpec, ModuleSpec, Resolved, Sealed, Shim};
    #[cfg(feature = "host")]
    pub use crate::hot::{Hot, HotModule, Pinned};

    /// The host side of a module (`Hot`, its guard and table), which a
    /// module's own `cdylib` build leaves out: without the `host` feature
    /// this expands to nothing, so a module crate compiles only the
    /// boundary.
    pub use crate::__hotswap_host_items as host_items;
}

#[cfg(feature = "host")]
#[doc(hidden)]
#[macro_export]
macro_rules! __hotswap_host_items {
    ($($item:tt)*) => { $($item)* };
}

#[cfg(not(feature = "host"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __hotswap_host_items {
    ($($item:tt)*) => {};
}
