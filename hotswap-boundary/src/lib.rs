//! The module side of [hotswap]: what a `#[hot_module]` library exports and
//! what its generated code runs on. Use it through `hotswap-runtime`, which
//! re-exports it: a module crate that depends on `hotswap-runtime` without
//! its `host` feature compiles this crate and nothing of the host.
//!
//! - [`abi`]: the `#[repr(C)]` header, descriptors and calling convention
//!   both sides compile from the same source;
//! - [`export`]: the shims' bodies (panic capture) and `setup`/`teardown`
//!   with the MessagePack handoff;
//! - [`shim`]: calling a shim of any arity;
//! - [`convert`]: how values cross, and what may cross as it is;
//! - [`link`]: calls out of a module, into other hot modules and host
//!   services;
//! - [`future`]: the future an exported `async fn` returns across the
//!   boundary, and [`rt`]: the host's async runtime from module code;
//! - `interpose`: thread creation and thread-local destructors inside a
//!   module image, routed to the host.
//!
//! Not public API: no stability guarantees outside the exact version of
//! `hotswap-runtime` that depends on it.
//!
//! [hotswap]: https://example.invalid/hotswap

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod abi;
pub mod convert;
pub mod export;
pub mod future;
#[doc(hidden)]
pub mod interpose;
pub mod link;
pub mod rt;
pub mod shim;

/// What generated code uses, re-exported by `hotswap-runtime`.
#[doc(hidden)]
pub mod __private {
    pub use core::ffi::c_void;
    pub use core::marker::PhantomData;

    pub use abi_stable::std_types::{
        ROption, RResult, RSlice, RStr, RString, RVec, Tuple1, Tuple2, Tuple3, Tuple4,
    };
    pub use abi_stable::type_layout::TypeLayout;
    pub use abi_stable::StableAbi;

    pub use crate::abi::{
        AbiStableVersion, FnEntry, ModuleDescriptor, ModuleHeader, PanicMessage, ServiceDecl,
        ShimReturn, StateAccess,
    };
    pub use crate::convert::{
        assert_crosses, char_from_ffi, char_to_ffi, string_from_ffi, vec_from_ffi, CrossesBoundary,
    };
    pub use crate::export::{
        run_exclusive, run_shared, run_stateless, CallExclusive, CallShared, CallStateless, Export,
        Lifecycle, Uses,
    };
    pub use crate::future::{AsyncReturn, FfiFuture};
    pub use crate::link::{call as link_call, call_async as link_call_async, Linkable};
}
