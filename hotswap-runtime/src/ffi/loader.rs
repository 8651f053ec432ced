//! Everything the host does with foreign code: putting a library's checked
//! bytes into a sealed in-memory file and `dlopen`ing it, reading and
//! checking its header, calling its shims, `dlclose`. This is the only
//! host-side `unsafe` in the crate.
//!
//! Why a sealed `memfd` ([`Image`]): nothing is written to disk, so nothing
//! is left behind by any kind of exit (abort, crash, `process::exit`) and
//! nobody else can write what is loaded; the seals make the bytes that were
//! checked the bytes that are mapped; and each load is a fresh inode, which
//! `dlopen` cannot confuse with an earlier version. `dlopen` is given
//! `/proc/self/fd/N`, and glibc matches an already-loaded library by that
//! name before it looks at the file: so the descriptor stays open as long
//! as the library is loaded (no other load can get the same name), forever
//! if the library stays resident after `dlclose`, and every header read is
//! checked to lie in a mapping of this very file.
//!
//! What is checked before any exported function is used: the header's magic
//! and version, the `abi_stable` ABI version, the handoff format, the module
//! name, and for every function the host calls its receiver and the
//! `abi_stable` layout of its argument and return types. What cannot be
//! checked: code that runs inside `dlopen` (initializers) runs before any of
//! this, and a library that lies in its header (hand-written, not built by
//! `#[hot_module]`) is trusted.
//!
//! These checks are one path, [`Loaded::module`], whatever they compare
//! against ([`Expected`]): what the host was compiled with, for `Hot::open`
//! and every swap ([`Library::open`]), or the exports of the build the new
//! one would replace, for `hotswap check` ([`crate::inspect::check`]).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::abi_stability::abi_checking::{
    check_layout_compatibility_with_globals, CheckingGlobals,
};
use abi_stable::std_types::RString;
use abi_stable::type_layout::{TLData, TLPrimitive, TypeLayout};
use libloading::os::unix::{Library as RawLibrary, RTLD_LOCAL, RTLD_NOW};

use crate::abi::{
    self, AbiStableVersion, HandoffSink, ModuleDescriptor, ModuleHeader, PanicMessage, StateAccess,
    STATUS_KEPT, STATUS_OK, STATUS_PANICKED,
};
use crate::error::Error;
use crate::export::Export;
use hotswap_boundary::shim::ShimFn;
use crate::ffi::module::{FnSpec, Resolved, Shim};
use crate::ffi::link::{HostLinks, Linker, ModuleId};
use crate::ffi::threads::Tracker;
use crate::residency::{file_at, is_mapped, FileId, IMAGE_NAME_PREFIX};

/// One module of a loaded library, checked against what the host expects:
/// the version a `Hot` serves.
pub(crate) struct Library {
    /// What the module calls out through; first, so that it drops (and
    /// detaches from the modules it calls) before the library unloads.
    links: Option<HostLinks>,
    loaded: Loaded,
    descriptor: NonNull<ModuleDescriptor>,
    /// The threads its code started and its thread-local destructors; the
    /// library's hooks point into it, so it lives at least as long.
    tracker: Arc<Tracker>,
}

// SAFETY: the handle is `Send + Sync`; the descriptor is immutable data in
// the library's read-only image, alive as long as the handle.
unsafe impl Send for Library {}
// SAFETY: as above.
unsafe impl Sync for Library {}

/// The state of one module version, created by its `setup`.
pub(crate) struct StatePtr(NonNull<c_void>);

// SAFETY: the state type is `Send + Sync` (bound of `Lifecycle::State`, which
// the generated code implements), and the host hands `&`/`&mut` access out
// only under its state lock.
unsafe impl Send for StatePtr {}
// SAFETY: as above.
unsafe impl Sync for StatePtr {}

/// A failure reported by `setup` or `teardown`.
pub(crate) struct Failure {
    pub panicked: bool,
    pub message: String,
}

