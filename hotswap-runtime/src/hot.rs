//! `Hot`: one hot-swappable module inside a host.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use crate::error::Error;
use crate::events::SwapEvent;
use crate::export::Export;
use crate::ffi::link::{LinkTarget, Linker};
use hotswap_boundary::future::{FfiFuture, LeasedCall};
use crate::ffi::loader::{ExclusiveState, ModulePanic, SharedState};
use crate::ffi::module::{ModuleSpec, Shim};
use crate::rebuild::{self, RebuildPlan, DEBOUNCE};
use crate::ffi::reentry::{self, Frame, Holding, Inside};
use crate::residency::FileId;
use crate::serve::options::{Options, SwapMode};
use crate::serve::pin::Pin;
use crate::serve::pins;
use crate::serve::swap::{Core, Loading, SlotState, StateSlot, Version};
use crate::watch::{self, WatchThread};

/// A module annotated with `#[hot_module]`: the bound on [`Hot`].
///
/// The macro implements it for a marker type inside each module, and the
/// module's `Hot` is `hotswap_runtime::Hot<that marker>`; write
/// `Hot<M: HotModule>` to be generic over hot modules. Sealed: only
/// `#[hot_module]` implements it (its supertraits are in the runtime's
/// private, versioned path), because the runtime relies on the functions
/// it lists being the ones the macro exported and checked.
pub trait HotModule: ModuleSpec {
    /// What `Hot::get` returns: one method per exported function.
    type Guard<'a>;
    /// Wraps a pinned version into the typed guard.
    fn guard(pinned: Pinned<'_, Self>) -> Self::Guard<'_>;
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
        Self::open_linked(path.as_ref(), options, None)
    }

    /// [`Hot::open_with`], resolving the module's calls to other modules
    /// and host services in `linker` (a registry's).
    pub(crate) fn open_linked(
        path: &Path,
        options: Options,
        linker: Option<Arc<Linker>>,
    ) -> Result<Self, Error> {
        let source = path.to_owned();
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
            mapped: Arc::default(),
            linker,
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
    /// [`SwapEvent::Refused`], the log). Neither `get()` nor the guard's
    /// drop runs a locked instruction or writes memory another thread
    /// reads on its own path: the version is pinned through a slot of the
    /// calling thread (a hazard pointer; see
    /// [`docs::performance`](crate::docs::performance)).
    ///
    /// Keep the guard short-lived: the version it pinned stays loaded until
    /// it drops (it never blocks a swap). Its stateless calls run on the
    /// pinned version; its stateful calls run on the version that owns the
    /// state, which after a swap is the newer one, so no call ever sees a
    /// state its version does not own.
    #[inline(always)]
    pub fn get(&self) -> M::Guard<'_> {
        if self.shared.has_pending.load(Ordering::Acquire) {
            self.shared.take_offer();
        }
        // Pins through a slot of this thread's own: plain loads and stores,
        // no shared cache line written (see `serve/pin.rs`).
        M::guard(Pinned {
            shared: &self.shared,
            version: pins::pin(&self.shared.current),
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

    /// How many versions of the module are mapped: the serving one, and
    /// retired ones that a guard or a thread they started still keeps (or
    /// that stayed resident after `dlclose`,
    /// [`SwapEvent::StayedResident`]).
    pub fn mapped_versions(&self) -> usize {
        self.shared.mapped_versions()
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

    /// This module, for the modules of its registry to call.
    pub(crate) fn link_target(&self) -> Arc<dyn LinkTarget> {
        self.shared.clone()
    }

    /// The modules the serving version calls (`uses(...)`), `crate::module`.
    pub fn uses(&self) -> Vec<String> {
        self.shared.uses()
    }

    /// The in-memory file the serving version was loaded from
    /// (`/memfd:hotswap:` and the library's file name in
    /// `/proc/self/maps`); [`FileId::is_mapped`] tells whether it is still
    /// mapped.
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
    version: Pin<'a, Version<M>>,
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

    /// Calls an `async fn` on the pinned version: the future it returns
    /// holds that version (a strong reference, not this thread's pin) until
    /// it completes or is dropped, so an in-flight call finishes on the
    /// version it started on, whatever swaps meanwhile; `convert` turns its
    /// output into host values while the version is still held.
    #[inline]
    pub fn call_async<E, T, R, C>(
        &self,
        select: impl FnOnce(&M::Table) -> &Shim<E>,
        args: E::Args<'_>,
        convert: C,
    ) -> LeasedCall<T, C, Arc<dyn std::any::Any + Send + Sync>>
    where
        E: Export<Ret = FfiFuture<T>>,
        C: FnOnce(T) -> R,
    {
        let lease = self.version.to_arc();
        let future = resume(select(&lease.table).invoke_stateless(args));
        LeasedCall::new(future, convert, lease)
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
        if std::ptr::eq(Arc::as_ptr(owner), &raw const *self.version) {
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
    panic!("{}", reentry::reentered_message(M::MODULE, function, wanted))
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
