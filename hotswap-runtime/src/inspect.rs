//! Reading and comparing module libraries without a host: what the
//! `hotswap` command-line tool (feature `cli`) does.
//!
//! [`ModuleLibrary::open`] loads a library the way [`Hot`](crate::Hot)
//! does (from a sealed in-memory file, `RTLD_NOW | RTLD_LOCAL`; nothing
//! is written to disk) and reads every hot
//! module it exports, without setting any of them up or calling any of its
//! functions. [`check`] tells whether a host built against one library
//! would accept another in its place, running the very checks
//! [`Hot::reload`](crate::Hot::reload) runs, with the functions of the old
//! library standing in for what the host was compiled against.
//!
//! Loading a library runs its initializers: open only libraries you trust.
//!
//! ```no_run
//! use hotswap_runtime::inspect::{check, ModuleLibrary};
//!
//! let old = ModuleLibrary::open("v1/libcounter.so")?;
//! let new = ModuleLibrary::open("v2/libcounter.so")?;
//! for module in old.modules() {
//!     let module = module.as_ref().map_err(|unreadable| unreadable.error.clone())?;
//!     println!("{} ({} functions)", module.module, module.functions.len());
//! }
//! for outcome in check(&old, &new)? {
//!     match outcome.result {
//!         Ok(compatible) => println!("{}: compatible, adds {:?}", outcome.module, compatible.added),
//!         Err(refusal) => println!("{}: {refusal}", outcome.module),
//!     }
//! }
//! # Ok::<(), hotswap_runtime::Error>(())
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Serialize, Serializer};

pub use crate::abi::StateAccess;
use crate::abi::{AbiStableVersion, ModuleDescriptor, ModuleHeader, SYMBOL_PREFIX};
use crate::error::Error;
use crate::admit::integrity::{check_loadable, module_symbols};
use crate::ffi::loader::{Expected, Loaded};
use crate::ffi::module::FnSpec;

/// A library loaded for inspection: its modules were read, none was set up
/// and none of its functions is ever called. Dropping it unloads the
/// library.
pub struct ModuleLibrary {
    path: PathBuf,
    modules: Vec<Result<ModuleInfo, UnreadableModule>>,
    loaded: Loaded,
}

/// What a module library says about one of its hot modules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ModuleInfo {
    /// The exported symbol its header was found under.
    pub symbol: String,
    /// The module's name.
    pub module: String,
    /// The name of the crate it is in.
    pub crate_name: String,
    /// That crate's version.
    pub crate_version: String,
    /// The `abi_stable` ABI version it was built with.
    pub abi_stable: AbiVersion,
    /// How it hands its state to the next version.
    pub handoff_format: String,
    /// Whether it has a `setup` (that is, state).
    pub setup: bool,
    /// Whether it has a `teardown`.
    pub teardown: bool,
    /// Every exported function, in the order the library lists them.
    pub functions: Vec<FunctionInfo>,
    /// The hot modules it calls (`uses(...)`), as `crate::module`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uses: Vec<String>,
    /// The host services it calls (`services(...)`), by type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// A module this runtime cannot read: built by a `hotswap-runtime` with
/// another module header version or an incompatible `abi_stable`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UnreadableModule {
    /// The exported symbol of its header.
    pub symbol: String,
    /// Why it cannot be read.
    pub error: Error,
}

/// An `abi_stable` ABI version: libraries are compatible when the majors
/// match and, while the major is 0, the minors too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AbiVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One exported function of a module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct FunctionInfo {
    /// Its name.
    pub name: String,
    /// Its Rust signature, as written in the module (the state parameter
    /// shows as `&State` or `&mut State`).
    pub signature: String,
    /// How it reaches the module state.
    #[serde(serialize_with = "as_text")]
    pub receiver: StateAccess,
}

/// The verdict on one module of the old library.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ModuleCheck {
    /// The module's name.
    pub module: String,
    /// The name of the crate it is in.
    pub crate_name: String,
    /// `Err` is the error [`Hot::reload`](crate::Hot::reload) of a host
    /// built against the old library would return for the new one.
    pub result: Result<Compatible, Error>,
}

/// A module the new library may replace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compatible {
    /// How many functions of the old library were checked.
    pub checked: usize,
    /// The functions only the new library has, in its order.
    pub added: Vec<String>,
}

impl ModuleLibrary {
    /// Reads the library at `path`, loads those bytes from a sealed
    /// in-memory file, as [`Hot`](crate::Hot) does, and reads its hot
    /// modules.
    ///
    /// `Err` when the file cannot be read, is not a loadable shared library,
    /// or exports no hot module. A module this runtime cannot read is
    /// listed as an [`UnreadableModule`] in [`ModuleLibrary::modules`].
    ///
    /// Loading runs the library's initializers: open only libraries you
    /// trust. A library without any module symbol is refused before it is
    /// loaded.
    // The per-module results carry the crate's one error enum as it is
    // (`UnreadableModule::error`), which is large but made only on failure.
    #[allow(clippy::result_large_err)]
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_owned();
        let bytes = std::fs::read(&path).map_err(|error| Error::Read {
            path: path.clone(),
            source: Arc::new(error),
        })?;
        check_loadable(&path, &bytes)?;
        let symbols = module_symbols(&bytes);
        if symbols.is_empty() {
            return Err(Error::NoModules { path });
        }
        let loaded = Loaded::open(&path, &bytes)?;
        let modules = symbols
            .into_iter()
            .map(|symbol| {
                header(&loaded, &path, &symbol)
                    .and_then(|header| describe(&path, &symbol, header))
                    .map_err(|error| UnreadableModule { symbol, error })
            })
            .collect();
        Ok(Self {
            path,
            modules,
            loaded,
        })
    }

    /// The file this library was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every hot module the library exports, in symbol table order.
    pub fn modules(&self) -> &[Result<ModuleInfo, UnreadableModule>] {
        &self.modules
    }
}

