//! Swap events: what a host can subscribe to, besides the `tracing` log.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
use crate::residency::FileId;

/// Something that happened to a module's versions.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SwapEvent {
    /// A new version is serving.
    Swapped {
        /// The module.
        module: &'static str,
        /// Generation that served before.
        from: u64,
        /// Generation serving now.
        to: u64,
        /// How long each phase took.
        timings: SwapTimings,
    },
    /// A build was refused; the previous version keeps serving. Reported
    /// once per refused build (by content, signature and permissions): the
    /// watcher tries it again only once one of those changes.
    Refused {
        /// The module.
        module: &'static str,
        /// Why.
        error: Error,
    },
    /// The watcher could not swap a build in for a reason that may pass
    /// ([`Error::is_transient`]: reading it, making its in-memory image or
    /// `dlopen` failed); the previous version keeps serving, and the same
    /// build is tried again after `retry_in`, unless a new one lands first.
    /// The delay doubles with each failed attempt, up to a few seconds.
    /// Reported for every failed attempt ([`SwapMode::Background`] only;
    /// [`Hot::reload`] returns the error instead).
    ///
    /// [`SwapMode::Background`]: crate::SwapMode::Background
    /// [`Hot::reload`]: crate::Hot::reload
    Retrying {
        /// The module.
        module: &'static str,
        /// Why the attempt failed.
        error: Error,
        /// Which attempt failed: 1 for the first.
        attempt: u32,
        /// When the next attempt is made.
        retry_in: Duration,
    },
    /// Rebuild on save ran `cargo build` successfully; the built library is
    /// swapped in next (watch for `Swapped` or `Refused`).
    Built {
        /// The module.
        module: &'static str,
        /// The library cargo built.
        library: PathBuf,
        /// How long the build took.
        took: Duration,
        /// What cargo and the compiler printed, warnings included.
        diagnostics: String,
    },
    /// Rebuild on save ran `cargo build` and it failed; the serving version
    /// keeps serving. The error ([`Error::Build`]) holds the compiler's
    /// diagnostics.
    BuildFailed {
        /// The module.
        module: &'static str,
        /// Why.
        error: Error,
    },
    /// A retired version left the address space.
    Unloaded {
        /// The module.
        module: &'static str,
        /// The version's generation.
        generation: u64,
    },
    /// A retired version was closed but is still mapped (marked
    /// `RTLD_NODELETE`, or pinned by something outside the runtime's view).
    /// Its in-memory file stays open for as long as the process runs, so
    /// that no later version can be mistaken for it.
    StayedResident {
        /// The module.
        module: &'static str,
        /// The version's generation.
        generation: u64,
        /// The in-memory file it was loaded from, which is still mapped
        /// (see [`FileId::is_mapped`]).
        image: FileId,
    },
    /// A retired version still has threads it started running its code: it
    /// stays loaded until they finish, then is unloaded (`Unloaded`).
    /// Reported once per version, a moment after it retired; also
    /// [`Error::ThreadsOutlived`] in `last_error()` and the log.
    ThreadsOutlived {
        /// The module.
        module: &'static str,
        /// The version's generation.
        generation: u64,
        /// How many of its threads were still running.
        threads: usize,
    },
}

/// Phases of one swap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapTimings {
    /// Reading the new build, checking it is a complete library, writing
    /// it to a sealed in-memory file and `dlopen`ing that.
    pub load: Duration,
    /// Checking the header and every function's layout.
    pub check: Duration,
    /// `teardown` → handoff → `setup` under the state lock: the only time
    /// stateful callers wait.
    pub critical_section: Duration,
}

/// Fans events out to every subscriber; dropped subscribers are forgotten.
#[derive(Clone, Default)]
pub(crate) struct EventHub {
    subscribers: Arc<Mutex<Vec<Sender<SwapEvent>>>>,
}

impl EventHub {
    pub(crate) fn subscribe(&self) -> Receiver<SwapEvent> {
        let (sender, receiver) = channel();
        self.lock().push(sender);
        receiver
    }

    pub(crate) fn emit(&self, event: SwapEvent) {
        self.lock()
            .retain(|subscriber| subscriber.send(event.clone()).is_ok());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<SwapEvent>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
