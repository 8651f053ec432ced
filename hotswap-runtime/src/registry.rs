//! One registry per host: every hot module of the application, by type for
//! calls and by name for tooling.

use std::any::{Any, TypeId};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use crate::abi;
use crate::admit::integrity::module_symbols;
use crate::error::Error;
use crate::ffi::link::{LinkTarget, Linker};
use crate::hot::{Hot, HotModule};
use crate::residency::FileId;
use crate::serve::options::Options;
use crate::HostService;

/// Every hot module of a host: `GetModule('name')` for the whole
/// application.
///
/// Modules opened here can call each other and the services the registry
/// provides ([`Registry::provide`]): a module is linked to the modules it
/// `uses` when it loads, so open callees first (see
/// [`docs::linking`](crate::docs::linking)). A module added with
/// [`Registry::add`] was opened on its own: others can call it, it calls
/// none.
///
/// Modules are added one by one ([`Registry::open`], [`Registry::add`]),
/// each with its own [`Options`], or found in a directory of module
/// libraries ([`Registry::in_directory`], [`Registry::open_found`]). Code
/// that calls a module gets its [`Hot`] by type ([`Registry::get`]);
/// tooling lists them by name ([`Registry::list`], [`Registry::status`]):
/// each one's generation, last error, library and mapped versions.
///
/// ```no_run
/// # #[hotswap_runtime::hot_module] pub mod counter { pub fn one() -> u32 { 1 } }
/// # #[hotswap_runtime::hot_module] pub mod greeter { pub fn two() -> u32 { 2 } }
/// use hotswap_runtime::{Options, Registry};
///
/// # fn main() -> Result<(), hotswap_runtime::Error> {
/// let modules = Registry::in_directory("target/debug");
/// modules.open_found::<counter::Hot>(Options::new())?;
/// modules.open::<greeter::Hot>("plugins/libgreeter.so", Options::new())?;
///
/// // Anywhere in the host:
/// let counter = modules.get::<counter::Hot>().expect("opened above");
/// assert_eq!(counter.get().one(), 1);
/// for module in modules.list() {
///     println!("{module}"); // name, generation, library, versions, last error
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct Registry {
    directory: Option<PathBuf>,
    modules: RwLock<Vec<Entry>>,
    /// What modules opened here call: each other and the host's services.
    linker: Arc<Linker>,
    /// Held while a module is opened, so that two threads opening the same
    /// module cannot both run its `setup`.
    opening: Mutex<()>,
}

struct Entry {
    crate_name: &'static str,
    module: &'static str,
    type_id: TypeId,
    hot: Arc<dyn Registered>,
}

/// A module's `Hot`, as a [`Registry`]'s methods name it: `counter::Hot`
/// for `#[hot_module] mod counter`. Sealed: implemented for every
/// [`Hot`], by nothing else.
pub trait Registrable: Registered + Sized {
    /// The module's name, as `#[hot_module]` gave it.
    const MODULE: &'static str;
    /// The crate the module is in.
    const CRATE: &'static str;
    /// [`Hot::open_with`], linked to the registry's modules and services.
    #[doc(hidden)]
    fn __open(path: &Path, options: Options, linking: Linking) -> Result<Self, Error>;
}

/// A registry's modules and services, as a module opened there is linked
/// to them. Not public API.
#[doc(hidden)]
pub struct Linking(Arc<Linker>);

/// A module, as the others of its registry call it. Not public API.
#[doc(hidden)]
pub struct Callee(Arc<dyn LinkTarget>);

impl<M: HotModule> Registrable for Hot<M> {
    const MODULE: &'static str = M::MODULE;
    const CRATE: &'static str = M::CRATE;

    fn __open(path: &Path, options: Options, Linking(linker): Linking) -> Result<Self, Error> {
        Self::open_linked(path, options, Some(linker))
    }
}

/// What the registry needs of a `Hot`, whatever its module (and the seal
/// of [`Registrable`]: this trait is not nameable outside the crate).
#[doc(hidden)]
pub trait Registered: Send + Sync + 'static {
    #[doc(hidden)]
    fn status(&self) -> ModuleStatus;
    #[doc(hidden)]
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
    #[doc(hidden)]
    fn callee(&self) -> Callee;
}

