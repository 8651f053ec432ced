//! The shared core of a `Hot`: the serving version, the state, and the swap.

use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

// The state lock is on every stateful call: parking_lot's is a single
// compare-and-swap each way, without std's poisoning bookkeeping (module
// panics are caught at the boundary, so poisoning would carry nothing).
use parking_lot::RwLock;
use std::time::{Duration, Instant};


use crate::abi;
use crate::admit::deps::Dynamic;
use crate::error::Error;
use crate::events::{EventHub, SwapEvent, SwapTimings};
use crate::admit::integrity::{check_loadable, module_symbols};
use crate::ffi::link::{Linker, ModuleId, View};
use crate::ffi::loader::{Expected, Library, Linking, StatePtr, TornDown};
use crate::ffi::module::ModuleSpec;
use crate::ffi::reentry::{self, Frame, Holding, Inside};
use crate::residency::FileId;
use crate::serve::pin::PinCell;
use crate::serve::pins;
use crate::serve::retire::Retiring;
use crate::admit::candidate::{Candidate, Identity};
use crate::admit::trust::TrustPolicy;

/// The callers of a module, as far as its swaps are concerned.
pub(crate) struct Importers<M: ModuleSpec> {
    /// How the loaded versions of other modules call this one: each swap
    /// checks the new build against every view. Weak: a view belongs to
    /// its caller's version (and holds this core).
    pub views: Vec<std::sync::Weak<View>>,
    /// The version a swap checked and is about to publish: a caller that
    /// links meanwhile is checked against it too, so whichever version
    /// serves when the caller first calls fits it.
    pub pending: Option<Arc<Version<M>>>,
}

/// Clears [`Importers::pending`] when the swap that set it ends, published
/// or not.
pub(crate) struct Pending<'a, M: ModuleSpec>(&'a Mutex<Importers<M>>);

impl<M: ModuleSpec> Drop for Pending<'_, M> {
    fn drop(&mut self) {
        lock(self.0).pending = None;
    }
}

/// Versions a swap retired, to be dropped (and maybe unloaded) once no
/// lock is held and the swap is reported.
type Retired<M> = Vec<Arc<Version<M>>>;

/// One loaded version of a module.
pub(crate) struct Version<M: ModuleSpec> {
    pub table: M::Table,
    pub generation: u64,
    /// `None` only while dropping.
    library: Option<Library>,
    events: EventHub,
    last_error: Arc<Mutex<Option<Error>>>,
    /// The module's count of mapped versions, this one included.
    mapped: Arc<AtomicUsize>,
}

impl<M: ModuleSpec> Version<M> {
    pub(crate) fn library(&self) -> &Library {
        self.library
            .as_ref()
            .expect("a version has its library until it drops")
    }
}

impl<M: ModuleSpec> Drop for Version<M> {
    fn drop(&mut self) {
        let Some(library) = self.library.take() else {
            return;
        };
        Retiring {
            tracker: library.tracker().clone(),
            library,
            module: M::MODULE,
            generation: self.generation,
            events: self.events.clone(),
            last_error: self.last_error.clone(),
            mapped: self.mapped.clone(),
        }
        .retire();
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
pub(crate) struct StateSlot<M: ModuleSpec> {
    pub version: Arc<Version<M>>,
    pub state: SlotState,
}

/// What the swaps so far decided, to tell new builds from known ones (the
/// serving build is told by its in-memory file, [`Core::serves`]).
struct SwapRecord {
    /// [`Candidate::identity`] of the last build refused for what it is
    /// ([`Error::condemns_the_build`]), with why; forgotten once any build
    /// is swapped in.
    refused: Option<(Identity, Error)>,
}

/// A rebuild on save under way: its build, once noticed, is timed from the
/// save.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RebuildRun {
    /// The first save of the burst.
    pub saved: Instant,
    /// When cargo started.
    pub started: Instant,
}

/// The watcher's plan for a build that fails for a reason that may pass:
/// reported as [`SwapEvent::Retrying`] with these.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPlan {
    /// Which attempt this is: 1 for the first.
    pub attempt: u32,
    /// How long until the next one, should this one fail.
    pub retry_in: Duration,
}

