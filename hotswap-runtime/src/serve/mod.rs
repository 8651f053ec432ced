//! Serve: versions, pinning, the critical section, retiring. A swap reads
//! top to bottom in [`swap`]: admit the bytes, load and check them, hand
//! the state over in one critical section, publish, and retire the old
//! version ([`retire`]) once nothing of it can run.

pub(crate) mod sync; //    atomics and fences, std's (loom's in the model test)
pub(crate) mod pin; //     pinning without a locked instruction: hazard pointers
pub(crate) mod pins; //    the process's pin domain, each thread's record
pub(crate) mod retire; //  unload once nothing of a version can run
pub(crate) mod swap; //    the swap core: load, check, teardown -> setup, publish
pub(crate) mod linked; //  the swap core as a callee of other modules
pub(crate) mod options; // how a `Hot` is set up
