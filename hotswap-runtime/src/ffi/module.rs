//! What the host knows about a module at compile time.

use std::marker::PhantomData;

use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;

use std::ffi::c_void;

use crate::abi::StateAccess;
use crate::export::Export;

/// A function the host calls, as it was compiled.
#[derive(Clone, Copy, Debug)]
pub struct FnSpec {
    /// The function's name.
    pub name: &'static str,
    /// Its Rust signature.
    pub signature: &'static str,
    /// How it reaches the state.
    pub receiver: StateAccess,
    /// Layout of its return and argument types.
    pub layout: &'static TypeLayout,
    /// Layouts of the types in its return value that the host keeps as the
    /// module made them (user `StableAbi` types): they must hold no pointer.
    pub kept: &'static [&'static TypeLayout],
}

impl FnSpec {
    /// The spec of the function described by `E`.
    pub const fn of<E: Export>() -> Self {
        Self {
            name: E::NAME,
            signature: E::RUST_SIGNATURE,
            receiver: E::RECEIVER,
            layout: <E::Layout as StableAbi>::LAYOUT,
            kept: E::KEPT,
        }
    }
}

/// What the host knows about a module at compile time, as the swap core
/// needs it: its names, the functions it calls, and how to type a loaded
/// version's functions. Implemented by `#[hot_module]`, with
/// [`HotModule`](crate::HotModule), the bound users see.
#[doc(hidden)]
pub trait ModuleSpec: Sealed + Sized + 'static {
    /// The module's name.
    const MODULE: &'static str;
    /// The crate's name (part of the exported symbol).
    const CRATE: &'static str;
    /// Every function the host calls; each is checked on every load.
    const FUNCTIONS: &'static [FnSpec];
    /// Typed entry points of one loaded version.
    type Table: Send + Sync + 'static;
    /// Builds the table from the checked functions.
    fn table(functions: &Resolved) -> Self::Table;
}

/// Seals [`HotModule`](crate::HotModule): implemented only by
/// `#[hot_module]`'s generated code.
#[doc(hidden)]
pub trait Sealed {}

/// The functions of one library, checked against [`ModuleSpec::FUNCTIONS`].
pub struct Resolved {
    pub(crate) entries: Vec<(FnSpec, *const c_void)>,
}

impl Resolved {
    /// The checked entry point of `E`.
    ///
    /// # Panics
    /// If `E` is not one of [`ModuleSpec::FUNCTIONS`]: generated code lists
    /// every function it resolves, so this means a bug in the macro.
    pub fn shim<E: Export>(&self) -> Shim<E> {
        let (_, raw) = self
            .entries
            .iter()
            .find(|(spec, _)| {
                spec.name == E::NAME
                    && spec.signature == E::RUST_SIGNATURE
                    && spec.receiver == E::RECEIVER
            })
            .unwrap_or_else(|| panic!("hotswap: function `{}` was not checked", E::NAME));
        Shim {
            raw: *raw,
            _function: PhantomData,
        }
    }
}

/// A checked entry point of a loaded version, typed by its [`Export`].
///
/// Deliberately neither `Copy` nor `Clone`: it is reachable only by
/// borrowing the version that owns it, so it cannot outlive its library.
pub struct Shim<E> {
    pub(crate) raw: *const c_void,
    _function: PhantomData<fn() -> E>,
}

// SAFETY: `raw` is the address of code in a loaded library; calling it is
// governed by `Shim::invoke_*`, which any thread may do.
unsafe impl<E> Send for Shim<E> {}
// SAFETY: as above.
unsafe impl<E> Sync for Shim<E> {}
