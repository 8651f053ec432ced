//! The shared core of a `Hot`: the serving version, the state, and the swap.

use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

// The state lock is on every stateful call: parking_lot's is a single
// compare-and-swap each way, without std's poisoning bookkeeping (module
// panics are caught at the boundary, so poisoning would carry nothing).
use parking_lot::RwLock;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::error::Error;
use crate::events::{EventHub, SwapEvent, SwapTimings};
use crate::loader::{Expected, Library, StatePtr};
use crate::module::HotModule;

/// A build read from disk, with its content digest.
pub(crate) struct Build {
    pub bytes: Vec<u8>,
    /// XXH3-128 of the bytes: tells builds apart, fast enough (several GB/s)
    /// to stay a small part of a swap. Not a security measure.
    pub digest: u128,
}

impl Build {
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|error| Error::Read {
            path: path.to_owned(),
            source: Arc::new(error),
        })?;
        Ok(Self::from_bytes(bytes))
    }

    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Self {
        let digest = twox_hash::XxHash3_128::oneshot(&bytes);
        Self { bytes, digest }
    }
}

/// One loaded version of a module.
pub(crate) struct Version<M: HotModule> {
    pub table: M::Table,
    pub generation: u64,
    /// `None` only while dropping.
    library: Option<Library>,
    events: EventHub,
}

impl<M: HotModule> Version<M> {
    fn library(&self) -> &Library {
        self.library
            .as_ref()
            .expect("a version has its library until it drops")
    }
}

impl<M: HotModule> Drop for Version<M> {
    fn drop(&mut self) {
        let Some(library) = self.library.take() else {
            return;
        };
        let copy = library.copy().to_owned();
        let (module, generation) = (M::MODULE, self.generation);
        if library.close() {
            tracing::warn!(module, generation, copy = %copy.display(), "retired version stayed resident after dlclose");
            self.events.emit(SwapEvent::StayedResident {
                module,
                generation,
                copy,
            });
        } else {
            tracing::debug!(module, generation, "retired version unloaded");
            self.events.emit(SwapEvent::Unloaded { module, generation });
        }
    }
}

/// Where the module state is.
pub(crate) enum SlotState {
    /// The serving version has no state.
    Stateless,
    /// The serving version's live state.
    Live(StatePtr),
    /// Neither version could take the handed-over state; kept for the next
    /// swap.
    Lost {
        handoff: Option<Vec<u8>>,
        reason: String,
    },
}

/// The state together with the version that owns it: a stateful call always
/// runs on the version whose `setup` made the state it touches.
pub(crate) struct StateSlot<M: HotModule> {
    pub version: Arc<Version<M>>,
    pub state: SlotState,
}

/// Everything a `Hot` and its watcher share.
pub(crate) struct Shared<M: HotModule> {
    pub source: PathBuf,
    pub current: ArcSwap<Version<M>>,
    pub state: RwLock<StateSlot<M>>,
    /// Held for a whole swap, so swaps never interleave; holds the digest of
    /// the serving build.
    swapping: Mutex<u128>,
    generation: AtomicU64,
    loads: AtomicU64,
    last_error: Mutex<Option<Error>>,
    pub events: EventHub,
    /// A detected build waiting for the next `get()` (`SwapMode::OnGet`).
    pending: Mutex<Option<Build>>,
    pub has_pending: AtomicBool,
    // Last: removed after every version (and its copy) is gone.
    copies: tempfile::TempDir,
}

