//! The atomics, locks and fences [`pin`](super::pin) is written against:
//! `std`'s here, loom's in the model test (`tests/loom`), which includes
//! `pin.rs` beside its own version of this file.

use std::sync::atomic::compiler_fence;
use std::sync::Once;

pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
pub(crate) use std::sync::{Mutex, MutexGuard};

/// How many versions one thread can have pinned at once through its
/// record; more pins on one thread take a reference count instead. (The
/// loom model uses 1, so that its nested pins take that path.)
pub(crate) const SLOTS: usize = 8;

/// Whether `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` is available to
/// this process: set once, before the first pin cell exists, and never
/// changed, so every reader and writer of a cell agree on it. (A plain
/// flag, not a `OnceLock`: the fast path reads it with one instruction.)
static EXPEDITED: AtomicBool = AtomicBool::new(false);
static REGISTER: Once = Once::new();

/// Registers the process for expedited `membarrier` (Linux ≥ 4.14; a
/// seccomp policy may forbid it). Call before making a pin cell: the
/// `Once` orders the flag before the cell, and the cell before any use.
pub(crate) fn init() {
    REGISTER.call_once(|| {
        use rustix::thread::{membarrier, MembarrierCommand};
        let registered = membarrier(MembarrierCommand::RegisterPrivateExpedited).is_ok();
        if !registered {
            tracing::debug!("membarrier is unavailable: pins use a full fence");
        }
        EXPEDITED.store(registered, Ordering::Relaxed);
    });
}

#[inline(always)]
fn expedited() -> bool {
    EXPEDITED.load(Ordering::Relaxed)
}

/// The reader's half of an asymmetric fence: with `membarrier`, only a
/// compiler fence (the writer's heavy fence makes it a full one when it
/// matters); without, a full fence.
#[inline(always)]
pub(crate) fn light_fence() {
    if expedited() {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The writer's half: a full barrier on every thread of the process
/// (`membarrier`), or a full fence where readers use full fences too.
pub(crate) fn heavy_fence() {
    if expedited() {
        use rustix::thread::{membarrier, MembarrierCommand};
        if membarrier(MembarrierCommand::PrivateExpedited).is_ok() {
            return;
        }
        // Registered, so it cannot fail; if it did, readers would not be
        // ordered: stop rather than free a pinned version.
        std::process::abort();
    }
    fence(Ordering::SeqCst);
}
