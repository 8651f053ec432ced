//! Admit: a build from disk, decided on before any of its code runs. The
//! bytes are read once ([`candidate`]), and everything here judges those
//! bytes: who may have written them ([`files`], [`trust`]), whether they
//! are a complete ELF library exporting the module ([`integrity`]), and
//! what else `dlopen` would load with them ([`deps`]). Nothing here loads
//! or calls foreign code; the one query of the loader's state it needs is
//! in [`ffi::in_process`](crate::ffi::in_process).

pub(crate) mod files; //     ownership, permissions, directories, `.sig` path
pub(crate) mod candidate; // the bytes read once, with where they came from
pub(crate) mod integrity; // a complete ELF library exporting the module
pub(crate) mod deps; //      the libraries it needs (DT_NEEDED, RUNPATH)
pub mod trust; //            the policy: permissions, digests, signatures
