//! Calls out of a module, the host side: into the other hot modules of its
//! registry and into the services the host provides (the module side is
//! `hotswap_boundary::link`).
//!
//! When a version loads, [`HostLinks::resolve`] resolves what its
//! descriptor declares: each module it `uses` must be in the registry
//! ([`Linker`]), fit what the caller was compiled against (every function
//! present, no more access to the state, `abi_stable` layouts compatible:
//! [`View::check`], the same checks as the host's own calls) and not close
//! a cycle of calls; each service must be provided with a compatible
//! layout. The caller's view is then attached to the callee
//! ([`LinkTarget::attach`]), so that every later swap of the callee is
//! checked against it, until the caller's version unloads.
//!
//! A call arrives in [`link_call`] from the module's image: the callee
//! ([`LinkTarget::call`], implemented by the swap core) pins its serving
//! version, takes its state lock, and runs the module's thunk with the
//! function's entry point, found by name once per callee version and
//! cached ([`View::shim`]).

use std::any::Any;
use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility_with_globals, CheckingGlobals,
};
use abi_stable::std_types::{RSlice, RString};
use abi_stable::type_layout::TypeLayout;
use abi_stable::StableAbi;
use hotswap_boundary::link::HostService;

use crate::abi::{
    self, FnEntry, HostLink, Lease, ModuleDescriptor, StateAccess, Thunk, STATUS_FAILED,
    STATUS_OK,
};
use crate::error::Error;

/// A hot module that others can call: the swap core of a module in a
/// registry.
pub(crate) trait LinkTarget: Send + Sync {
    /// `crate::module`.
    fn name(&self) -> String;
    /// Identifies the module among the linked ones, for cycle checks.
    fn id(&self) -> ModuleId;
    /// Checks `view` against the serving version and, if it fits, keeps it
    /// (weakly) so that every later swap is checked against it too, until
    /// [`View::detach`].
    fn attach(&self, view: &Arc<View>) -> Result<(), Error>;
    /// Runs `run` with the entry point of function `function` of `view` on
    /// the version that serves it, and the state locked as the function
    /// needs (null for a stateless function). `Err` says why the call
    /// could not be made; `run` did not run then.
    fn call(
        &self,
        view: &View,
        function: usize,
        run: &mut dyn FnMut(*const c_void, *mut c_void),
    ) -> Result<(), String>;
    /// Runs `run` with the entry point of `async fn` `function` of `view`
    /// on the serving version, and returns a hold on that version, which
    /// the future `run` made keeps until it is done.
    fn call_leased(
        &self,
        view: &View,
        function: usize,
        run: &mut dyn FnMut(*const c_void, *mut c_void),
    ) -> Result<Arc<dyn Any + Send + Sync>, String>;
}

/// Identifies a linked module for as long as the process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleId(u64);

impl ModuleId {
    /// A new identity, never given out before.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What the modules of one registry can link to: the modules by symbol,
/// the services by type, and every attached view (the edges of the call
/// graph, for cycle checks).
///
/// It holds the modules weakly: each module's swap core holds the linker
/// (to link its new versions), so a strong reference back would keep
/// every module of a dropped registry alive.
#[derive(Default)]
pub(crate) struct Linker {
    modules: RwLock<Vec<(String, std::sync::Weak<dyn LinkTarget>)>>,
    services: RwLock<Vec<Provided>>,
    views: Mutex<Vec<std::sync::Weak<View>>>,
}

/// A service the host provides.
struct Provided {
    key: String,
    layout: &'static TypeLayout,
    /// Owns the value `address` points at.
    _value: Arc<dyn Any + Send + Sync>,
    address: *const c_void,
}

// SAFETY: `address` points into `_value`, which is `Send + Sync`.
unsafe impl Send for Provided {}
// SAFETY: as above.
unsafe impl Sync for Provided {}

/// How services are told apart: the package that defines the type, its
/// module path and name. Whether the definitions agree is the layout
/// check's business.
fn service_key(layout: &TypeLayout) -> String {
    format!("{}::{}::{}", layout.package(), layout.mod_path(), layout.name())
}

impl Linker {
    /// Makes the module `target` (exported under `symbol`) callable.
    pub(crate) fn add_module(&self, symbol: String, target: &Arc<dyn LinkTarget>) {
        write(&self.modules).push((symbol, Arc::downgrade(target)));
    }

