//! `Hot`: one hot-swappable module inside a host.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::events::SwapEvent;
use crate::export::Export;
use crate::loader::{ExclusiveState, ModulePanic, SharedState};
use crate::module::{HotModule, Shim};
use crate::rebuild::{self, RebuildPlan, DEBOUNCE};
use crate::reentry::{self, Frame, Holding, Inside};
use crate::residency::FileId;
use crate::swap::{BeforeLoad, Core, Loading, SlotState, StateSlot, Version};
use crate::trust::{PublicKey, Sha256Digest, TrustPolicy};
use crate::watch::{self, WatchThread};

/// Where a detected build is swapped in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwapMode {
    /// A background thread watches the library file and swaps each new build
    /// in as soon as its writer has finished. Callers never do swap work. A
    /// build that fails for a reason that may pass
    /// ([`Error::is_transient`]) is tried again with a growing delay
    /// ([`SwapEvent::Retrying`]).
    #[default]
    Background,
    /// The background thread detects and reads new builds; the first `get()`
    /// that sees one swaps it in (the classic `GetModule` behaviour).
    OnGet,
    /// Nothing is watched: only `reload()` swaps.
    Manual,
}

/// How [`Hot::open_with`] sets a module up.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Options {
    pub(crate) swap_mode: SwapMode,
    pub(crate) rebuild_crate: Option<PathBuf>,
    pub(crate) build_profile: Option<String>,
    pub(crate) rebuild_debounce: Option<Duration>,
    pub(crate) trust: TrustPolicy,
    pub(crate) before_load: Option<BeforeLoad>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("swap_mode", &self.swap_mode)
            .field("rebuild_crate", &self.rebuild_crate)
            .field("build_profile", &self.build_profile)
            .field("rebuild_debounce", &self.rebuild_debounce)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Default options: [`SwapMode::Background`] and the default trust
    /// checks (see [`trust`](crate::trust)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses where detected builds are swapped in.
    pub fn swap_mode(mut self, mode: SwapMode) -> Self {
        self.swap_mode = mode;
        self
    }

    /// Rebuilds the module crate in `crate_dir` when one of its sources
    /// changes: its `.rs` files, `Cargo.toml` or `Cargo.lock`, anywhere
    /// under `crate_dir` outside target directories.
    ///
    /// A burst of saves is one `cargo build --lib`, run after the sources
    /// have been quiet for a moment (150 ms; see
    /// [`Options::rebuild_debounce`]), in the profile, target directory and
    /// target triple of the library given to [`Hot::open_with`], read off
    /// its path (`<target-dir>/<profile>/lib….so`). The built library is
    /// swapped in as the [`SwapMode`] says; with [`SwapMode::Manual`]
    /// nothing is watched and this is ignored.
    ///
    /// Cargo's output reaches the host as [`SwapEvent::Built`] or
    /// [`SwapEvent::BuildFailed`] and in the log. A failed build leaves the
    /// serving version serving and becomes [`Hot::last_error`].
    pub fn rebuild_on_save(mut self, crate_dir: impl Into<PathBuf>) -> Self {
        self.rebuild_crate = Some(crate_dir.into());
        self
    }

    /// The cargo profile rebuild on save uses, instead of the one read off
    /// the library's path (needed when the library is not in a cargo target
    /// directory; cargo's default target directory is used then, and the
    /// library cargo builds there is swapped in, while [`Hot::reload`] and
    /// the watcher keep reading the path given to `open`).
    pub fn build_profile(mut self, profile: impl Into<String>) -> Self {
        self.build_profile = Some(profile.into());
        self
    }

    /// Loads libraries whose file or directory is writable by other users
    /// or owned by another user. Off by default: anyone who can write there
    /// can run code in this process. The same goes for the libraries a
    /// build needs and their directories (see [`trust`](crate::trust)). For
    /// development only; logged as a warning when opening.
    pub fn allow_insecure_files(mut self, allow: bool) -> Self {
        self.trust.check_permissions = !allow;
        self
    }

    /// Loads only builds whose SHA-256 is one of `digests` (in addition to
    /// every other check). Can be given more than once; the sets add up.
    ///
    /// A digest pins the module's bytes only, so a pinned build must not
    /// load anything else from disk: it may have no `DT_RUNPATH` or
    /// `DT_RPATH`, and every library it needs must already be loaded in the
    /// process (link it into the host, or preload it).
    pub fn allow_digests(mut self, digests: impl IntoIterator<Item = Sha256Digest>) -> Self {
        self.trust
            .allowed_digests
            .get_or_insert_with(Default::default)
            .extend(digests);
        self
    }

    /// Loads only builds with a detached signature beside them
    /// ([`trust::signature_path`](crate::trust::signature_path)) that one
    /// of `keys` verifies. Checked before `dlopen`, so an unsigned, changed
    /// or wrongly signed build runs none of its code. Can be given more than
    /// once; the keys add up. As with [`Options::allow_digests`], a signed
    /// build may load nothing else from disk: no `DT_RUNPATH`/`DT_RPATH`,
    /// and every library it needs already loaded.
    pub fn trust_keys(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.trust.keys.extend(keys);
        self
    }

    /// Test hook (feature `test-hooks`): runs after a build passed the
    /// trust checks, right before it is loaded, with the path it was read
    /// from.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __before_load(mut self, hook: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.before_load = Some(Arc::new(hook));
        self
    }

    /// How long the sources must be quiet before rebuild on save builds.
    pub fn rebuild_debounce(mut self, quiet: Duration) -> Self {
        self.rebuild_debounce = Some(quiet);
        self
    }
}