/// How a `teardown` ended.
pub(crate) enum TornDown {
    /// The handoff bytes (`None` if the module hands nothing over).
    Handoff(Option<Vec<u8>>),
    /// The handoff value could not be encoded; the module set itself up
    /// again from it, so its state lives on in `state`.
    Kept { state: StatePtr, error: String },
    /// Teardown panicked, or the state could not be kept: it is gone.
    Failed(Failure),
}

impl Library {
    /// Loads `bytes` (read from `source`) from a sealed in-memory file,
    /// checks them against what the host expects, and routes the module's
    /// thread creation and thread-local destructors to a new [`Tracker`]
    /// (see [`ThreadHooks`](crate::abi::ThreadHooks)). Returns the time spent
    /// checking.
    ///
    /// Then resolves and checks the other modules and the host services it
    /// calls, in `linking`'s registry (see [`HostLinks`]), and hands it the
    /// link: all before any of its code runs but its initializers.
    pub(crate) fn open(
        source: &Path,
        bytes: &[u8],
        expected: &Expected<'_>,
        linking: Linking<'_>,
    ) -> Result<(Self, Resolved, Duration), Error> {
        let loaded = Loaded::open(source, bytes)?;
        let started = Instant::now();
        let (descriptor, resolved) = loaded.module(source, expected)?;
        let importer = format!("{}::{}", expected.crate_name, expected.module);
        let links =
            HostLinks::resolve(descriptor, expected.module, importer, linking.id, linking.linker)?;
        let tracker = Tracker::new();
        // SAFETY: `install` is this library's, checked with its header; the
        // hooks live in `tracker`, which the library keeps, and which
        // `Retiring` keeps until the library is unloaded.
        unsafe { (descriptor.install)(tracker.hooks()) };
        if let Some(links) = &links {
            // SAFETY: `link` is this library's, checked with its header; the
            // link lives in `links`, which the library keeps until it is
            // unloaded (or for ever, if it stays resident).
            unsafe { (descriptor.link)(links.raw()) };
        }
        let descriptor = NonNull::from(descriptor);
        let library = Self {
            links,
            loaded,
            descriptor,
            tracker,
        };
        Ok((library, resolved, started.elapsed()))
    }

    /// Every function the library exports, as its descriptor lists them.
    pub(crate) fn exports(&self) -> &[abi::FnEntry] {
        self.descriptor().functions.as_slice()
    }

    /// The modules this version calls, `crate::module`.
    pub(crate) fn imports(&self) -> Vec<String> {
        self.links
            .as_ref()
            .map_or_else(Vec::new, |links| links.imports().collect())
    }

    fn descriptor(&self) -> &ModuleDescriptor {
        // SAFETY: points into the library image, which stays loaded as long
        // as `self.loaded`.
        unsafe { self.descriptor.as_ref() }
    }

    /// Runs the module's `setup` with the previous handoff, if any.
    /// `Ok(None)` when the module has no state.
    pub(crate) fn setup(&self, prev: Option<&[u8]>) -> Result<Option<StatePtr>, Failure> {
        let Some(setup) = self.descriptor().setup else {
            return Ok(None);
        };
        let (data, len) = prev.map_or((ptr::null(), 0), |bytes| (bytes.as_ptr(), bytes.len()));
        let mut state = ptr::null_mut();
        let mut message = MaybeUninit::<RString>::uninit();
        // SAFETY: `setup` is this library's `setup_shim`; the buffer and both
        // out-slots are valid for the call.
        let status = unsafe { setup(data, len, &mut state, message.as_mut_ptr()) };
        if status == STATUS_OK {
            // A module always returns a boxed (hence non-null) state.
            Ok(NonNull::new(state).map(StatePtr))
        } else {
            // SAFETY: a non-OK status means the shim wrote the message slot.
            Err(failure(status, unsafe { message.assume_init() }))
        }
    }