    /// Provides `service` to every module that declares its type.
    pub(crate) fn provide<T: HostService>(&self, service: T) -> Result<(), Error> {
        let layout = <T as StableAbi>::LAYOUT;
        let key = service_key(layout);
        let mut services = write(&self.services);
        if services.iter().any(|provided| provided.key == key) {
            return Err(Error::AlreadyProvided {
                service: layout.full_type().to_string(),
            });
        }
        let value: Arc<T> = Arc::new(service);
        let address = Arc::as_ptr(&value).cast::<c_void>();
        services.push(Provided {
            key,
            layout,
            _value: value,
            address,
        });
        Ok(())
    }

    fn module(&self, symbol: &str) -> Option<Arc<dyn LinkTarget>> {
        read(&self.modules)
            .iter()
            .find(|(name, _)| name == symbol)
            .and_then(|(_, target)| target.upgrade())
    }
}

/// Whether calls from `from` reach `to` through the `attached` views
/// (a module reaches itself).
fn reaches(attached: &[std::sync::Weak<View>], from: ModuleId, to: ModuleId) -> bool {
    let edges: Vec<(ModuleId, ModuleId)> = attached
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .filter(|view| view.is_attached())
        .map(|view| (view.importer_id, view.target.id()))
        .collect();
    let mut seen = vec![from];
    let mut next = vec![from];
    while let Some(at) = next.pop() {
        if at == to {
            return true;
        }
        for &(_, callee) in edges.iter().filter(|(caller, _)| *caller == at) {
            if !seen.contains(&callee) {
                seen.push(callee);
                next.push(callee);
            }
        }
    }
    false
}

/// One function of a view, copied out of the caller's image.
struct ViewFn {
    name: String,
    signature: String,
    receiver: StateAccess,
    /// Points into the caller's image: read only while the view is
    /// attached (its caller's version is loaded until it detaches).
    layout: &'static TypeLayout,
}

/// The entry points of a view's functions on one version of the callee.
struct Mapping {
    generation: u64,
    shims: Box<[*const c_void]>,
}

/// A module as one caller was compiled against it: the functions that
/// caller may call, in the order of its descriptor.
pub(crate) struct View {
    /// The calling module, `crate::module`.
    importer: String,
    importer_id: ModuleId,
    target: Arc<dyn LinkTarget>,
    functions: Vec<ViewFn>,
    /// The mapping of the version called last: one load and a compare on
    /// each call (see [`View::shim`]).
    cache: AtomicPtr<Mapping>,
    /// Every mapping made, kept until the view drops, so that `cache`
    /// never points at freed memory: one per callee version called while
    /// the caller's version is loaded. Boxed: `cache` points at a mapping,
    /// which must not move when the vector grows.
    #[allow(clippy::vec_box)]
    mappings: Mutex<Vec<Box<Mapping>>>,
    /// Whether the caller's version is still loaded, so that `functions`'
    /// layouts can be read: set to false (under the write lock, which waits
    /// for a check under way) before it unloads.
    attached: RwLock<bool>,
}

// SAFETY: the raw pointers are code addresses in loaded callee versions
// and `&'static` layouts in the caller's image, only read.
unsafe impl Send for View {}
// SAFETY: as above; `cache` is atomic and `mappings` locked.
unsafe impl Sync for View {}

impl View {
    /// The caller, `crate::module`.
    pub(crate) fn importer(&self) -> &str {
        &self.importer
    }

    /// How function `function` needs the state, as the caller was compiled.
    pub(crate) fn receiver(&self, function: usize) -> Option<StateAccess> {
        self.functions.get(function).map(|function| function.receiver)
    }

    /// The name of function `function`.
    pub(crate) fn function_name(&self, function: usize) -> &str {
        self.functions
            .get(function)
            .map_or("?", |function| function.name.as_str())
    }

    /// Whether a callee build exporting `exports` fits this view: every
    /// function present, needing no more access to the state, with
    /// compatible layouts. A detached view fits anything: its caller is
    /// gone.
    pub(crate) fn check(&self, exports: &[FnEntry]) -> Result<(), Error> {
        let attached = read(&self.attached);
        if !*attached {
            return Ok(());
        }
        // A fresh CheckingGlobals per check, as for the host's own calls
        // (the process-wide one keeps pointers into unloaded libraries).
        let globals = CheckingGlobals::new();
        for function in &self.functions {
            let mismatch = |problem: String| Error::ImportMismatch {
                importer: self.importer.clone(),
                imported: self.target.name(),
                function: function.name.clone(),
                problem: format!("{problem} (the caller has `{}`)", function.signature),
            };
            let Some(entry) = exports
                .iter()
                .find(|entry| entry.name.as_str() == function.name)
            else {
                return Err(mismatch("has no such function".to_owned()));
            };
            match StateAccess::from_byte(entry.receiver) {
                Some(receiver) if receiver <= function.receiver => {}
                _ => {
                    return Err(mismatch(format!(
                        "has `{}`, which needs more access to its state",
                        entry.signature
                    )))
                }
            }
            check_layout_compatibility_with_globals(function.layout, entry.layout, &globals)
                .map_err(|errors| {
                    mismatch(format!(
                        "has `{}`:\n{}",
                        entry.signature,
                        super::loader::summarize_layout_errors(&errors.to_string())
                    ))
                })?;
        }
        Ok(())
    }

