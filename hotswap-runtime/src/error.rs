//! The one error type of the runtime.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a module could not be opened or swapped.
///
/// Every variant names the library or function at fault. When `reload()`
/// returns any of these, the version that was serving before keeps serving
/// with its state as it was (see [`Error::StateLost`] for the one exception,
/// which is reported rather than hidden).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The library file could not be read.
    #[error("cannot read module library {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the file system said.
        source: Arc<std::io::Error>,
    },

    /// The file is not a complete shared library for this machine (not ELF,
    /// truncated, an executable, another architecture). Checked before
    /// `dlopen`, which would map a truncated file without complaint.
    #[error("{} is not a loadable library: {detail}", path.display())]
    Malformed {
        /// The file that was asked for.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },

    /// The build is not trusted: refused before it was loaded, so none of its
    /// code ran. See [`trust`](crate::trust).
    #[error("refusing to load {}: {problem}", path.display())]
    Untrusted {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        problem: crate::problem::TrustProblem,
    },

    /// The build's bytes could not be loaded as they were checked: the
    /// sealed in-memory file they are loaded from could not be made (out of
    /// memory, or of file descriptors), or the dynamic loader handed back
    /// another library than the one in that file.
    #[error("cannot load {} from memory: {source}", path.display())]
    Image {
        /// The file that was asked for.
        path: PathBuf,
        /// What went wrong.
        source: Arc<std::io::Error>,
    },

    /// The dynamic loader refused the library (unresolved symbols, missing
    /// dependencies, ...).
    #[error("{} is not a loadable library: {}", path.display(), with_causes(&**source))]
    Load {
        /// The file that was asked for.
        path: PathBuf,
        /// What the dynamic loader said.
        source: Arc<libloading::Error>,
    },

    /// The library does not export the module the host expects. Checked on
    /// the bytes before the library is loaded (its dynamic symbol table
    /// must define the module's header symbol), so another module's build,
    /// signed or not, runs none of its code; and again after loading.
    #[error("{} does not export hot module `{module}` (symbol `{symbol}` not found); was it built from a crate with `#[hot_module] mod {module}`?", path.display())]
    NotAModule {
        /// The library.
        path: PathBuf,
        /// The module the host expected.
        module: &'static str,
        /// The symbol that was looked up.
        symbol: String,
    },

    /// The library exports no hot module at all (no `__hotswap_module__*`
    /// symbol): it was not built from a `#[hot_module]` crate. Reported by
    /// [`inspect::ModuleLibrary::open`](crate::inspect::ModuleLibrary::open)
    /// before the library is loaded.
    #[error("{} exports no hot module (no `__hotswap_module__*` symbol); was it built from a crate with `#[hot_module]`?", path.display())]
    NoModules {
        /// The library.
        path: PathBuf,
    },

    /// The library was built against an incompatible `abi_stable` or
    /// `hotswap-runtime`, or hands state off in another format.
    #[error("{} is incompatible with this host: {detail}", path.display())]
    Incompatible {
        /// The library.
        path: PathBuf,
        /// What differs.
        detail: String,
    },

    /// The library lacks a function the host was compiled against.
    #[error("module `{module}` in {} has no function `{function}`, which this host calls; add it back (new versions may add functions, not remove them)", path.display())]
    MissingFunction {
        /// The library.
        path: PathBuf,
        /// The module.
        module: &'static str,
        /// The missing function.
        function: &'static str,
    },

    /// A function the host uses changed its signature.
    #[error("function `{function}` of module `{module}` changed its signature: the host was compiled against `{expected}`, the library has `{found}`\n{details}")]
    SignatureChanged {
        /// The module.
        module: &'static str,
        /// The function.
        function: &'static str,
        /// The host's signature.
        expected: &'static str,
        /// The library's signature.
        found: String,
        /// What the layout check found, line by line.
        details: String,
    },

    /// The new version's `setup` panicked or returned an error (including
    /// when it could not decode the state handed over to it).
    #[error("setup of module `{module}` {}: {message}", if *.panicked { "panicked" } else { "failed" })]
    Setup {
        /// The module.
        module: &'static str,
        /// Whether it panicked (rather than returning an error).
        panicked: bool,
        /// The panic or error message.
        message: String,
    },

    /// The old version's `teardown` panicked, or its handoff value could
    /// not be encoded. No swap happened. If `state_kept`, the old version
    /// set itself up again from its own handoff value and keeps serving
    /// with its state; otherwise the state is gone, and every stateful call
    /// panics saying so until a new build is swapped in (and set up with
    /// `setup(None)`).
    #[error("teardown of module `{module}` {}: {message}; {}", if *.panicked { "panicked" } else { "failed" }, if *.state_kept { "the serving version keeps serving with its state" } else { "the state is lost: stateful calls panic until a new build is swapped in" })]
    Teardown {
        /// The module.
        module: &'static str,
        /// Whether it panicked.
        panicked: bool,
        /// The panic or error message.
        message: String,
        /// Whether the serving version still has its state.
        state_kept: bool,
    },

    /// A function returns a value that would hold a pointer into the module
    /// once the host keeps it: a `StableAbi` type with a reference, raw
    /// pointer, function pointer, or an `abi_stable` container (`RString`,
    /// `RVec`, `RBox`, ...) inside. Unloading the version would leave it
    /// dangling.
    #[error("function `{function}` of module `{module}` returns a value that cannot outlive its version: {problem}; return owned plain data instead (`String`, `Vec<T>`, or a `#[repr(C)]` struct of numbers, `bool`s and such structs)")]
    Escapes {
        /// The module.
        module: &'static str,
        /// The function.
        function: &'static str,
        /// Where the pointer is.
        problem: String,
    },

    /// A swap was asked for from inside a stateful call of the same module
    /// on the same thread (a callback from the module into the host): it
    /// would wait for that very call to finish.
    #[error("cannot swap module `{module}` from inside one of its own stateful calls (a callback from the module into the host); swap after the call returns")]
    Reentrant {
        /// The module.
        module: &'static str,
    },

    /// A retired version still has threads it started running its code
    /// after its `teardown` (or async tasks whose cancellation has not
    /// finished, or wakers of it the host holds): it stays loaded until
    /// they are gone.
    #[error("generation {generation} of module `{module}` was retired with {threads} thread(s), task(s) or waker(s) of it still alive; it stays loaded until they are gone (join every thread a module starts before its `teardown` returns)")]
    ThreadsOutlived {
        /// The module.
        module: &'static str,
        /// The retired version's generation.
        generation: u64,
        /// How many of its threads, tasks and held wakers were alive.
        threads: usize,
    },

    /// Both the new and the old version's `setup` refused the handed-over
    /// state. The handoff bytes are kept; the next successful reload
    /// receives them, and stateful calls panic until then.
    #[error("module `{module}` has no live state: {reason}")]
    StateLost {
        /// The module.
        module: &'static str,
        /// What happened.
        reason: String,
    },

    /// `cargo build` of a module crate failed; `output` holds the compiler's
    /// diagnostics.
    #[error("building the module crate in {} failed:\n{output}", crate_dir.display())]
    Build {
        /// The crate's directory.
        crate_dir: PathBuf,
        /// What cargo printed.
        output: String,
    },

    /// Rebuild on save ([`Options::rebuild_on_save`](crate::Options::rebuild_on_save))
    /// cannot be set up for this crate and library.
    #[error("cannot rebuild the module crate in {} on save: {detail}", crate_dir.display())]
    Rebuild {
        /// The crate's directory.
        crate_dir: PathBuf,
        /// What is wrong, and what to do instead.
        detail: String,
    },

    /// [`Registry::open_found`](crate::Registry::open_found) on a registry
    /// made without a directory ([`Registry::new`](crate::Registry::new)).
    #[error("cannot look for hot module `{module}`: this registry has no directory; make it with Registry::in_directory, or open the library with Registry::open")]
    NoDirectory {
        /// The module looked for.
        module: &'static str,
    },

    /// No `.so` file in the registry's directory exports the module
    /// ([`Registry::open_found`](crate::Registry::open_found)).
    #[error("no library in {} exports hot module `{module}` (symbol `{symbol}`); build its crate into that directory, or open the library by path with Registry::open", directory.display())]
    NotInDirectory {
        /// The directory searched.
        directory: PathBuf,
        /// The module looked for.
        module: &'static str,
        /// The symbol looked for.
        symbol: String,
    },

    /// The module is in the registry already: a second copy would run its
    /// `setup` beside the first, with a state of its own.
    #[error("hot module `{crate_name}::{module}` is already in this registry; get it with Registry::get instead of opening it again")]
    AlreadyRegistered {
        /// The module.
        module: &'static str,
        /// Its crate.
        crate_name: &'static str,
    },

    /// The module calls other hot modules or host services
    /// (`#[hot_module(uses(...), services(...))]`) but was opened on its own
    /// ([`Hot::open`](crate::Hot::open)), with nothing to resolve them in.
    #[error("module `{module}` calls {what}; open it through the Registry that holds them (Registry::open or Registry::open_found), not with Hot::open")]
    NeedsRegistry {
        /// The module.
        module: &'static str,
        /// What it calls: the modules and services it declared.
        what: String,
    },

    /// A module calls another one (`uses(...)`) that is not in its
    /// registry. Modules are linked when they load, so the callee is opened
    /// first.
    #[error("module `{importer}` calls hot module `{imported}`, which is not in this registry; open `{imported}` first (a module is linked to the modules it uses when it loads)")]
    ImportMissing {
        /// The calling module, `crate::module`.
        importer: String,
        /// The module it calls, `crate::module`.
        imported: String,
    },

    /// A module and a module it calls do not fit: the caller was compiled
    /// against a function the callee's build lacks or has with another
    /// signature. Refused when the caller loads (its build is checked
    /// against the serving callee) and when the callee is swapped (the new
    /// build is checked against every loaded caller): the same checks as
    /// the host's own calls, so a call never reaches a function of the
    /// wrong type.
    #[error("module `{importer}` calls `{imported}::{function}`, but the build of `{imported}` {problem}; rebuild `{importer}` against the new `{imported}`, or keep the function as it was")]
    ImportMismatch {
        /// The calling module, `crate::module`.
        importer: String,
        /// The module it calls, `crate::module`.
        imported: String,
        /// The function.
        function: String,
        /// What the callee's build has instead, and the signature the
        /// caller was compiled against.
        problem: String,
    },

    /// Linking a module to one it calls would close a cycle of calls
    /// between modules (`a` calls `b`, which calls `a`): two calls going
    /// round it in opposite directions could each wait for the other's
    /// state lock. Calls between modules go one way.
    #[error("module `{importer}` calls `{imported}`, which already calls `{importer}` (directly or through other modules); calls between hot modules must not go round in a cycle, which could deadlock: move what both need into a third module")]
    ImportCycle {
        /// The module being loaded.
        importer: String,
        /// The module it calls.
        imported: String,
    },

    /// A module calls a host service (`services(...)`) that the registry
    /// does not provide.
    #[error("module `{module}` calls host service `{service}`, which this registry does not provide; call Registry::provide with a value of that type before opening the module")]
    ServiceMissing {
        /// The module, `crate::module`.
        module: String,
        /// The service type, as its layout names it.
        service: String,
    },

    /// A module was compiled against another definition of a host service
    /// than the host's (a method added, removed or changed in the shared
    /// interface crate).
    #[error("module `{module}` was compiled against another definition of host service `{service}` than this host's; rebuild it against the host's interface crate\n{details}")]
    ServiceMismatch {
        /// The module, `crate::module`.
        module: String,
        /// The service type.
        service: String,
        /// What differs, from `abi_stable`'s layout check.
        details: String,
    },

    /// [`Registry::provide`](crate::Registry::provide) was given a second
    /// value of a service type.
    #[error("host service `{service}` is provided already; each service type has one value per registry")]
    AlreadyProvided {
        /// The service type.
        service: String,
    },

    /// The library's directory could not be watched for new builds.
    #[error("cannot watch {} for new builds: {detail}", path.display())]
    Watch {
        /// The library or directory.
        path: PathBuf,
        /// What the watcher said.
        detail: String,
    },
}

