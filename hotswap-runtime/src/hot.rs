//! `Hot`: one hot-swappable module inside a host.

use std::mem;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::error::Error;
use crate::loader::{ExclusiveState, Library, ModulePanic, SharedState, StatePtr};
use crate::module::HotModule;

/// How [`Hot::open_with`] sets a module up.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Options {
    copy_dir: Option<PathBuf>,
}

impl Options {
    /// Default options: private copies go to a fresh directory, readable
    /// only by the current user, under the system temporary directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the private directory for library copies under `dir`
    /// instead of the system temporary directory.
    pub fn copy_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.copy_dir = Some(dir.into());
        self
    }
}

/// One loaded version of a module.
pub(crate) struct Version<M: HotModule> {
    table: M::Table,
    number: u64,
    // Last: unloads the library after everything that points into it.
    library: Library,
}

/// Where the module state is.
enum SlotState {
    /// The serving version has no state.
    Stateless,
    /// The serving version's live state.
    Live(StatePtr),
    /// Neither version could take the handed-over state; kept for the next
    /// reload.
    Lost {
        handoff: Option<Vec<u8>>,
        reason: String,
    },
}

/// The state together with the version that owns it: a stateful call always
/// runs on the version whose `setup` made the state it touches.
struct StateSlot<M: HotModule> {
    version: Arc<Version<M>>,
    state: SlotState,
}

/// A hot-swappable module: the generated `Hot` of a `#[hot_module]` is this
/// type for that module.
///
/// `Hot` is `Send + Sync`; share it with `Arc` or by reference.
pub struct Hot<M: HotModule> {
    source: PathBuf,
    current: ArcSwap<Version<M>>,
    state: RwLock<StateSlot<M>>,
    swapping: Mutex<()>,
    generation: AtomicU64,
    loads: AtomicU64,
    last_error: Mutex<Option<Error>>,
    // Last: removed after every version (and its copy) is gone.
    copies: tempfile::TempDir,
}