    /// Stops the callee's swaps from checking this view (and reading the
    /// caller's image): done before the caller's version unloads; waits
    /// for a check under way.
    pub(crate) fn detach(&self) {
        *write(&self.attached) = false;
    }

    /// Whether the caller's version is still loaded.
    pub(crate) fn is_attached(&self) -> bool {
        *read(&self.attached)
    }

    /// The entry point of function `function` on the callee version of
    /// `generation`, whose exports are `exports` (checked against this
    /// view when it was attached or when that version was swapped in).
    #[inline]
    pub(crate) fn shim(
        &self,
        generation: u64,
        exports: &[FnEntry],
        function: usize,
    ) -> Result<*const c_void, String> {
        let cached = self.cache.load(Ordering::Acquire);
        if !cached.is_null() {
            // SAFETY: `cache` only ever holds a mapping boxed in
            // `mappings`, which keeps it until the view drops.
            let mapping = unsafe { &*cached };
            if mapping.generation == generation {
                if let Some(&shim) = mapping.shims.get(function).filter(|shim| !shim.is_null()) {
                    return Ok(shim);
                }
            }
        }
        self.map(generation, exports, function)
    }

    #[cold]
    fn map(&self, generation: u64, exports: &[FnEntry], function: usize) -> Result<*const c_void, String> {
        let mut mappings = lock(&self.mappings);
        let index = match mappings
            .iter()
            .position(|mapping| mapping.generation == generation)
        {
            Some(index) => index,
            None => {
                let shims = self
                    .functions
                    .iter()
                    .map(|wanted| {
                        exports
                            .iter()
                            .find(|entry| entry.name.as_str() == wanted.name)
                            .map_or(ptr::null(), |entry| entry.call)
                    })
                    .collect();
                mappings.push(Box::new(Mapping { generation, shims }));
                mappings.len() - 1
            }
        };
        let mapping = &mappings[index];
        self.cache
            .store(ptr::from_ref::<Mapping>(mapping).cast_mut(), Ordering::Release);
        match mapping.shims.get(function) {
            Some(&shim) if !shim.is_null() => Ok(shim),
            _ => Err(format!(
                "`{}` has no function `{}` (a bug: the build was checked)",
                self.target.name(),
                self.function_name(function)
            )),
        }
    }
}

/// What one loaded version calls out through: its [`HostLink`] and what
/// that points at. Dropping it detaches its views from their callees, so
/// it must drop before the library is unloaded.
pub(crate) struct HostLinks {
    /// A `Box<Links>` turned raw: the link handed to the module points into
    /// it, so nothing reborrows it mutably after that (see `Drop`).
    inner: NonNull<Links>,
}

// SAFETY: `Links` is only read once made (the views' own state is atomic
// or locked), and its raw pointers are addresses in loaded images and in
// service values that are `Send + Sync`.
unsafe impl Send for HostLinks {}
// SAFETY: as above.
unsafe impl Sync for HostLinks {}

impl Drop for HostLinks {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw` in `resolve`, dropped once.
        drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
    }
}

struct Links {
    /// Filled in once `Links` has its address (`ctx` points at it).
    raw: MaybeUninit<HostLink>,
    views: Vec<Arc<View>>,
    service_addresses: Vec<*const c_void>,
    /// Keeps the services alive as long as the version is loaded, even if
    /// the registry is dropped first.
    _services: Vec<Arc<dyn Any + Send + Sync>>,
}

impl HostLinks {
    /// Resolves what the version described by `descriptor` (module
    /// `importer`, `crate::module`) calls outside itself, checked as the
    /// module docs say. `Ok(None)` when it calls nothing.
    pub(crate) fn resolve(
        descriptor: &ModuleDescriptor,
        module: &'static str,
        importer: String,
        importer_id: ModuleId,
        linker: Option<&Linker>,
    ) -> Result<Option<Self>, Error> {
        if descriptor.imports.is_empty() && descriptor.services.is_empty() {
            return Ok(None);
        }
        let Some(linker) = linker else {
            let mut what: Vec<String> = descriptor
                .imports
                .iter()
                .map(|import| format!("hot module `{}::{}`", import.crate_name, import.module))
                .collect();
            what.extend(
                descriptor
                    .services
                    .iter()
                    .map(|service| format!("host service `{}`", service.layout.full_type())),
            );
            return Err(Error::NeedsRegistry {
                module,
                what: what.join(", "),
            });
        };
        // Dropped on an early return: detaches what was attached.
        let mut links = Links {
            raw: MaybeUninit::uninit(),
            views: Vec::with_capacity(descriptor.imports.len()),
            service_addresses: Vec::new(),
            _services: Vec::new(),
        };
        {
            // Held from the cycle check to the attach: two modules linking
            // to each other at once cannot both pass the check.
            let mut attached = lock(&linker.views);
            attached.retain(|view| view.strong_count() > 0);
            for import in descriptor.imports.iter() {
                let imported = format!("{}::{}", import.crate_name, import.module);
                let symbol =
                    abi::symbol_name(import.crate_name.as_str(), import.module.as_str());
                let Some(target) = linker.module(&symbol) else {
                    return Err(Error::ImportMissing {
                        importer: importer.clone(),
                        imported,
                    });
                };
                if reaches(&attached, target.id(), importer_id) {
                    return Err(Error::ImportCycle {
                        importer: importer.clone(),
                        imported,
                    });
                }
                let view = Arc::new(View {
                    importer: importer.clone(),
                    importer_id,
                    target: target.clone(),
                    functions: import
                        .functions
                        .iter()
                        .map(|entry| ViewFn {
                            name: entry.name.to_string(),
                            signature: entry.signature.to_string(),
                            // A byte the caller's own macro wrote; an
                            // unknown one asks for the strongest lock.
                            receiver: StateAccess::from_byte(entry.receiver)
                                .unwrap_or(StateAccess::Exclusive),
                            layout: entry.layout,
                        })
                        .collect(),
                    cache: AtomicPtr::new(ptr::null_mut()),
                    mappings: Mutex::new(Vec::new()),
                    attached: RwLock::new(true),
                });
                target.attach(&view)?;
                attached.push(Arc::downgrade(&view));
                links.views.push(view);
            }
        }
        let services = read(&linker.services);
        for declared in descriptor.services.iter() {
            let service = declared.layout.full_type().to_string();
            let key = service_key(declared.layout);
            let Some(provided) = services.iter().find(|provided| provided.key == key) else {
                return Err(Error::ServiceMissing {
                    module: importer,
                    service,
                });
            };
            // The module's definition is the interface, the host's the
            // implementation (which may have methods the module does not
            // know, not fewer): `abi_stable`'s order.
            let globals = CheckingGlobals::new();
            check_layout_compatibility_with_globals(declared.layout, provided.layout, &globals)
                .map_err(|errors| Error::ServiceMismatch {
                    module: importer.clone(),
                    service: service.clone(),
                    details: super::loader::summarize_layout_errors(&errors.to_string()),
                })?;
            links.service_addresses.push(provided.address);
            links._services.push(provided._value.clone());
        }
        drop(services);
        let service_values = {
            let addresses = &links.service_addresses;
            // SAFETY: the addresses live in the vector's heap buffer, which
            // moves with `links` into the box below and is never changed
            // again; the box lives as long as the library is mapped (see
            // `Library`), so as long as the module can read the slice.
            unsafe { RSlice::from_raw_parts(addresses.as_ptr(), addresses.len()) }
        };
        let inner = Box::into_raw(Box::new(links));
        let raw = HostLink {
            ctx: inner.cast_const().cast::<c_void>(),
            // The caller's own declarations, pointers into its image.
            imports: descriptor.imports,
            call: link_call,
            call_async: link_call_async,
            services: descriptor.services,
            service_values,
        };
        // SAFETY: `inner` is the box just made; only its `raw` field is
        // written, through the raw pointer `ctx` was derived from.
        unsafe { (*std::ptr::addr_of_mut!((*inner).raw)).write(raw) };
        // SAFETY: from `Box::into_raw`, never null.
        let inner = unsafe { NonNull::new_unchecked(inner) };
        Ok(Some(Self { inner }))
    }

    fn links(&self) -> &Links {
        // SAFETY: the box `resolve` made, alive until `self` drops.
        unsafe { self.inner.as_ref() }
    }

    /// What the module is handed (the descriptor's `link` entry).
    pub(crate) fn raw(&self) -> *const HostLink {
        // Written in `resolve` before `Self` exists.
        self.links().raw.as_ptr()
    }

    /// The modules this version calls, `crate::module`.
    pub(crate) fn imports(&self) -> impl Iterator<Item = String> + '_ {
        self.links().views.iter().map(|view| view.target.name())
    }

    /// Detaches every view from its callee, whose swaps then no longer
    /// check it (nor read the layouts in this version's image). Done before
    /// the library unloads; again on drop, which is harmless.
    pub(crate) fn detach(&self) {
        self.links().detach();
    }
}

impl Links {
    /// The view of import `import`, which must have function `function`.
    fn view(&self, import: usize, function: usize) -> Result<&View, String> {
        let view = self
            .views
            .get(import)
            .ok_or_else(|| format!("the module has no import number {import}"))?;
        if view.receiver(function).is_none() {
            return Err(format!(
                "`{}` has no function number {function} in the view of {}",
                view.target.name(),
                view.importer()
            ));
        }
        Ok(view)
    }

    fn detach(&self) {
        for view in &self.views {
            view.detach();
        }
    }
}

impl Drop for Links {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The host side of `HostLink::call`: finds the view and lets the callee
/// make the call. Never unwinds into the module.
unsafe extern "C" fn link_call(
    ctx: *const c_void,
    import: usize,
    function: usize,
    env: *mut c_void,
    thunk: Thunk,
    message: *mut RString,
) -> u8 {
    // SAFETY: `ctx` is the `Links` this link was made with, alive as long
    // as the calling library is mapped.
    let links = unsafe { &*ctx.cast::<Links>() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let view = links.view(import, function)?;
        view.target.call(view, function, &mut |shim, state| {
            // SAFETY: the module's thunk for its `env`, which it keeps
            // alive across this call; the callee is pinned and locked for
            // the length of `call`, which runs this.
            unsafe { thunk(env, shim, state) }
        })
    }));
    // SAFETY: the module passes a writable message slot.
    match unsafe { made(outcome, message) } {
        Some(()) => STATUS_OK,
        None => STATUS_FAILED,
    }
}

/// What a call made for a module came to: its value, or (`None`) why not,
/// written to the module's `message` slot, a panic of the host's included.
///
/// # Safety
/// `message` is writable.
unsafe fn made<T>(
    outcome: std::thread::Result<Result<T, String>>,
    message: *mut RString,
) -> Option<T> {
    let failure = match outcome {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(failure)) => failure,
        Err(payload) => format!(
            "the host panicked making the call: {}",
            hotswap_boundary::export::take_panic_message(payload)
        ),
    };
    // SAFETY: the caller's contract.
    unsafe { message.write(RString::from(failure)) };
    None
}

/// The host side of `HostLink::call_async`: as [`link_call`], and the
/// callee's version is leased to the caller. Never unwinds into the module.
unsafe extern "C" fn link_call_async(
    ctx: *const c_void,
    import: usize,
    function: usize,
    env: *mut c_void,
    thunk: Thunk,
    lease: *mut Lease,
    message: *mut RString,
) -> u8 {
    // SAFETY: `ctx` is the `Links` this link was made with, alive as long
    // as the calling library is mapped.
    let links = unsafe { &*ctx.cast::<Links>() };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let view = links.view(import, function)?;
        view.target.call_leased(view, function, &mut |shim, state| {
            // SAFETY: as in `link_call`.
            unsafe { thunk(env, shim, state) }
        })
    }));
    // SAFETY: the module passes a writable message slot.
    let Some(held) = (unsafe { made(outcome, message) }) else {
        return STATUS_FAILED;
    };
    let held: Box<Arc<dyn Any + Send + Sync>> = Box::new(held);
    // SAFETY: the module passes a writable lease slot.
    unsafe {
        lease.write(Lease {
            version: Box::into_raw(held).cast_const().cast(),
            release: release_lease,
        })
    };
    STATUS_OK
}

/// `Lease::release`: lets a callee's version go (it may unload here, in
/// host code). A panic (of a library destructor) stops here.
unsafe extern "C" fn release_lease(version: *const c_void) {
    let dropped = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the box `link_call_async` made, released once.
        drop(unsafe { Box::from_raw(version.cast_mut().cast::<Arc<dyn Any + Send + Sync>>()) });
    }));
    if dropped.is_err() {
        tracing::warn!("retiring a version released by a module call panicked");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}