impl<M: HotModule> Shared<M> {
    /// Loads the first version and runs `setup(None)`.
    pub fn open(source: PathBuf, copies: tempfile::TempDir) -> Result<Self, Error> {
        let events = EventHub::default();
        let loads = AtomicU64::new(0);
        let build = Build::read(&source)?;
        let (version, _) = load::<M>(&source, &build, &copies, &loads, 0, &events)?;
        let state = match version.library().setup(None) {
            Ok(state) => state.map_or(SlotState::Stateless, SlotState::Live),
            Err(failure) => {
                return Err(Error::Setup {
                    module: M::MODULE,
                    panicked: failure.panicked,
                    message: failure.message,
                })
            }
        };
        let version = Arc::new(version);
        Ok(Self {
            source,
            current: ArcSwap::new(version.clone()),
            state: RwLock::new(StateSlot { version, state }),
            swapping: Mutex::new(build.digest),
            generation: AtomicU64::new(0),
            loads,
            last_error: Mutex::new(None),
            events,
            pending: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            copies,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<Error> {
        lock(&self.last_error).clone()
    }

    pub fn copy_dir(&self) -> &Path {
        self.copies.path()
    }

    /// The digest of the build that is serving.
    pub fn serving_digest(&self) -> u128 {
        *lock(&self.swapping)
    }

    /// Leaves `build` for the next `get()` to swap in.
    pub fn offer(&self, build: Build) {
        // Flag and slot change together, under the lock.
        let mut pending = lock(&self.pending);
        *pending = Some(build);
        self.has_pending.store(true, Ordering::Release);
    }

    /// Swaps in the build left by `offer`, if one is still waiting.
    pub fn take_offer(&self) {
        let build = {
            let mut pending = lock(&self.pending);
            self.has_pending.store(false, Ordering::Release);
            pending.take()
        };
        if let Some(build) = build {
            let _ = self.swap(Some(build));
        }
    }

    /// Swaps in `build`, or the file now at `source` when `None`. Records
    /// and reports the outcome.
    pub fn swap(&self, build: Option<Build>) -> Result<(), Error> {
        let mut serving_digest = lock(&self.swapping);
        let result = build
            .map_or_else(|| Build::read(&self.source), Ok)
            .and_then(|build| {
                let swapped = self.swap_in(&build)?;
                *serving_digest = build.digest;
                Ok(swapped)
            });
        match result {
            Ok(swapped) => {
                *lock(&self.last_error) = None;
                // Reported once the swap is fully recorded.
                self.events.emit(swapped);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(module = M::MODULE, %error, "swap refused; the serving version keeps serving");
                *lock(&self.last_error) = Some(error.clone());
                self.events.emit(SwapEvent::Refused {
                    module: M::MODULE,
                    error: error.clone(),
                });
                Err(error)
            }
        }
    }

    /// Loads `build` and swaps it in; returns the `Swapped` event to report.
    fn swap_in(&self, build: &Build) -> Result<SwapEvent, Error> {
        let started = Instant::now();
        let from = self.generation.load(Ordering::Relaxed);
        let to = from + 1;
        let (next, check) = load::<M>(
            &self.source,
            build,
            &self.copies,
            &self.loads,
            to,
            &self.events,
        )?;
        let next = Arc::new(next);
        let load = started.elapsed() - check;

        let critical = Instant::now();
        let mut slot = self.state.write();
        let old = slot.version.clone();
        let handoff = match mem::replace(&mut slot.state, SlotState::Stateless) {
            SlotState::Stateless => None,
            SlotState::Lost { handoff, .. } => handoff,
            SlotState::Live(state) => match old.library().teardown(state, true) {
                Ok(handoff) => handoff,
                Err(failure) => {
                    // The state was consumed by the failed teardown: the old
                    // version starts afresh rather than serving without state.
                    slot.state = setup_or_lost(&old, None, "teardown failed");
                    return Err(Error::Teardown {
                        module: M::MODULE,
                        panicked: failure.panicked,
                        message: failure.message,
                    });
                }
            },
        };
        match next.library().setup(handoff.as_deref()) {
            Ok(state) => {
                slot.state = state.map_or(SlotState::Stateless, SlotState::Live);
                slot.version = next.clone();
                self.current.store(next);
                self.generation.store(to, Ordering::Release);
                drop(slot);
                let timings = SwapTimings {
                    load,
                    check,
                    critical_section: critical.elapsed(),
                };
                tracing::info!(module = M::MODULE, from, to, ?timings, "hot module swapped");
                Ok(SwapEvent::Swapped {
                    module: M::MODULE,
                    from,
                    to,
                    timings,
                })
            }
            Err(failure) => {
                let error = Error::Setup {
                    module: M::MODULE,
                    panicked: failure.panicked,
                    message: failure.message,
                };
                slot.state = setup_or_lost(&old, handoff, &error.to_string());
                if let SlotState::Lost { reason, .. } = &slot.state {
                    return Err(Error::StateLost {
                        module: M::MODULE,
                        reason: reason.clone(),
                    });
                }
                Err(error)
            }
        }
    }
}

impl<M: HotModule> Drop for Shared<M> {
    fn drop(&mut self) {
        let slot = self.state.get_mut();
        if let SlotState::Live(state) = mem::replace(&mut slot.state, SlotState::Stateless) {
            if let Err(failure) = slot.version.library().teardown(state, false) {
                tracing::warn!(module = M::MODULE, message = %failure.message, "teardown failed while dropping the module");
            }
        }
    }
}

/// Loads and checks a build; returns the version and the time spent checking.
fn load<M: HotModule>(
    source: &Path,
    build: &Build,
    copies: &tempfile::TempDir,
    loads: &AtomicU64,
    generation: u64,
    events: &EventHub,
) -> Result<(Version<M>, std::time::Duration), Error> {
    let file_name = source
        .file_name()
        .map_or_else(|| "module".into(), |name| name.to_string_lossy());
    let copy = copies.path().join(format!(
        "{}.{file_name}",
        loads.fetch_add(1, Ordering::Relaxed)
    ));
    let expected = Expected::host(M::CRATE, M::MODULE, M::FUNCTIONS);
    let (library, resolved, check) = Library::open(source, &build.bytes, copy, &expected)?;
    let version = Version {
        table: M::table(&resolved),
        generation,
        library: Some(library),
        events: events.clone(),
    };
    Ok((version, check))
}

fn setup_or_lost<M: HotModule>(
    version: &Version<M>,
    handoff: Option<Vec<u8>>,
    why: &str,
) -> SlotState {
    match version.library().setup(handoff.as_deref()) {
        Ok(state) => state.map_or(SlotState::Stateless, SlotState::Live),
        Err(failure) => SlotState::Lost {
            reason: format!(
                "{why}, and the serving version's setup could not take the state back: {}",
                failure.message
            ),
            handoff,
        },
    }
}

// Module code never runs while a lock is held in a way that can poison it
// (panics are caught at the boundary), so poisoning carries no information.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