    /// Runs the module's `teardown`, consuming `state`. With `keep`, returns
    /// the encoded handoff.
    pub(crate) fn teardown(&self, state: StatePtr, keep: bool) -> TornDown {
        let Some(teardown) = self.descriptor().teardown else {
            return TornDown::Handoff(None);
        };
        let mut buffer = Vec::new();
        let sink = HandoffSink {
            ctx: (&mut buffer as *mut Vec<u8>).cast(),
            write: append_to_vec,
        };
        let sink_ptr: *const HandoffSink = if keep { &sink } else { ptr::null() };
        let mut restored = ptr::null_mut();
        let mut message = MaybeUninit::<RString>::uninit();
        // SAFETY: `state` came from this library's `setup` and is consumed
        // here; the sink and both out-slots are valid for the call.
        let status = unsafe {
            teardown(
                state.0.as_ptr(),
                sink_ptr,
                &mut restored,
                message.as_mut_ptr(),
            )
        };
        match status {
            STATUS_OK => TornDown::Handoff((!buffer.is_empty()).then_some(buffer)),
            STATUS_KEPT => TornDown::Kept {
                // A kept state is boxed, hence non-null.
                state: StatePtr(NonNull::new(restored).expect("a kept state is non-null")),
                // SAFETY: STATUS_KEPT means the shim wrote the message slot.
                error: unsafe { message.assume_init() }.into_string(),
            },
            // SAFETY: any other status means the shim wrote the message slot.
            status => TornDown::Failed(failure(status, unsafe { message.assume_init() })),
        }
    }

    /// Whether the module has a `setup`: whether it takes state handed over.
    pub(crate) fn has_setup(&self) -> bool {
        self.descriptor().setup.is_some()
    }

    /// The threads its code started and its thread-local destructors.
    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// The in-memory file this library was loaded from.
    pub(crate) fn image(&self) -> FileId {
        self.loaded.image()
    }

    /// Whether this library was loaded from exactly `bytes`; see
    /// [`Image::holds`].
    pub(crate) fn loaded_from(&self, bytes: &[u8]) -> std::io::Result<bool> {
        self.loaded.image.holds(bytes)
    }

    /// Unloads the library; see [`Loaded::close`]. Its links are detached
    /// first; if it stays resident they are kept for the rest of the
    /// process, as its image is.
    pub(crate) fn close(self) -> bool {
        let Self { links, loaded, .. } = self;
        if let Some(links) = &links {
            links.detach();
        }
        let resident = loaded.close();
        if resident {
            std::mem::forget(links);
        }
        resident
    }
}

/// A library loaded from a sealed in-memory file, whatever modules it
/// exports. Dropping it unloads the library.
pub(crate) struct Loaded {
    /// `None` once closed.
    handle: Option<RawLibrary>,
    image: Image,
}

/// The sealed in-memory file (`memfd`) a library is loaded from, open as
/// long as the library is loaded.
struct Image {
    /// `None` once closed or deliberately leaked.
    fd: Option<OwnedFd>,
    id: FileId,
    /// How many bytes it holds (sealed: it cannot grow or shrink).
    len: usize,
}

/// How often sealing is retried when the kernel says EBUSY (waiting 1 ms,
/// 2 ms, ... in between: about 0.2 s in all).
const SEAL_BUSY_RETRIES: u64 = 20;

impl Image {
    /// A new in-memory file holding `bytes`, sealed against any change.
    /// `file_name` names it (`/memfd:hotswap:<file_name>` in
    /// `/proc/self/maps`), for whoever reads the process's mappings.
    fn create(file_name: &str, bytes: &[u8]) -> std::io::Result<Self> {
        use rustix::fs::{MemfdFlags, SealFlags};
        use std::io::Write;
        // The kernel takes names of up to 249 bytes.
        let mut name = format!("{IMAGE_NAME_PREFIX}{file_name}");
        while name.len() > 249 {
            name.pop();
        }
        let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
        // Executable on purpose: where `vm.memfd_noexec` makes memfds
        // non-executable by default, `MFD_EXEC` asks for the old behaviour;
        // kernels before 6.3 do not know the flag (EINVAL) and need none.
        let fd = match rustix::fs::memfd_create(&name, flags | MemfdFlags::EXEC) {
            Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create(&name, flags)?,
            other => other?,
        };
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        let fd = OwnedFd::from(file);
        // No write, no resize, and no removing the seals: what was checked
        // is what is mapped, whoever else gets hold of the descriptor.
        let seals = SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL;
        // The kernel refuses the write seal (EBUSY) while a page of the file
        // still has a passing extra reference, such as one still in a
        // per-CPU batch after the write; that clears within milliseconds.
        let mut busy = 0;
        loop {
            match rustix::fs::fcntl_add_seals(&fd, seals) {
                Err(rustix::io::Errno::BUSY) if busy < SEAL_BUSY_RETRIES => {
                    busy += 1;
                    std::thread::sleep(std::time::Duration::from_millis(busy));
                }
                sealed => break sealed?,
            }
        }
        let id = FileId::of_file(&fd)?;
        Ok(Self {
            fd: Some(fd),
            id,
            len: bytes.len(),
        })
    }