/// Everything a `Hot` and its watcher share.
pub(crate) struct Core<M: ModuleSpec> {
    pub source: PathBuf,
    /// The serving version; `get()` pins it (see `pin.rs`).
    pub current: PinCell<Version<M>>,
    pub state: RwLock<StateSlot<M>>,
    /// Held for a whole swap, so swaps never interleave.
    swapping: Mutex<SwapRecord>,
    /// Identifies the module to the modules it calls.
    pub id: ModuleId,
    /// How the loaded versions of other modules call this one, and the
    /// version a swap is about to publish: see [`Importers`].
    pub importers: Mutex<Importers<M>>,
    generation: AtomicU64,
    last_error: Arc<Mutex<Option<Error>>>,
    pub events: EventHub,
    /// A detected build waiting for the next `get()` (`SwapMode::OnGet`).
    pending: Mutex<Option<Candidate>>,
    pub has_pending: AtomicBool,
    loading: Loading,
    /// The rebuild on save under way, if any: the next build noticed after
    /// cargo started is its output, whoever swaps it in.
    rebuild: Mutex<Option<RebuildRun>>,
}

/// Runs after a build passed the trust checks and before it is loaded
/// (tests use it to replace the original file at that moment).
pub(crate) type BeforeLoad = Arc<dyn Fn(&Path) + Send + Sync>;

/// How builds become versions: what they must satisfy.
pub(crate) struct Loading {
    pub trust: TrustPolicy,
    pub before_load: Option<BeforeLoad>,
    /// How many of the module's versions are mapped: one more per loaded
    /// version, one less when one leaves the address space.
    pub mapped: Arc<AtomicUsize>,
    /// The registry's modules and services, which the module's calls out
    /// are resolved in; `None` for a module opened on its own.
    pub linker: Option<Arc<Linker>>,
}

impl Loading {
    /// Checks a build, then loads it from memory and checks the library;
    /// records the time each took in `timings` (`admit`, `load`, `check`).
    fn load<M: ModuleSpec>(
        &self,
        id: ModuleId,
        build: &Candidate,
        generation: u64,
        events: &EventHub,
        last_error: &Arc<Mutex<Option<Error>>>,
        timings: &mut SwapTimings,
    ) -> Result<Version<M>, Error> {
        let started = Instant::now();
        check_loadable(&build.path, &build.bytes)?;
        let dynamic = Dynamic::parse(&build.bytes).map_err(|detail| Error::Malformed {
            path: build.path.clone(),
            detail: format!("its dynamic section is unreadable: {detail}"),
        })?;
        // Held until the copy is loaded: what it needs and is loaded
        // already stays loaded, and is not looked for on disk after all.
        let _dependencies =
            self.trust
                .check(build, &dynamic)
                .map_err(|problem| Error::Untrusted {
                    path: build.path.clone(),
                    problem,
                })?;
        // Another module's build (signed or not) is refused before any of
        // its code runs, not by the header check after dlopen.
        let symbol = abi::symbol_name(M::CRATE, M::MODULE);
        if !module_symbols(&build.bytes).contains(&symbol) {
            return Err(Error::NotAModule {
                path: build.path.clone(),
                module: M::MODULE,
                symbol,
            });
        }
        timings.admit = started.elapsed();
        if let Some(before_load) = &self.before_load {
            before_load(&build.path);
        }
        // What is loaded are the bytes just checked: what happens to the
        // original path from here on changes nothing.
        let loading = Instant::now();
        let expected = Expected::host(M::CRATE, M::MODULE, M::FUNCTIONS);
        let linking = Linking {
            id,
            linker: self.linker.as_deref(),
        };
        let (library, resolved, check) =
            Library::open(&build.path, &build.bytes, &expected, linking)?;
        timings.load = loading.elapsed().saturating_sub(check);
        timings.check = check;
        let version = Version {
            table: M::table(&resolved),
            generation,
            library: Some(library),
            events: events.clone(),
            last_error: last_error.clone(),
            mapped: self.mapped.clone(),
        };
        self.mapped.fetch_add(1, Ordering::Relaxed);
        Ok(version)
    }
}

