//! FFI: loading and calling foreign code. Every `unsafe` block of the host
//! that touches foreign code is in this layer, each with the reason it
//! holds (the host's only other `unsafe` is the lock-free pinning of
//! versions, `serve/pin.rs`): the in-memory copy and `dlopen` ([`loader`]), the header and layout checks that make calling
//! into a build sound, the typed shims ([`module`]), the threads and
//! thread-local destructors a version starts ([`threads`]), calls from a
//! module into other modules and host services ([`link`]), the frames that
//! record which module state a thread is inside ([`reentry`]), and the
//! loader queries admission needs ([`in_process`]).

pub(crate) mod in_process; // what ld.so already has loaded (RTLD_NOLOAD, dlinfo)
pub(crate) mod module; //     what the host was compiled against, typed shims
pub(crate) mod threads; //    a version's threads and thread-local destructors
pub(crate) mod tasks; //      a version's timers and tasks on the host's async runtime
pub(crate) mod link; //       calls out of a module: other modules, host services
pub(crate) mod loader; //     memfd, dlopen, header and layout checks, calls, dlclose
pub(crate) mod reentry; //    which module state this thread is inside a call of