    /// Whether the file holds exactly `bytes`: read back a chunk at a time
    /// (sealed, so what is read is what is mapped) and compared with `==`
    /// (`memcmp`), up to the first difference; files of another length are
    /// not read at all. About 4 ms for identical 24 MB, even in an
    /// unoptimised host; no mapping is made, so the residency checks, which
    /// look for mappings of the file, see only the loader's.
    fn holds(&self, bytes: &[u8]) -> std::io::Result<bool> {
        /// Small enough to stay in the cache between the copy and the
        /// comparison.
        const CHUNK: usize = 256 << 10;
        let Some(fd) = &self.fd else {
            return Ok(false);
        };
        if bytes.len() != self.len {
            return Ok(false);
        }
        let mut buffer = vec![0u8; CHUNK.min(bytes.len())];
        for (index, expected) in bytes.chunks(CHUNK).enumerate() {
            let read = &mut buffer[..expected.len()];
            let mut filled = 0;
            while filled < read.len() {
                let offset = (index * CHUNK + filled) as u64;
                match rustix::io::pread(fd, &mut read[filled..], offset)? {
                    0 => return Ok(false),
                    n => filled += n,
                }
            }
            if read != expected {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The name `dlopen` is given: unique among loaded libraries as long as
    /// the descriptor stays open.
    fn path(&self) -> String {
        let fd = self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        format!("/proc/self/fd/{fd}")
    }

    /// Keeps the descriptor open for the rest of the process, for a library
    /// that stays mapped after `dlclose`: glibc still knows it by
    /// `/proc/self/fd/N`, and would hand it back to a later `dlopen` of a
    /// new file that got the same descriptor number. One descriptor per
    /// resident version, deliberately leaked.
    fn keep_forever(&mut self) {
        if let Some(fd) = self.fd.take() {
            let _ = fd.into_raw_fd();
        }
    }
}

/// Where a module's calls to other modules and services are resolved.
#[derive(Clone, Copy)]
pub(crate) struct Linking<'a> {
    /// The module being loaded, as the modules it calls know it.
    pub id: ModuleId,
    /// Its registry's modules and services; `None` for a module opened on
    /// its own, which may then call nothing outside itself.
    pub linker: Option<&'a Linker>,
}

/// What a module build is checked against: what a host was compiled with
/// ([`Expected::host`], on every `open` and `reload`), or what the build it
/// would replace exports (`hotswap check`). One set of checks serves both.
pub(crate) struct Expected<'a> {
    /// The crate the module is in.
    pub crate_name: &'a str,
    /// The module.
    pub module: &'static str,
    /// How the host hands state over.
    pub handoff_format: &'a str,
    /// Every function the host calls.
    pub functions: &'a [FnSpec],
}

impl Expected<'static> {
    /// What a host compiled with this runtime against `functions` expects.
    pub(crate) fn host(
        crate_name: &'static str,
        module: &'static str,
        functions: &'static [FnSpec],
    ) -> Self {
        Self {
            crate_name,
            module,
            handoff_format: abi::HANDOFF_FORMAT,
            functions,
        }
    }
}