/// Whether a host built against `old` would accept `new` in its place, for
/// each module of `old`: the checks [`Hot::reload`](crate::Hot::reload)
/// runs (module header, `abi_stable` version, handoff format, and for every
/// function of `old` that `new` has it, needs no more access to the state,
/// and has layout-compatible argument and return types), with the same
/// errors. Functions only `new` has are fine.
///
/// `Err` when a module of `old` cannot be read, so nothing can be said.
pub fn check(old: &ModuleLibrary, new: &ModuleLibrary) -> Result<Vec<ModuleCheck>, Error> {
    let mut checks = Vec::with_capacity(old.modules.len());
    for info in &old.modules {
        let info = info
            .as_ref()
            .map_err(|unreadable| unreadable.error.clone())?;
        let header = header(&old.loaded, &old.path, &info.symbol)?;
        // The old library stands in for the host: its functions, with
        // layouts that point into it, which stays loaded for the whole check.
        let functions: Vec<FnSpec> = info
            .functions
            .iter()
            .zip(header.descriptor.functions.iter())
            .map(|(function, entry)| FnSpec {
                name: intern(&function.name),
                signature: intern(&function.signature),
                receiver: function.receiver,
                layout: entry.layout,
                // What a host keeps is known only to the host's own build.
                kept: &[],
            })
            .collect();
        let expected = Expected {
            crate_name: &info.crate_name,
            module: intern(&info.module),
            handoff_format: &info.handoff_format,
            functions: &functions,
        };
        let result = new
            .loaded
            .module(&new.path, &expected)
            .map(|(descriptor, _)| Compatible {
                checked: functions.len(),
                added: descriptor
                    .functions
                    .iter()
                    .map(|entry| entry.name.as_str())
                    .filter(|name| !functions.iter().any(|spec| spec.name == *name))
                    .map(str::to_owned)
                    .collect(),
            });
        checks.push(ModuleCheck {
            module: info.module.clone(),
            crate_name: info.crate_name.clone(),
            result,
        });
    }
    Ok(checks)
}

/// The checked header under `symbol`, which the symbol table lists.
fn header<'l>(loaded: &'l Loaded, path: &Path, symbol: &str) -> Result<&'l ModuleHeader, Error> {
    loaded
        .header(path, symbol)?
        .ok_or_else(|| Error::NotAModule {
            path: path.to_owned(),
            // The symbol is `__hotswap_module__{crate}__{module}`.
            module: intern(
                symbol
                    .strip_prefix(SYMBOL_PREFIX)
                    .and_then(|name| name.rsplit("__").next())
                    .unwrap_or(symbol),
            ),
            symbol: symbol.to_owned(),
        })
}

/// What a header says, as owned data.
fn describe(path: &Path, symbol: &str, header: &ModuleHeader) -> Result<ModuleInfo, Error> {
    let descriptor: &ModuleDescriptor = header.descriptor;
    let functions = descriptor
        .functions
        .iter()
        .map(|entry| {
            let receiver =
                StateAccess::from_byte(entry.receiver).ok_or_else(|| Error::Incompatible {
                    path: path.to_owned(),
                    detail: format!(
                        "function `{}` has an unknown receiver ({})",
                        entry.name, entry.receiver
                    ),
                })?;
            Ok(FunctionInfo {
                name: entry.name.to_string(),
                signature: entry.signature.to_string(),
                receiver,
            })
        })
        .collect::<Result<_, Error>>()?;
    let AbiStableVersion { major, minor, .. } = header.abi_stable;
    Ok(ModuleInfo {
        symbol: symbol.to_owned(),
        module: descriptor.module.to_string(),
        crate_name: descriptor.crate_name.to_string(),
        crate_version: descriptor.crate_version.to_string(),
        abi_stable: AbiVersion { major, minor },
        handoff_format: descriptor.handoff_format.to_string(),
        setup: descriptor.setup.is_some(),
        teardown: descriptor.teardown.is_some(),
        functions,
        uses: descriptor
            .imports
            .iter()
            .map(|import| format!("{}::{}", import.crate_name, import.module))
            .collect(),
        services: descriptor
            .services
            .iter()
            .map(|service| service.layout.full_type().to_string())
            .collect(),
    })
}

/// [`Error`] names modules and functions as `&'static str` (hosts match
/// on them), and a name read from a library must outlive it: names are
/// interned, one copy per distinct name for the life of the process.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(interned) = names.get(name) {
        return interned;
    }
    let interned: &'static str = Box::leak(name.into());
    names.insert(interned);
    interned
}

fn as_text<S: Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_keeps_one_copy_per_name() {
        let first = intern(&String::from("increment"));
        let second = intern(&String::from("increment"));
        assert_eq!(first, "increment");
        assert!(std::ptr::eq(first, second));
        assert!(!std::ptr::eq(first, intern("count")));
    }

    #[test]
    fn receivers_read_as_they_are_written() {
        let shown: Vec<String> = [StateAccess::None, StateAccess::Shared, StateAccess::Exclusive]
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["stateless", "&State", "&mut State"]);
    }
}
