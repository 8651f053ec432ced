//! The long form of the README: how hotswap works, what it checks, what it
//! costs. Documentation only; nothing here is code.
//!
//! - [`swap`]: how a swap works, what it guarantees, the state handoff,
//!   guards, watching for new builds and rebuild on save.
//! - [`boundary`]: what crosses between host and module, and what a module
//!   must not do.
//! - [`linking`]: modules that call other hot modules and services of the
//!   host: declaring, checking, calling; cycles and re-entrancy.
//! - [`asyncs`]: `async fn` in hot modules: the host's runtime, versions
//!   during a swap, what is refused.
//! - [`security`]: trust: file permissions, pinned digests, signatures,
//!   the libraries a module needs, loading from memory.
//! - [`cli`]: the `hotswap` command-line tool (`inspect`, `check`,
//!   `keygen`, `sign`, `verify`, `sha256`) and its exit codes.
//! - [`performance`]: the measured costs of calls and swaps, and what
//!   bounds them.
//! - [`comparison`]: hotswap next to hot-lib-reloader, `abi_stable` root
//!   modules, Dioxus subsecond and cr.h.
//! - [`limitations`]: what hotswap does not do, or not yet.
//!
//! Each page is a Markdown file beside this one
//! (`hotswap-runtime/src/docs/*.md`), readable on its own as well.

#[doc = include_str!("swap.md")]
pub mod swap {}

#[doc = include_str!("boundary.md")]
pub mod boundary {}

#[doc = include_str!("asyncs.md")]
pub mod asyncs {}

#[doc = include_str!("linking.md")]
pub mod linking {}

#[doc = include_str!("security.md")]
pub mod security {}

#[doc = include_str!("cli.md")]
pub mod cli {}

#[doc = include_str!("performance.md")]
pub mod performance {}

#[doc = include_str!("comparison.md")]
pub mod comparison {}

#[doc = include_str!("limitations.md")]
pub mod limitations {}