impl Loaded {
    /// Puts `bytes` (read from `source`) in a sealed in-memory file and
    /// loads that. Both callers (a swap's admission, `inspect`) have checked
    /// the bytes with `integrity::check_loadable` already: `dlopen` maps a
    /// truncated library without complaint.
    pub(crate) fn open(source: &Path, bytes: &[u8]) -> Result<Self, Error> {
        // dlopen caches by path and by inode: a fresh in-memory file is a new
        // inode under a new name, so a second version of the same library
        // really loads. The bytes the caller checked are the bytes loaded,
        // whatever happens to `source` meanwhile.
        let file_name = source
            .file_name()
            .map_or_else(|| "module".into(), |name| name.to_string_lossy());
        let mut image = Image::create(&file_name, bytes).map_err(|error| Error::Image {
            path: source.to_owned(),
            source: Arc::new(error),
        })?;
        // SAFETY: loading runs the library's initializers; that is the
        // inherent risk of loading code, documented on `Hot::open` and on the
        // `hotswap` tool. RTLD_LOCAL keeps its symbols from interposing on
        // anything else.
        match unsafe { RawLibrary::open(Some(image.path()), RTLD_NOW | RTLD_LOCAL) } {
            Ok(handle) => Ok(Self {
                handle: Some(handle),
                image,
            }),
            Err(error) => {
                // A failed dlopen unloads what it mapped; should it not have,
                // the name must stay taken (see `Image::keep_forever`).
                if is_mapped(image.id) {
                    image.keep_forever();
                }
                Err(Error::Load {
                    path: source.to_owned(),
                    source: Arc::new(error),
                })
            }
        }
    }

    /// The module header exported under `symbol`, if there is one, once
    /// what must be checked before anything behind it is read was checked:
    /// magic, header version and `abi_stable` version (the descriptor is
    /// made of `abi_stable` types).
    pub(crate) fn header(
        &self,
        source: &Path,
        symbol: &str,
    ) -> Result<Option<&ModuleHeader>, Error> {
        let handle = self
            .handle
            .as_ref()
            .expect("a library has its handle until it closes");
        // SAFETY: a symbol lookup; the address is only read below after the
        // magic bytes confirm it is a module header.
        let header = unsafe { handle.get::<*const ModuleHeader>(symbol.as_bytes()) }
            .ok()
            .map(|symbol| *symbol)
            .filter(|header| !header.is_null());
        let Some(header) = header else {
            return Ok(None);
        };
        // The symbol must come from the file just written: were `dlopen`
        // ever to hand back an older library known by the same name, its
        // header would be believed otherwise.
        let found = file_at(header as usize);
        if found != Some(self.image.id) {
            let found = found.map_or_else(|| "no file".to_owned(), |id| format!("file {id}"));
            return Err(Error::Image {
                path: source.to_owned(),
                source: Arc::new(std::io::Error::other(format!(
                    "the dynamic loader handed back another library: symbol `{symbol}` is in {found}, not in the in-memory file {} just loaded",
                    self.image.id
                ))),
            });
        }
        let incompatible = |detail: String| Error::Incompatible {
            path: source.to_owned(),
            detail,
        };
        // SAFETY: the symbol is named like a module header, so it is a
        // `ModuleHeader` built by some `hotswap-runtime`; its first fields
        // (magic, version) have had the same layout in every version.
        let (magic, header_version) = unsafe { ((*header).magic, (*header).header_version) };
        if magic != abi::MAGIC {
            return Err(incompatible(format!(
                "symbol `{symbol}` is not a hotswap module header"
            )));
        }
        if header_version != abi::HEADER_VERSION {
            return Err(incompatible(format!(
                "built by a hotswap-runtime with module header version {header_version}, this host uses version {}",
                abi::HEADER_VERSION
            )));
        }
        // SAFETY: same header version, so the whole header has our layout;
        // it is in the library image, loaded as long as `self`.
        let header = unsafe { &*header };
        if !AbiStableVersion::CURRENT.is_compatible(&header.abi_stable) {
            return Err(incompatible(format!(
                "built with {}, this host uses {}",
                header.abi_stable,
                AbiStableVersion::CURRENT
            )));
        }
        Ok(Some(header))
    }