/// A hot-swappable module: the generated `Hot` of a `#[hot_module]` is this
/// type for that module.
///
/// `Hot` is `Send + Sync`; share it with `Arc` or by reference. Dropping it
/// stops the watcher, runs the module's `teardown` and unloads every
/// version. Nothing is ever written to disk, so nothing is left there,
/// whatever way the process ends.
pub struct Hot<M: HotModule> {
    // First: stopped (and joined) before the shared core drops.
    rebuilder: Option<WatchThread>,
    watcher: Option<WatchThread>,
    shared: Arc<Core<M>>,
}

impl<M: HotModule> Hot<M> {
    /// Loads the module library at `path`, checks it, runs `setup(None)`,
    /// and starts watching `path` for new builds ([`SwapMode::Background`]).
    ///
    /// The library is read once, checked, and those very bytes are loaded
    /// from a sealed in-memory file (`memfd`), so the original can be
    /// rebuilt in place, nothing is written to disk, and nobody can change
    /// what was checked before it is loaded.
    ///
    /// Before loading, the file and its directory must belong to the current
    /// user (or root) and be writable only by their owner, and the build must
    /// pass the digest and signature checks `Options` asks for (see
    /// [`trust`](crate::trust)); a refused build runs none of its code. Past
    /// those checks, loading runs the library's initializers before its
    /// header can be checked: pin what may load when others can place files
    /// where the host looks. The full list is in the crate docs.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, Options::default())
    }

    /// [`Hot::open`] with [`Options`].
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self, Error> {
        let source = path.as_ref().to_owned();
        // Checked before loading: a mistake here costs no module setup.
        let rebuild = options
            .rebuild_crate
            .map(|crate_dir| {
                RebuildPlan::new(
                    &source,
                    &crate_dir,
                    options.build_profile.as_deref(),
                    options.rebuild_debounce.unwrap_or(DEBOUNCE),
                )
            })
            .transpose()?;
        if !options.trust.check_permissions {
            tracing::warn!(path = %source.display(), "permission checks are off (Options::allow_insecure_files): whoever can write this library or its directory can run code in this process");
        }
        let loading = Loading {
            trust: options.trust,
            before_load: options.before_load,
        };
        let shared = Arc::new(Core::<M>::open(source, loading)?);
        tracing::info!(module = M::MODULE, path = %shared.source.display(), mode = ?options.swap_mode, "hot module loaded");
        let (watcher, rebuilder) = match options.swap_mode {
            SwapMode::Manual => (None, None),
            mode => (
                Some(watch::start(shared.clone(), mode)?),
                rebuild
                    .map(|plan| rebuild::start(shared.clone(), plan, mode))
                    .transpose()?,
            ),
        };
        Ok(Self {
            rebuilder,
            watcher,
            shared,
        })
    }

    /// Pins the serving version and returns the typed accessor, with one
    /// method per exported function.
    ///
    /// Never fails: if a new build cannot be swapped in, the old version
    /// keeps serving and the error is reported ([`Hot::last_error`],
    /// [`SwapEvent::Refused`], the log). Its fast path reads atomics and
    /// writes only to a slot of the calling thread.
    ///
    /// Keep the guard short-lived: the version it pinned stays loaded until
    /// it drops (it never blocks a swap). Its stateless calls run on the
    /// pinned version; its stateful calls run on the version that owns the
    /// state, which after a swap is the newer one, so no call ever sees a
    /// state its version does not own.
    pub fn get(&self) -> M::Guard<'_> {
        if self.shared.has_pending.load(Ordering::Acquire) {
            self.shared.take_offer();
        }
        // `load` pins through a per-thread slot: no shared cache line is
        // written, so callers on different threads do not slow each other.
        M::guard(Pinned {
            shared: &self.shared,
            version: self.shared.current.load(),
        })
    }

    /// Swaps in the library now at the path given to `open`, whether or not
    /// it changed.
    ///
    /// Loading and checking happen before the swap; then, as one critical
    /// section that no call can enter, the old version's `teardown` runs, its
    /// value is encoded into a host-owned buffer, and the new version's
    /// `setup` receives it. On any error the old version keeps serving with
    /// its state as it was (if the new `setup` fails, the old one takes the
    /// same value back).
    pub fn reload(&self) -> Result<(), Error> {
        self.shared.swap(None)
    }

    /// How many swaps succeeded since `open`.
    pub fn generation(&self) -> u64 {
        self.shared.generation()
    }

    /// The error of the last swap attempt, if it failed.
    pub fn last_error(&self) -> Option<Error> {
        self.shared.last_error()
    }

    /// Receives every [`SwapEvent`] from now on.
    pub fn subscribe(&self) -> Receiver<SwapEvent> {
        self.shared.events.subscribe()
    }

    /// The library path given to `open`.
    pub fn path(&self) -> &Path {
        &self.shared.source
    }

    /// The in-memory file the serving version was loaded from: what
    /// [`residency`](crate::residency) reports it as while it is mapped
    /// (its name there is `/memfd:hotswap:` and the library's file name).
    pub fn serving_image(&self) -> FileId {
        self.shared.serving_image()
    }
}

