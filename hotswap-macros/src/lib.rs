//! `#[hot_module]`: turns an ordinary Rust module into one that a running
//! host can swap for a new build, carrying its state across.
//!
//! Use it through `hotswap-runtime`, which re-exports it; the generated code
//! names only `::hotswap_runtime::__private_0_1` and `::core`/`::std` paths.
//!
//! # Why a macro
//!
//! Calling into a library that may be replaced at any moment needs three
//! things ordinary Rust does not give: an FFI-safe boundary whose types can be
//! checked against the host's, state that survives the library it lives in,
//! and a guarantee that no state hides where a swap cannot reach it. The
//! attribute writes the first, routes the second through `setup`/`teardown`,
//! and refuses the third at compile time.
//!
//! # Example
//!
//! ```ignore
//! use hotswap_runtime::hot_module;
//!
//! #[hot_module]
//! pub mod counter {
//!     use serde::{Deserialize, Serialize};
//!
//!     #[derive(Default, Serialize, Deserialize)]
//!     pub struct State { pub count: u64 }
//!
//!     // Receives what the previous version's teardown returned.
//!     pub fn setup(prev: Option<State>) -> State { prev.unwrap_or_default() }
//!     // Its value is serialized and handed to the next version's setup.
//!     pub fn teardown(state: State) -> State { state }
//!
//!     // `&State`/`&mut State` first: the runtime injects the state.
//!     pub fn increment(state: &mut State, by: u64) -> u64 { state.count += by; state.count }
//!     pub fn greet(name: &str) -> String { format!("hello, {name}") }
//! }
//!
//! // In the host, which depends on this crate too:
//! let hot = counter::Hot::open("target/debug/libcounter.so")?;
//! assert_eq!(hot.get().increment(5), 5);
//! ```
//!
//! # What it generates
//!
//! Inside the module, beside the user's items (which stay as written):
//! - for each exported function, an `extern "C"` shim that converts the
//!   arguments from `abi_stable` FFI types, calls the function with the
//!   state if it takes one, catches a panic, and converts the result back;
//! - one header, exported under `__hotswap_module__{crate}__{module}`,
//!   listing every function with its Rust signature, state access and
//!   `abi_stable` layout, plus `setup`/`teardown` entry points that move the
//!   state through a MessagePack buffer the host owns;
//! - for the host: `Hot` (an alias of `hotswap_runtime::Hot` for this module)
//!   and `HotGuard`, with one typed method per exported function, same name,
//!   same arguments minus the state, same return type;
//! - for other hot modules: `HotLink`, with the same methods, whose calls go
//!   through the host to this module's serving version.
//!
//! An exported `pub async fn` returns a future that crosses the boundary
//! (`hotswap_runtime::docs::asyncs`): its arguments must be owned and it
//! cannot take the state (both refused with a message), and its future
//! must be `Send`.
//!
//! # Arguments
//!
//! `#[hot_module(uses(path::to::module, ...), services(Type, ...))]` names
//! the other hot modules this one calls (through their `HotLink`) and the
//! host services it calls (`hotswap_runtime::service::<Type>()`). Both go
//! into the module's header, so the host resolves and checks them when the
//! module loads; see `hotswap_runtime::docs::linking`.
//!
//! How the runtime loads, checks and swaps builds is described in the
//! `hotswap-runtime` crate docs.
//!
//! # What it refuses
//!
//! Each with an error on the offending tokens that says what to do instead,
//! all reported together, and the module still emitted so IDEs keep working:
//! unknown or repeated arguments, a module or service named twice;
//! `static` and `static mut` items anywhere in the module (function bodies and
//! nested modules included), `thread_local!` and `lazy_static!` (state must
//! live in the state type so it survives a swap); generic, `unsafe`
//! or `extern` exported functions; argument or return types that cannot cross
//! (the message lists what can); and items whose names clash with generated
//! ones. The UI tests in `tests/ui` show each message.
//!
//! # Stages
//!
//! The expansion runs one way, one file each: `parse.rs` reads the module
//! into a model of syn types (`types.rs` classifies what each argument and
//! return type crosses as), `check.rs` holds every refusal, and `expand.rs`
//! only writes tokens for a module that passed. Both first stages report to
//! one collector, `ctxt.rs`, which panics if it is dropped unchecked, so no
//! error can be found and then lost.

#![warn(missing_docs)]

mod check;
mod ctxt;
mod expand;
mod parse;
mod types;

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::ItemMod;

use crate::ctxt::Ctxt;

/// Makes a module hot-swappable: see the crate docs for what it accepts,
/// generates and refuses.
#[proc_macro_attribute]
pub fn hot_module(args: TokenStream, input: TokenStream) -> TokenStream {
    hot_module2(args.into(), input.into()).into()
}

fn hot_module2(
    args: proc_macro2::TokenStream,
    input: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let Ok(mut item) = syn::parse2::<ItemMod>(input.clone()) else {
        let error = syn::Error::new(
            Span::call_site(),
            "`#[hot_module]` goes on a module: `pub mod name { ... }`",
        );
        return with_errors(input, error);
    };
    let cx = Ctxt::new();
    let module = parse::parse(&cx, &args, &item);
    if let Some(module) = &module {
        check::check(&cx, module);
    }
    let generated = match (cx.check(), module) {
        (Ok(()), Some(module)) => expand::generate(&module),
        (Err(errors), _) => return with_errors(quote!(#item), errors),
        (Ok(()), None) => unreachable!("`parse` reports why it has no model"),
    };
    let generated: syn::File = syn::parse2(generated).expect("generated items parse");
    if let Some((_, items)) = &mut item.content {
        items.extend(generated.items);
    }
    quote!(#item)
}

/// The item as written, so IDEs keep working, plus every error at once.
fn with_errors(item: proc_macro2::TokenStream, errors: syn::Error) -> proc_macro2::TokenStream {
    let errors = errors.to_compile_error();
    quote!(#item #errors)
}