    /// Every check a new build passes before it is set up: the module's
    /// header ([`Loaded::header`]), its handoff format, and every function
    /// `expected` lists ([`resolve`]). `source` is the file named in errors.
    pub(crate) fn module(
        &self,
        source: &Path,
        expected: &Expected<'_>,
    ) -> Result<(&ModuleDescriptor, Resolved), Error> {
        let symbol = abi::symbol_name(expected.crate_name, expected.module);
        let Some(header) = self.header(source, &symbol)? else {
            return Err(Error::NotAModule {
                path: source.to_owned(),
                module: expected.module,
                symbol,
            });
        };
        let descriptor = header.descriptor;
        if (descriptor.crate_name.as_str(), descriptor.module.as_str())
            != (expected.crate_name, expected.module)
        {
            return Err(Error::Incompatible {
                path: source.to_owned(),
                detail: format!(
                    "exports `{symbol}` but describes module `{}` of crate `{}`: a forged or corrupt header",
                    descriptor.module, descriptor.crate_name
                ),
            });
        }
        if descriptor.handoff_format.as_str() != expected.handoff_format {
            return Err(Error::Incompatible {
                path: source.to_owned(),
                detail: format!(
                    "hands state off as `{}`, this host expects `{}`",
                    descriptor.handoff_format, expected.handoff_format
                ),
            });
        }
        if !descriptor.panic_unwinds {
            return Err(Error::Incompatible {
                path: source.to_owned(),
                detail: "built with `panic = \"abort\"`: its first panic would abort this process, because the boundary can only catch panics that unwind; build the module with `panic = \"unwind\"` (the default: remove `panic = \"abort\"` from its `[profile.*]` and from RUSTFLAGS)".to_owned(),
            });
        }
        let resolved = resolve(source, descriptor, expected.module, expected.functions)?;
        Ok((descriptor, resolved))
    }

    /// The in-memory file this library was loaded from.
    pub(crate) fn image(&self) -> FileId {
        self.image.id
    }

    /// Unloads the library. Returns whether it is still mapped afterwards
    /// (`dlclose` does not unmap a library that registered thread-local
    /// destructors, among other reasons); if so its in-memory file stays
    /// open for the rest of the process (see `Image::keep_forever`).
    pub(crate) fn close(mut self) -> bool {
        self.unload()
    }

    fn unload(&mut self) -> bool {
        let Some(handle) = self.handle.take() else {
            return false;
        };
        // SAFETY (of closing): nothing created by this library outlives it:
        // every call converts module-made values (RString, RVec) to host values
        // before returning, and the state was torn down by the module itself.
        if let Err(error) = handle.close() {
            tracing::warn!(image = %self.image.id, %error, "dlclose failed");
        }
        let resident = is_mapped(self.image.id);
        if resident {
            self.image.keep_forever();
        }
        resident
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        self.unload();
    }
}

fn failure(status: u8, message: RString) -> Failure {
    Failure {
        panicked: status == STATUS_PANICKED,
        message: message.into_string(),
    }
}

unsafe extern "C" fn append_to_vec(ctx: *mut c_void, data: *const u8, len: usize) {
    // SAFETY: `ctx` is the `Vec<u8>` of `Library::teardown`, alive for the
    // call; the module passes `len` readable bytes at `data`.
    unsafe { (*ctx.cast::<Vec<u8>>()).extend_from_slice(std::slice::from_raw_parts(data, len)) }
}