impl<M: HotModule> Drop for Hot<M> {
    fn drop(&mut self) {
        // Both threads hold the shared core; stop them so it drops here.
        drop(self.rebuilder.take());
        drop(self.watcher.take());
    }
}

impl<M: HotModule> std::fmt::Debug for Hot<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot")
            .field("module", &M::MODULE)
            .field("path", &self.shared.source)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// A version pinned by a guard: the generated guard methods call through it.
pub struct Pinned<'a, M: HotModule> {
    shared: &'a Core<M>,
    version: arc_swap::Guard<Arc<Version<M>>>,
}

impl<M: HotModule> Pinned<'_, M> {
    /// Which swap generation the pinned version came from (0 = opened).
    pub fn generation(&self) -> u64 {
        self.version.generation
    }

    /// Calls a stateless function on the pinned version.
    #[inline(always)]
    pub fn call<R>(&self, call: impl FnOnce(&M::Table) -> Result<R, ModulePanic>) -> R {
        resume(call(&self.version.table))
    }

    /// Calls a `&State` function on the version that owns the state.
    ///
    /// `select` picks the function's shim out of a version's table; `call`
    /// calls it.
    ///
    /// # Panics
    /// Re-entered from a `&mut State` call of the same module on this
    /// thread (a callback from the module into the host): the outer call's
    /// exclusive borrow of the state is still live. A `&State` call inside a
    /// `&State` call is served.
    #[inline]
    pub fn call_shared<E: Export, R>(
        &self,
        select: impl Fn(&M::Table) -> &Shim<E>,
        call: impl FnOnce(&Shim<E>, &SharedState<'_>) -> Result<R, ModulePanic>,
    ) -> R {
        let pinned = select(&self.version.table);
        let module = self.module_key();
        let slot = match reentry::holding(module) {
            None => self.shared.state.read(),
            // Nested in our own read: never wait behind a queued writer,
            // which would wait for the outer call.
            Some(Holding::Shared) => self.shared.state.read_recursive(),
            Some(Holding::Exclusive) => reentered::<M>(E::NAME, Holding::Shared),
        };
        let frame = Frame::new(module, Holding::Shared);
        let inside = Inside::enter(&frame);
        let shim = self.owner_shim(&slot.version, pinned, &select);
        let outcome = match &slot.state {
            SlotState::Live(state) => call(shim, &state.shared()),
            SlotState::Stateless => call(shim, &SharedState::absent()),
            SlotState::Lost { reason, .. } => Err(state_lost::<M>(reason)),
        };
        drop(inside);
        drop(slot);
        resume(outcome)
    }

    /// Calls a `&mut State` function on the version that owns the state.
    ///
    /// `select` picks the function's shim out of a version's table; `call`
    /// calls it.
    ///
    /// # Panics
    /// Re-entered from any stateful call of the same module on this thread
    /// (a callback from the module into the host): the outer call's borrow
    /// of the state is still live, so no exclusive one can be made.
    #[inline]
    pub fn call_exclusive<E: Export, R>(
        &self,
        select: impl Fn(&M::Table) -> &Shim<E>,
        call: impl FnOnce(&Shim<E>, &mut ExclusiveState<'_>) -> Result<R, ModulePanic>,
    ) -> R {
        let pinned = select(&self.version.table);
        let module = self.module_key();
        if reentry::holding(module).is_some() {
            reentered::<M>(E::NAME, Holding::Exclusive);
        }
        let mut slot = self.shared.state.write();
        let frame = Frame::new(module, Holding::Exclusive);
        let inside = Inside::enter(&frame);
        let StateSlot { version, state } = &mut *slot;
        let shim = self.owner_shim(version, pinned, &select);
        let outcome = match state {
            SlotState::Live(state) => call(shim, &mut state.exclusive()),
            SlotState::Stateless => call(shim, &mut ExclusiveState::absent()),
            SlotState::Lost { reason, .. } => Err(state_lost::<M>(reason)),
        };
        drop(inside);
        drop(slot);
        resume(outcome)
    }

    #[inline(always)]
    fn module_key(&self) -> *const () {
        std::ptr::from_ref(self.shared).cast()
    }

    /// The shim to call on `owner`, the version that owns the state: the
    /// pinned one's unless a swap happened since `get()`.
    ///
    /// The pinned shim was read before the state lock was taken, so in the
    /// common case nothing more has to be read from memory once it is held.
    #[inline(always)]
    fn owner_shim<'s, E>(
        &'s self,
        owner: &'s Arc<Version<M>>,
        pinned: &'s Shim<E>,
        select: &impl Fn(&M::Table) -> &Shim<E>,
    ) -> &'s Shim<E> {
        if std::ptr::eq(Arc::as_ptr(owner), Arc::as_ptr(&self.version)) {
            pinned
        } else {
            select(&owner.table)
        }
    }
}

