//! The pin/retire protocol of `hotswap-runtime` (its `serve/pin.rs`,
//! included as it is) built against loom's atomics, locks and fences, so
//! that the model tests (`model.rs`) can explore every interleaving and every
//! weak-memory outcome loom models.
//!
//! Both halves of the asymmetric fence are a `SeqCst` fence here: what a
//! compiler fence on the reader's side plus `membarrier` on the writer's
//! side provide together (`membarrier` makes the reader's compiler fence a
//! full barrier at the moment it runs). Loom models `SeqCst` fences
//! exactly; it does not model `membarrier`.

#![allow(dead_code, unreachable_pub)]

/// What `pin.rs` imports as `super::sync`.
pub mod sync {
    pub use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
    pub use loom::sync::{Mutex, MutexGuard};

    /// One slot per record: a second pin on a thread takes the counted
    /// path, which the model then covers too.
    pub const SLOTS: usize = 1;

    /// The reader's half of the asymmetric fence.
    pub fn light_fence() {
        fence(Ordering::SeqCst);
    }

    /// The writer's half.
    pub fn heavy_fence() {
        fence(Ordering::SeqCst);
    }
}

#[path = "../../../hotswap-runtime/src/serve/pin.rs"]
pub mod pin;

#[cfg(test)]
mod model;