/// Finds and checks every function the host calls: present, needing no
/// more access to the state than the host grants, and with argument and
/// return layouts `abi_stable` finds compatible.
fn resolve(
    path: &Path,
    descriptor: &ModuleDescriptor,
    module: &'static str,
    functions: &[FnSpec],
) -> Result<Resolved, Error> {
    // A fresh CheckingGlobals per load: the process-wide one keeps pointers
    // into every library it checked, which dangle once that library unloads.
    let globals = CheckingGlobals::new();
    let mut entries = Vec::with_capacity(functions.len());
    for spec in functions {
        let Some(entry) = descriptor
            .functions
            .iter()
            .find(|entry| entry.name.as_str() == spec.name)
        else {
            return Err(Error::MissingFunction {
                path: path.to_owned(),
                module,
                function: spec.name,
            });
        };
        let changed = |details: String| Error::SignatureChanged {
            module,
            function: spec.name,
            expected: spec.signature,
            found: entry.signature.to_string(),
            details,
        };
        match StateAccess::from_byte(entry.receiver) {
            Some(receiver) if receiver <= spec.receiver => {}
            _ => {
                return Err(changed(
                    "it now needs more access to the module state".to_owned(),
                ))
            }
        }
        // SAFETY of the 'static: the library's layout is only borrowed for this
        // check; the errors are rendered to a String before returning.
        check_layout_compatibility_with_globals(spec.layout, entry.layout, &globals)
            .map_err(|errors| changed(summarize_layout_errors(&errors.to_string())))?;
        // The library's layouts equal the host's (checked above), so the
        // host's own say what the host would keep.
        for kept in spec.kept {
            if let Some(problem) = pointer_inside(kept) {
                return Err(Error::Escapes {
                    module,
                    function: spec.name,
                    problem,
                });
            }
        }
        entries.push((*spec, entry.call));
    }
    Ok(Resolved { entries })
}

/// Why a value of `layout`, made by a version and kept by the host, could
/// outlive that version: the first reference, pointer or function pointer
/// inside it (an `RString`'s buffer, an `RBox`, a `&'static str`, a vtable,
/// an `extern "C" fn`...), which would point into the version's memory
/// after it is unloaded. `None` for plain data.
pub(crate) fn pointer_inside(layout: &'static TypeLayout) -> Option<String> {
    fn walk(layout: &'static TypeLayout, path: &str, depth: usize) -> Option<String> {
        let at = |what: &str| {
            Some(format!(
                "`{path}` is {what}, which would point into the module's memory once its version is unloaded"
            ))
        };
        if depth > 32 {
            return at("nested too deeply to check");
        }
        let fields = match layout.data() {
            TLData::Primitive(
                TLPrimitive::SharedRef
                | TLPrimitive::MutRef
                | TLPrimitive::ConstPtr
                | TLPrimitive::MutPtr,
            ) => {
                return at(&format!(
                    "a reference or pointer (`{}`)",
                    layout.full_type()
                ))
            }
            TLData::Primitive(TLPrimitive::Array) => {
                return layout
                    .shared_vars()
                    .type_layouts()
                    .iter()
                    .find_map(|element| walk(element(), &format!("{path}[_]"), depth + 1));
            }
            TLData::Primitive(_) => return None,
            TLData::Opaque => return at(&format!("opaque (`{}`)", layout.full_type())),
            TLData::PrefixType(_) => {
                return at(&format!("a prefix type (`{}`)", layout.full_type()))
            }
            TLData::Struct { fields } | TLData::Union { fields } => fields,
            TLData::Enum(tl_enum) => tl_enum.fields,
        };
        fields.iter().find_map(|field| {
            let path = format!("{path}.{}", field.name());
            if field.is_function() {
                at("a function pointer")
            } else {
                walk(field.layout(), &path, depth + 1)
            }
        })
    }
    let name = layout.full_type().to_string();
    walk(layout, &name, 0)
}

/// The gist of `abi_stable`'s layout report, which prints both layouts in
/// full: one line per mismatch, naming the type and what differs.
pub(crate) fn summarize_layout_errors(report: &str) -> String {
    let mut summary = Vec::new();
    let mut current_type = "";
    let mut lines = report.lines().map(str::trim).peekable();
    while let Some(line) = lines.next() {
        if line == "Layout of expected type:" {
            for line in lines.by_ref() {
                if let Some(name) = line.strip_prefix("type:") {
                    current_type = name;
                    break;
                }
            }
        } else if let Some(kind) = line.strip_prefix("Error:") {
            let mut detail = Vec::new();
            while let Some(line) =
                lines.next_if(|line| !line.is_empty() && !line.starts_with("Error:"))
            {
                detail.push(line);
            }
            summary.push(format!(
                "  in `{current_type}`: {kind} ({})",
                detail.join(" ")
            ));
        }
    }
    if summary.is_empty() {
        report.to_owned()
    } else {
        summary.join("\n")
    }
}

