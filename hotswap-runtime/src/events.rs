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
    /// watcher tries it again only once one of those changes, or once
    /// another build was swapped in. A refusal that is not about the build
    /// (the old version's `teardown` failed, the state was lost, the new
    /// `setup` failed on the state handed over) is not remembered: the same
    /// bytes written again are tried again.
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

/// Where the time of one swap went, from the moment the new build was first
/// noticed (or, when rebuild on save made it, from the save) until it
/// served.
///
/// The phases follow one another without overlapping, so their sum is at
/// most [`total`](Self::total); what is left is waiting for another swap to
/// finish and handing over between threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SwapTimings {
    /// Rebuild on save: from the first save of the burst that this build
    /// came from until cargo started (the quiet period that lets a burst of
    /// saves make one build). `None` for a build that did not come from
    /// rebuild on save.
    pub debounce: Option<Duration>,
    /// Rebuild on save: from cargo's start until its output was noticed
    /// (the library watcher saw cargo put it in place, or cargo exited,
    /// whichever came first). `None` for a build that did not come from
    /// rebuild on save. [`SwapEvent::Built`] says how long cargo ran.
    pub build: Option<Duration>,
    /// From the first file event about the new build until reading it
    /// began: mostly the quiet period that lets its writer finish. Zero
    /// for [`Hot::reload`](crate::Hot::reload), which reads at once.
    pub detect: Duration,
    /// Reading the file (once), its metadata and its signature.
    pub read: Duration,
    /// Deciding on the bytes before any of their code runs: ELF checks,
    /// permissions, dependencies, and SHA-256 and signatures when
    /// [`Options`](crate::Options) pins digests or keys.
    pub admit: Duration,
    /// Writing the bytes to a sealed in-memory file and `dlopen`ing it.
    pub load: Duration,
    /// Checking the header and every function's layout.
    pub check: Duration,
    /// `teardown` → handoff → `setup` under the state lock: the only time
    /// stateful callers wait.
    pub critical_section: Duration,
    /// From the first save (rebuild on save) or the first file event (a
    /// build that landed) or the call ([`Hot::reload`](crate::Hot::reload))
    /// until the new version served.
    pub total: Duration,
}

impl SwapTimings {
    /// The sum of the phases measured: at most [`total`](Self::total).
    pub fn phases(&self) -> Duration {
        self.debounce.unwrap_or_default()
            + self.build.unwrap_or_default()
            + self.detect
            + self.read
            + self.admit
            + self.load
            + self.check
            + self.critical_section
    }
}

impl std::fmt::Display for SwapTimings {
    /// One line, in the order the phases ran: `debounce 12ms + build
    /// 412ms + detect 10ms + read 6ms + ... = 460ms`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rebuild = [("debounce", self.debounce), ("build", self.build)];
        let swap = [
            ("detect", self.detect),
            ("read", self.read),
            ("admit", self.admit),
            ("load", self.load),
            ("check", self.check),
            ("critical section", self.critical_section),
        ];
        let phases = rebuild
            .into_iter()
            .filter_map(|(name, took)| Some((name, took?)))
            .chain(swap);
        for (index, (name, took)) in phases.enumerate() {
            let plus = if index == 0 { "" } else { " + " };
            write!(f, "{plus}{name} {}", Millis(took))?;
        }
        write!(f, " = {}", Millis(self.total))
    }
}

/// A duration in milliseconds, to two decimals.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ms", self.0.as_secs_f64() * 1e3)
    }
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