impl<M: ModuleSpec> Core<M> {
    /// Loads the first version and runs `setup(None)`.
    pub fn open(source: PathBuf, loading: Loading) -> Result<Self, Error> {
        let events = EventHub::default();
        let last_error = Arc::default();
        let build = Candidate::read(&source)?;
        let mut timings = SwapTimings::default();
        let id = ModuleId::next();
        let version = loading.load::<M>(id, &build, 0, &events, &last_error, &mut timings)?;
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
            current: PinCell::new(version.clone(), pins::domain()),
            state: RwLock::new(StateSlot { version, state }),
            swapping: Mutex::new(SwapRecord { refused: None }),
            id,
            importers: Mutex::new(Importers {
                views: Vec::new(),
                pending: None,
            }),
            generation: AtomicU64::new(0),
            last_error,
            events,
            pending: Mutex::new(None),
            has_pending: AtomicBool::new(false),
            loading,
            rebuild: Mutex::new(None),
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many versions are mapped: the serving one and retired ones not
    /// unloaded yet (or that stayed resident).
    pub fn mapped_versions(&self) -> usize {
        self.loading.mapped.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<Error> {
        lock(&self.last_error).clone()
    }

    /// The in-memory file the serving version was loaded from.
    pub fn serving_image(&self) -> FileId {
        pins::pin(&self.current).library().image()
    }

    /// [`Core::serves`], once no swap is under way: a swap in progress may
    /// be about to replace what serves now, so the answer waits for it.
    pub fn serves_settled(&self, build: &Candidate) -> bool {
        let _swapping = lock(&self.swapping);
        self.serves(build)
    }

    /// Whether `build` is the build that serves: the same bytes as the
    /// serving version's in-memory file. Builds of another size are told
    /// apart without reading anything; an image that cannot be read back
    /// counts as another build (swapping it in again is harmless).
    pub fn serves(&self, build: &Candidate) -> bool {
        // Pinned, not read under the state lock: stateful calls do not
        // wait for this, nor this for them.
        pins::pin(&self.current)
            .library()
            .loaded_from(&build.bytes)
            .unwrap_or(false)
    }

    /// A rebuild on save started cargo: the next build noticed is its
    /// output, and its swap is timed from the save.
    pub fn rebuild_started(&self, run: RebuildRun) {
        *lock(&self.rebuild) = Some(run);
    }

    /// The rebuild on save is over (its output swapped in or refused, or
    /// cargo failed).
    pub fn rebuild_finished(&self) {
        *lock(&self.rebuild) = None;
    }

    /// Leaves `build` for the next `get()` to swap in.
    pub fn offer(&self, build: Candidate) {
        // Flag and slot change together, under the lock.
        let mut pending = lock(&self.pending);
        *pending = Some(build);
        self.has_pending.store(true, Ordering::Release);
    }

    /// Forgets the build left by `offer`: the file went back to what
    /// serves, so it is no longer what is on disk.
    pub fn withdraw_offer(&self) {
        let mut pending = lock(&self.pending);
        *pending = None;
        self.has_pending.store(false, Ordering::Release);
    }

    /// Swaps in the build left by `offer`, if one is still waiting.
    #[cold]
    #[inline(never)]
    pub fn take_offer(&self) {
        if self.called_from_inside() {
            // Left for a `get()` outside the module's calls.
            return;
        }
        let build = {
            let mut pending = lock(&self.pending);
            self.has_pending.store(false, Ordering::Release);
            pending.take()
        };
        if let Some(build) = build {
            let _ = self.swap_if_new(build);
        }
    }

    /// Swaps in `build`, or the file now at `source` when `None`. Records
    /// and reports the outcome.
    pub fn swap(&self, build: Option<Candidate>) -> Result<(), Error> {
        self.swap_unless_known(build, false, None)
    }

    /// Swaps in `build` unless it is what already serves or was refused
    /// already: a build that both the rebuilder and the file watcher saw is
    /// swapped in, or reported, once.
    pub fn swap_if_new(&self, build: Candidate) -> Result<(), Error> {
        self.swap_unless_known(Some(build), true, None)
    }

    /// Whether this thread is inside a stateful call of this module, where
    /// a swap would wait for that very call.
    fn called_from_inside(&self) -> bool {
        reentry::holding(std::ptr::from_ref(self).cast()).is_some()
    }

    /// [`Core::swap_if_new`] for the watcher, which tries a build that
    /// failed for a reason that may pass again as `retry` says: such a
    /// failure is reported as [`SwapEvent::Retrying`], not as a refusal.
    pub fn swap_or_retry(&self, build: Candidate, retry: RetryPlan) -> Result<(), Error> {
        self.swap_unless_known(Some(build), true, Some(retry))
    }

    fn swap_unless_known(
        &self,
        build: Option<Candidate>,
        skip_known: bool,
        retry: Option<RetryPlan>,
    ) -> Result<(), Error> {
        if self.called_from_inside() {
            let error = Error::Reentrant { module: M::MODULE };
            tracing::warn!(module = M::MODULE, %error, "swap refused");
            return Err(error);
        }
        let mut record = lock(&self.swapping);
        let build = build.map_or_else(|| Candidate::read(&self.source), Ok);
        if let (true, Ok(build)) = (skip_known, &build) {
            if self.serves(build) {
                // Whatever failed since, what serves is this build.
                *lock(&self.last_error) = None;
                return Ok(());
            }
            if let Some((_, error)) = record
                .refused
                .as_ref()
                .filter(|(identity, _)| *identity == build.identity())
            {
                return Err(error.clone());
            }
        }
        let result = build.and_then(|build| match self.swap_in(&build) {
            Ok(swapped) => Ok(swapped),
            Err(error) => {
                // A build that may load when tried again, or that failed
                // for the old version's sake, is not known bad.
                if error.condemns_the_build() {
                    record.refused = Some((build.identity(), error.clone()));
                }
                Err(error)
            }
        });
        match result {
            Ok((swapped, retired)) => {
                record.refused = None;
                *lock(&self.last_error) = None;
                // Reported once the swap is fully recorded, and before the
                // old version retires (unloading a large library takes
                // milliseconds that the new version already serves in).
                self.events.emit(swapped);
                drop(retired);
                Ok(())
            }
            Err(error) => {
                if let Some(retry) = retry.filter(|_| error.is_transient()) {
                    self.report_retry(&error, retry);
                    return Err(error);
                }
                tracing::warn!(module = M::MODULE, %error, "swap refused; the serving version keeps serving");
                self.record_error(
                    &error,
                    SwapEvent::Refused {
                        module: M::MODULE,
                        error: error.clone(),
                    },
                );
                Err(error)
            }
        }
    }

    /// Reports a failure that may pass, which the watcher will retry as
    /// `retry` says.
    pub fn report_retry(&self, error: &Error, retry: RetryPlan) {
        let RetryPlan { attempt, retry_in } = retry;
        tracing::warn!(
            module = M::MODULE,
            %error,
            attempt,
            ?retry_in,
            "swap failed for a reason that may pass; the serving version keeps serving and the same build is tried again in {retry_in:?}"
        );
        self.record_error(
            error,
            SwapEvent::Retrying {
                module: M::MODULE,
                error: error.clone(),
                attempt,
                retry_in,
            },
        );
    }

    /// Makes `error` the one [`Hot::last_error`](crate::Hot::last_error)
    /// reports, and reports `event`.
    pub fn record_error(&self, error: &Error, event: SwapEvent) {
        *lock(&self.last_error) = Some(error.clone());
        self.events.emit(event);
    }

    /// Loads `build` and swaps it in; returns the `Swapped` event to report,
    /// and the old version, which retires when the caller drops it.
    ///
    /// The swap's four stages, in order: admit and load (off the critical
    /// path: `Loading::load`), the critical section (teardown -> handoff ->
    /// setup under the state lock), publish (the new version serves), and
    /// retire (the old one unloads once its last guard and thread are gone:
    /// `Version`'s drop, `retire.rs`).
    fn swap_in(&self, build: &Candidate) -> Result<(SwapEvent, Retired<M>), Error> {
        // 1. Admit and load: trust, ELF and dependency checks, dlopen,
        //    header and layout checks. Callers keep calling meanwhile.
        let mut timings = SwapTimings {
            detect: build.read_at.saturating_duration_since(build.noticed),
            read: build.read,
            ..SwapTimings::default()
        };
        let from = self.generation.load(Ordering::Relaxed);
        let to = from + 1;
        let next = self.loading.load::<M>(
            self.id,
            build,
            to,
            &self.events,
            &self.last_error,
            &mut timings,
        )?;
        let next = Arc::new(next);
        // Every loaded caller must fit the new build as it fits the old,
        // and a caller that links from now until it is published is
        // checked against it as well (`Importers::pending`). The lock is
        // held for the check only: never across the critical section.
        let _pending = self.pend(&next)?;

        // 2. Critical section: no stateful call runs until the slot is
        //    released, so no update falls between teardown and setup.
        let critical = Instant::now();
        let mut slot = self.state.write();
        // Teardown and setup run module code, which can call the host
        // (a service): a call back into this module from there is refused
        // as re-entrant, as from inside any `&mut State` call, instead of
        // waiting for the lock this thread holds.
        let frame = Frame::new(std::ptr::from_ref(self).cast(), Holding::Exclusive);
        let _inside = Inside::enter(&frame);
        let old = slot.version.clone();
        let has_state = match &slot.state {
            SlotState::Stateless => false,
            SlotState::Live(_) => true,
            SlotState::Lost { handoff, .. } => handoff.is_some(),
        };
        if has_state && !next.library().has_setup() {
            // Swapping would drop the state without a word.
            return Err(Error::Incompatible {
                path: build.path.clone(),
                detail: "it has no `setup`, so the state the serving version hands over would be dropped; give the new version a `setup(prev: Option<..>)` that takes it".to_owned(),
            });
        }
        let handoff = match mem::replace(&mut slot.state, SlotState::Stateless) {
            SlotState::Stateless => None,
            SlotState::Lost { handoff, .. } => handoff,
            SlotState::Live(state) => match old.library().teardown(state, true) {
                TornDown::Handoff(handoff) => handoff,
                TornDown::Kept { state, error } => {
                    // The module rebuilt its state from the value it could
                    // not encode: it keeps serving as it was.
                    slot.state = SlotState::Live(state);
                    return Err(Error::Teardown {
                        module: M::MODULE,
                        panicked: false,
                        message: error,
                        state_kept: true,
                    });
                }
                TornDown::Failed(failure) => {
                    let error = Error::Teardown {
                        module: M::MODULE,
                        panicked: failure.panicked,
                        message: failure.message,
                        state_kept: false,
                    };
                    // Said on every stateful call until a swap succeeds.
                    slot.state = SlotState::Lost {
                        handoff: None,
                        reason: error.to_string(),
                    };
                    return Err(error);
                }
            },
        };
        match next.library().setup(handoff.as_deref()) {
            Ok(state) => {
                // 3. Publish: the new version owns the state and serves.
                slot.state = state.map_or(SlotState::Stateless, SlotState::Live);
                slot.version = next.clone();
                // Versions no pin holds any more come back to be dropped
                // after the lock: unloading one must not hold callers.
                let mut retired = self.current.replace(next);
                self.generation.store(to, Ordering::Release);
                drop(slot);
                retired.push(old);
                // 4. Retire: `old` drops once the swap is reported; the
                //    version unloads when its last guard and thread are gone
                //    too (see `Retiring`).
                timings.critical_section = critical.elapsed();
                self.time_from_origin(build, &mut timings);
                tracing::info!(module = M::MODULE, from, to, %timings, "hot module swapped");
                let swapped = SwapEvent::Swapped {
                    module: M::MODULE,
                    from,
                    to,
                    timings,
                };
                Ok((swapped, retired))
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

impl<M: ModuleSpec> Core<M> {
    /// Checks `next` against every caller loaded now and makes it the
    /// pending version until the returned guard drops.
    fn pend(&self, next: &Arc<Version<M>>) -> Result<Pending<'_, M>, Error> {
        let mut importers = lock(&self.importers);
        for view in importers.views.iter().filter_map(std::sync::Weak::upgrade) {
            view.check(next.library().exports())?;
        }
        importers.pending = Some(next.clone());
        Ok(Pending(&self.importers))
    }

    /// Sets `timings.total`, from the save when `build` is the output of
    /// the rebuild on save under way (and then its `debounce` and `build`),
    /// else from when `build` was noticed.
    fn time_from_origin(&self, build: &Candidate, timings: &mut SwapTimings) {
        let now = Instant::now();
        // A build noticed before cargo started is not its output.
        let run = lock(&self.rebuild).filter(|run| build.noticed >= run.started);
        let origin = match run {
            Some(RebuildRun { saved, started }) => {
                timings.debounce = Some(started.saturating_duration_since(saved));
                timings.build = Some(build.noticed.saturating_duration_since(started));
                saved
            }
            None => build.noticed,
        };
        timings.total = now.saturating_duration_since(origin);
    }
}

impl<M: ModuleSpec> Drop for Core<M> {
    fn drop(&mut self) {
        let slot = self.state.get_mut();
        if let SlotState::Live(state) = mem::replace(&mut slot.state, SlotState::Stateless) {
            if let TornDown::Failed(failure) = slot.version.library().teardown(state, false) {
                tracing::warn!(module = M::MODULE, message = %failure.message, "teardown failed while dropping the module");
            }
        }
    }
}

fn setup_or_lost<M: ModuleSpec>(
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