/// A module function panicked; carries its message.
#[derive(Debug)]
pub struct ModulePanic(pub(crate) String);

/// Shared access to the state, handed out under the state's read lock.
pub struct SharedState<'a> {
    ptr: *mut c_void,
    _lock: PhantomData<&'a ()>,
}

/// Exclusive access to the state, handed out under the state's write lock.
pub struct ExclusiveState<'a> {
    ptr: *mut c_void,
    _lock: PhantomData<&'a mut ()>,
}

impl SharedState<'_> {
    /// For a version without state: its functions take no state pointer.
    pub(crate) fn absent() -> Self {
        Self {
            ptr: ptr::null_mut(),
            _lock: PhantomData,
        }
    }
}

impl ExclusiveState<'_> {
    /// For a version without state: its functions take no state pointer.
    pub(crate) fn absent() -> Self {
        Self {
            ptr: ptr::null_mut(),
            _lock: PhantomData,
        }
    }
}

impl StatePtr {
    /// The state's address, for a call whose lock the caller holds.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0.as_ptr()
    }

    pub(crate) fn shared(&self) -> SharedState<'_> {
        SharedState {
            ptr: self.0.as_ptr(),
            _lock: PhantomData,
        }
    }

    pub(crate) fn exclusive(&mut self) -> ExclusiveState<'_> {
        ExclusiveState {
            ptr: self.0.as_ptr(),
            _lock: PhantomData,
        }
    }
}


impl<E: Export> Shim<E> {
    /// Calls a stateless function.
    #[inline(always)]
    pub fn invoke_stateless(&self, args: E::Args<'_>) -> Result<E::Ret, ModulePanic> {
        const { assert!(E::RECEIVER as u8 == StateAccess::None as u8) };
        self.invoke(ptr::null_mut(), args)
    }

    /// Calls a `&State` function.
    #[inline(always)]
    pub fn invoke_shared(
        &self,
        state: &SharedState<'_>,
        args: E::Args<'_>,
    ) -> Result<E::Ret, ModulePanic> {
        const { assert!(E::RECEIVER as u8 == StateAccess::Shared as u8) };
        self.invoke(state.ptr, args)
    }

    /// Calls a `&mut State` function.
    #[inline(always)]
    pub fn invoke_exclusive(
        &self,
        state: &mut ExclusiveState<'_>,
        args: E::Args<'_>,
    ) -> Result<E::Ret, ModulePanic> {
        const { assert!(E::RECEIVER as u8 == StateAccess::Exclusive as u8) };
        self.invoke(state.ptr, args)
    }

    #[inline(always)]
    fn invoke<'a>(&self, state: *mut c_void, args: E::Args<'a>) -> Result<E::Ret, ModulePanic> {
        const { assert!(std::mem::size_of::<E::Fn<'static>>() == std::mem::size_of::<*const c_void>()) };
        // SAFETY: `raw` is the library's shim for `E`, whose argument and
        // return layouts were checked against the host's at load time, so it
        // has type `E::Fn`; a function pointer and a code address have the
        // same size (asserted above).
        let shim: E::Fn<'a> = unsafe { std::mem::transmute_copy(&self.raw) };
        let mut message = PanicMessage::uninit();
        // SAFETY: `&self` borrows the version that owns the library, so it
        // is loaded; the state pointer matches the receiver (checked above)
        // and is locked accordingly by whoever made the state token.
        let returned = unsafe { shim.call(state, &mut message, args) };
        if returned.panicked {
            // SAFETY: `panicked` means the shim wrote the message; converting
            // it now frees the module's allocation while the module is loaded.
            Err(ModulePanic(unsafe { message.assume_init() }.into_string()))
        } else {
            // SAFETY: no panic means the shim returned a value.
            Ok(unsafe { returned.value.assume_init() })
        }
    }
}