impl<M: HotModule> Registered for Hot<M> {
    fn status(&self) -> ModuleStatus {
        ModuleStatus {
            name: format!("{}::{}", M::CRATE, M::MODULE),
            library: self.path().to_owned(),
            generation: self.generation(),
            last_error: self.last_error(),
            mapped_versions: self.mapped_versions(),
            serving_image: self.serving_image(),
            uses: self.uses(),
        }
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }

    fn callee(&self) -> Callee {
        Callee(self.link_target())
    }
}

/// One module of a [`Registry`], as tooling shows it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModuleStatus {
    /// `crate::module`, as `#[hot_module]` names it.
    pub name: String,
    /// The library path it was opened from.
    pub library: PathBuf,
    /// How many swaps succeeded since it was opened.
    pub generation: u64,
    /// The error of the last swap attempt, if it failed.
    pub last_error: Option<Error>,
    /// How many of its versions are mapped: the serving one and retired
    /// ones a guard or thread still keeps.
    pub mapped_versions: usize,
    /// The in-memory file the serving version was loaded from.
    pub serving_image: FileId,
    /// The hot modules its serving version calls (`uses(...)`), as
    /// `crate::module`.
    pub uses: Vec<String>,
}

impl fmt::Display for ModuleStatus {
    /// One line: `greeter::counter  generation 3  2 versions mapped
    /// /srv/lib/libgreeter.so` and the last error, if any.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.mapped_versions == 1 { "" } else { "s" };
        write!(
            f,
            "{}  generation {}  {} version{plural} mapped  {}",
            self.name,
            self.generation,
            self.mapped_versions,
            self.library.display()
        )?;
        if !self.uses.is_empty() {
            write!(f, "  uses {}", self.uses.join(", "))?;
        }
        if let Some(error) = &self.last_error {
            write!(f, "  last error: {error}")?;
        }
        Ok(())
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry that finds module libraries in `directory`
    /// ([`Registry::open_found`]).
    pub fn in_directory(directory: impl AsRef<Path>) -> Self {
        Self {
            directory: Some(directory.as_ref().to_owned()),
            ..Self::default()
        }
    }

    /// Opens the module whose `Hot` is `H` (`counter::Hot`) from the
    /// library at `path` ([`Hot::open_with`]) and adds it.
    pub fn open<H: Registrable>(
        &self,
        path: impl AsRef<Path>,
        options: Options,
    ) -> Result<Arc<H>, Error> {
        let _opening = self
            .opening
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Refused before opening: a second `open` would run the module's
        // `setup` again, beside the registered one.
        refuse_duplicate::<H>(&self.modules.read().unwrap_or_else(|poisoned| poisoned.into_inner()))?;
        let linking = Linking(self.linker.clone());
        self.add(H::__open(path.as_ref(), options, linking)?)
    }

