//! `#[hot_module]`, re-exported by `hotswap-runtime`; see its docs.
//!
//! Stages, one file each: [`parse`] reads the module into a model,
//! [`validate`] refuses what cannot survive a swap, [`types`] maps argument
//! and return types to their FFI-safe counterparts, and [`expand`] writes
//! the exports and the host accessors.

mod expand;
mod parse;
mod types;
mod validate;

use proc_macro::TokenStream;

/// Makes a module hot-swappable. See the `hotswap-runtime` crate docs.
#[proc_macro_attribute]
pub fn hot_module(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::hot_module(args.into(), input.into()).into()
}