/// A stateful call of a module from inside another one of its calls, on
/// the same thread, that cannot be served.
#[cold]
#[inline(never)]
fn reentered<M: HotModule>(function: &str, wanted: Holding) -> ! {
    let (wanted, held) = match wanted {
        Holding::Shared => ("`&State`", "a `&mut State`"),
        Holding::Exclusive => ("`&mut State`", "a stateful"),
    };
    panic!(
        "hotswap: re-entrant call of `{function}` (needs {wanted}) on module `{}` from inside {held} call of the same module on this thread, such as a callback from the module into the host: the outer call's borrow of the state is still live; make this call after the outer call returns, or have the outer function take `&State` and this one `&State` too",
        M::MODULE
    )
}

fn state_lost<M: HotModule>(reason: &str) -> ModulePanic {
    ModulePanic(format!(
        "module `{}` has no live state: {reason}",
        M::MODULE
    ))
}

/// Resumes a module panic in the caller, carrying the module's message.
#[inline(always)]
fn resume<R>(outcome: Result<R, ModulePanic>) -> R {
    match outcome {
        Ok(value) => value,
        Err(panic) => resume_panic(panic),
    }
}

#[cold]
#[inline(never)]
fn resume_panic(ModulePanic(message): ModulePanic) -> ! {
    std::panic::panic_any(message)
}