    /// Opens the module whose `Hot` is `H` from the library in the
    /// registry's directory that exports it, found by the symbol
    /// `#[hot_module]` exports (read from each `.so` file's symbol table;
    /// nothing is loaded to find it). The library of the module's own
    /// crate, `lib{crate}.so`, is preferred: a module crate that uses
    /// another links it, and exports its symbol as well.
    pub fn open_found<H: Registrable>(&self, options: Options) -> Result<Arc<H>, Error> {
        let directory = self
            .directory
            .as_deref()
            .ok_or(Error::NoDirectory { module: H::MODULE })?;
        let symbol = abi::symbol_name(H::CRATE, H::MODULE);
        let read = |source| Error::Read {
            path: directory.to_owned(),
            source: Arc::new(source),
        };
        let mut libraries: Vec<PathBuf> = std::fs::read_dir(directory)
            .map_err(read)?
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| path.extension().is_some_and(|extension| extension == "so"))
            .collect();
        libraries.sort();
        let mut found: Vec<PathBuf> = libraries
            .into_iter()
            .filter(|path| {
                std::fs::read(path).is_ok_and(|bytes| module_symbols(&bytes).contains(&symbol))
            })
            .collect();
        // A module crate that `uses` another links that crate and exports
        // its symbol too: the module's own crate's library comes first.
        let own = format!("lib{}.so", H::CRATE);
        let library = match found.iter().position(|path| path.file_name().is_some_and(|name| *name == *own)) {
            Some(index) => Some(found.swap_remove(index)),
            None => found.into_iter().next(),
        };
        let Some(library) = library else {
            return Err(Error::NotInDirectory {
                directory: directory.to_owned(),
                module: H::MODULE,
                symbol,
            });
        };
        self.open::<H>(library, options)
    }

    /// Adds a module opened elsewhere. Each module can be added once.
    pub fn add<H: Registrable>(&self, hot: H) -> Result<Arc<H>, Error> {
        let hot = Arc::new(hot);
        let mut modules = self.modules.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        refuse_duplicate::<H>(&modules)?;
        let Callee(callee) = hot.callee();
        self.linker
            .add_module(abi::symbol_name(H::CRATE, H::MODULE), &callee);
        modules.push(Entry {
            crate_name: H::CRATE,
            module: H::MODULE,
            type_id: TypeId::of::<H>(),
            hot: hot.clone(),
        });
        Ok(hot)
    }

    /// Provides a service to the modules of this registry: a module that
    /// names `T` in `#[hot_module(services(...))]` gets this value with
    /// `hotswap_runtime::service::<T>()`.
    ///
    /// `T` is an FFI-safe type, typically an `abi_stable` `#[sabi_trait]`
    /// object defined in an interface crate that the host and the modules
    /// share (`Storage_TO<'static, RBox<()>>`), whose methods run host code.
    /// Provide services before opening the modules that call them: a
    /// module is checked against them when it loads (its definition of
    /// `T` must have the host's layout, vtable included). The value lives
    /// as long as the registry or any module version that can call it.
    ///
    /// A service method runs inside a module's call, on its thread: like
    /// any callback into the host, calling back into a module whose
    /// stateful call is under way on this thread panics (see
    /// `docs::boundary`), and a panic in an `abi_stable` trait object's
    /// method aborts the process (`abi_stable` catches none), so report
    /// failures with `RResult`.
    pub fn provide<T: HostService>(&self, service: T) -> Result<(), Error> {
        self.linker.provide(service)
    }

    /// The module whose `Hot` is `H` (`counter::Hot`), for calls; `None` if
    /// it was not added.
    pub fn get<H: Registrable>(&self) -> Option<Arc<H>> {
        let modules = self.modules.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = modules
            .iter()
            .find(|entry| entry.type_id == TypeId::of::<H>())?;
        entry.hot.clone().into_any().downcast().ok()
    }

    /// The module named `name` (`crate::module`, or the module's name alone
    /// when only one crate has a module of that name), for tooling.
    pub fn status(&self, name: &str) -> Option<ModuleStatus> {
        let modules = self.modules.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        let exact = modules
            .iter()
            .find(|entry| format!("{}::{}", entry.crate_name, entry.module) == name);
        let entry = exact.or_else(|| {
            let mut named = modules.iter().filter(|entry| entry.module == name);
            let only = named.next()?;
            named.next().is_none().then_some(only)
        })?;
        Some(entry.hot.status())
    }

    /// Every module, in the order they were added.
    pub fn list(&self) -> Vec<ModuleStatus> {
        let modules = self.modules.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        modules.iter().map(|entry| entry.hot.status()).collect()
    }

}

/// Each module is in a registry once.
fn refuse_duplicate<H: Registrable>(modules: &[Entry]) -> Result<(), Error> {
    if modules.iter().any(|entry| entry.type_id == TypeId::of::<H>()) {
        return Err(Error::AlreadyRegistered {
            module: H::MODULE,
            crate_name: H::CRATE,
        });
    }
    Ok(())
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("directory", &self.directory)
            .field("modules", &self.list())
            .finish()
    }
}