impl<M: HotModule> Hot<M> {
    /// Loads the module library at `path`, checks it, and runs
    /// `setup(None)`.
    ///
    /// The library is copied to a private directory first and the copy is
    /// loaded, so the original can be rebuilt in place.
    ///
    /// Loading a library runs its initializers before anything can be
    /// checked: open only libraries you trust. What is checked afterwards is
    /// listed on [`Error`] and in the crate docs.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Options::default())
    }

    /// [`Hot::open`] with [`Options`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        let source = path.as_ref().to_owned();
        let base = options.copy_dir.unwrap_or_else(std::env::temp_dir);
        // tempfile creates the directory with mode 0700.
        let copies = tempfile::Builder::new()
            .prefix("hotswap-")
            .tempdir_in(&base)
            .map_err(|error| Error::Read {
                path: base.clone(),
                source: Arc::new(error),
            })?;
        let loads = AtomicU64::new(0);
        let version = Arc::new(load::<M>(&source, &copies, &loads, 0)?);
        let state = match version.library.setup(None) {
            Ok(state) => state.map_or(SlotState::Stateless, SlotState::Live),
            Err(failure) => {
                return Err(Error::Setup {
                    module: M::MODULE,
                    panicked: failure.panicked,
                    message: failure.message,
                })
            }
        };
        tracing::info!(module = M::MODULE, path = %source.display(), "hot module loaded");
        Ok(Self {
            source,
            current: ArcSwap::new(version.clone()),
            state: RwLock::new(StateSlot { version, state }),
            swapping: Mutex::new(()),
            generation: AtomicU64::new(0),
            loads,
            last_error: Mutex::new(None),
            copies,
        })
    }

    /// Pins the serving version and returns the typed accessor, with one
    /// method per exported function.
    ///
    /// Keep the guard short-lived: the version it pinned stays loaded until
    /// it drops. Its stateless calls run on the pinned version; its stateful
    /// calls run on the version that owns the state, which after a swap is
    /// the newer one, so a guard never sees a state its version does not own.
    pub fn get(&self) -> M::Guard<'_> {
        M::guard(Pinned {
            hot: self,
            version: self.current.load_full(),
        })
    }

    /// Swaps in the library now at the path given to `open`.
    ///
    /// Loading and checking happen before the swap; then, as one critical
    /// section that no call can enter, the old version's `teardown` runs, its
    /// value is encoded into a host-owned buffer, and the new version's
    /// `setup` receives it. On any error the old version keeps serving with
    /// its state as it was (if the new `setup` fails, the old one takes the
    /// same value back).
    pub fn reload(&self) -> Result<(), Error> {
        let _one_swap_at_a_time = lock(&self.swapping);
        let result = self.swap_in();
        match &result {
            Ok(()) => *lock(&self.last_error) = None,
            Err(error) => {
                tracing::warn!(module = M::MODULE, %error, "swap refused; the serving version keeps serving");
                *lock(&self.last_error) = Some(error.clone());
            }
        }
        result
    }

    /// How many swaps succeeded since `open`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The error of the last swap attempt, if it failed.
    pub fn last_error(&self) -> Option<Error> {
        lock(&self.last_error).clone()
    }

    /// The library path given to `open`.
    pub fn path(&self) -> &Path {
        &self.source
    }

    fn swap_in(&self) -> Result<(), Error> {
        let started = Instant::now();
        let number = self.generation.load(Ordering::Relaxed) + 1;
        let next = Arc::new(load::<M>(&self.source, &self.copies, &self.loads, number)?);
        let loaded = started.elapsed();

        let critical = Instant::now();
        let mut slot = write(&self.state);
        let old = slot.version.clone();
        let handoff = match mem::replace(&mut slot.state, SlotState::Stateless) {
            SlotState::Stateless => None,
            SlotState::Lost { handoff, .. } => handoff,
            SlotState::Live(state) => match old.library.teardown(state, true) {
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
        match next.library.setup(handoff.as_deref()) {
            Ok(state) => {
                slot.state = state.map_or(SlotState::Stateless, SlotState::Live);
                slot.version = next.clone();
                self.current.store(next);
                self.generation.fetch_add(1, Ordering::AcqRel);
                drop(slot);
                tracing::info!(
                    module = M::MODULE,
                    generation = number,
                    load_and_check = ?loaded,
                    critical_section = ?critical.elapsed(),
                    "hot module swapped"
                );
                Ok(())
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

impl<M: HotModule> Drop for Hot<M> {
    fn drop(&mut self) {
        let slot = self
            .state
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let SlotState::Live(state) = mem::replace(&mut slot.state, SlotState::Stateless) {
            if let Err(failure) = slot.version.library.teardown(state, false) {
                tracing::warn!(module = M::MODULE, message = %failure.message, "teardown failed while dropping the module");
            }
        }
    }
}

impl<M: HotModule> std::fmt::Debug for Hot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("module", &M::MODULE)
            .field("path", &self.source)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// A version pinned by a guard: the generated guard methods call through it.
pub struct Pinned<'a, M: HotModule> {
    hot: &'a Hot<M>,
    version: Arc<Version<M>>,
}

impl<M: HotModule> Pinned<'_, M> {
    /// Which swap generation the pinned version came from (0 = opened).
    pub fn version_number(&self) -> u64 {
        self.version.number
    }

    /// Calls a stateless function on the pinned version.
    pub fn call<R>(&self, call: impl FnOnce(&M::Table) -> Result<R, ModulePanic>) -> R {
        resume(call(&self.version.table))
    }

    /// Calls a `&State` function on the version that owns the state.
    pub fn call_shared<R>(
        &self,
        call: impl FnOnce(&M::Table, &SharedState<'_>) -> Result<R, ModulePanic>,
    ) -> R {
        let slot = read(&self.hot.state);
        let outcome = match &slot.state {
            SlotState::Live(state) => call(&slot.version.table, &state.shared()),
            SlotState::Stateless => call(&slot.version.table, &SharedState::absent()),
            SlotState::Lost { reason, .. } => Err(state_lost::<M>(reason)),
        };
        drop(slot);
        resume(outcome)
    }

    /// Calls a `&mut State` function on the version that owns the state.
    pub fn call_exclusive<R>(
        &self,
        call: impl FnOnce(&M::Table, &mut ExclusiveState<'_>) -> Result<R, ModulePanic>,
    ) -> R {
        let mut slot = write(&self.hot.state);
        let StateSlot { version, state } = &mut *slot;
        let outcome = match state {
            SlotState::Live(state) => call(&version.table, &mut state.exclusive()),
            SlotState::Stateless => call(&version.table, &mut ExclusiveState::absent()),
            SlotState::Lost { reason, .. } => Err(state_lost::<M>(reason)),
        };
        drop(slot);
        resume(outcome)
    }
}

fn load<M: HotModule>(
    source: &Path,
    copies: &tempfile::TempDir,
    loads: &AtomicU64,
    number: u64,
) -> Result<Version<M>, Error> {
    let file_name = source
        .file_name()
        .map_or_else(|| "module".into(), |name| name.to_string_lossy());
    let copy = copies.path().join(format!(
        "{}.{file_name}",
        loads.fetch_add(1, Ordering::Relaxed)
    ));
    let (library, resolved) = Library::open(source, copy, M::CRATE, M::MODULE, M::FUNCTIONS)?;
    Ok(Version {
        table: M::table(&resolved),
        number,
        library,
    })
}

fn setup_or_lost<M: HotModule>(
    version: &Version<M>,
    handoff: Option<Vec<u8>>,
    why: &str,
) -> SlotState {
    match version.library.setup(handoff.as_deref()) {
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

fn state_lost<M: HotModule>(reason: &str) -> ModulePanic {
    ModulePanic(format!(
        "module `{}` has no live state: {reason}",
        M::MODULE
    ))
}

/// Resumes a module panic in the caller, carrying the module's message.
fn resume<R>(outcome: Result<R, ModulePanic>) -> R {
    match outcome {
        Ok(value) => value,
        Err(ModulePanic(message)) => std::panic::panic_any(message),
    }
}

// Module code never runs while a lock is held in a way that can poison it
// (panics are caught at the boundary), so poisoning carries no information.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