impl Error {
    /// Whether the same build may load if tried again, without changing
    /// it: the file could not be read ([`Error::Read`]), its in-memory
    /// image could not be made ([`Error::Image`]), or the dynamic loader
    /// refused it ([`Error::Load`]: a library it needs, or a symbol it
    /// uses, may appear later). A build refused for what it is (its
    /// header, its functions, its trust, its `setup`) is refused again
    /// until it changes.
    ///
    /// In [`SwapMode::Background`](crate::SwapMode::Background), a build
    /// that failed this way is tried again with a growing delay
    /// ([`SwapEvent::Retrying`](crate::SwapEvent::Retrying)).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Read { .. } | Self::Image { .. } | Self::Load { .. }
        )
    }

    /// Whether the swap failed for what the build is, so the same bytes
    /// (with the same signature and permissions) would fail again: not
    /// for a reason that may pass, nor because of the old version's
    /// `teardown` or the state handed over, which change.
    pub(crate) fn condemns_the_build(&self) -> bool {
        !self.is_transient()
            && !matches!(
                self,
                Self::Teardown { .. }
                    | Self::StateLost { .. }
                    | Self::Setup { .. }
                    // These depend on the other modules and services too,
                    // which change.
                    | Self::ImportMissing { .. }
                    | Self::ImportMismatch { .. }
                    | Self::ImportCycle { .. }
                    | Self::ServiceMissing { .. }
            )
    }
}

/// `libloading` says "dlopen failed" and keeps the loader's reason as the
/// error's source: show both.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        cause = inner.source();
    }
    text
}
