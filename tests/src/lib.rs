//! Support for the integration tests: builds the fixture module crates into
//! real cdylibs, once per test run, and stages them where a `Hot` opens them.
//!
//! `counter-v1`, `counter-v2`, `counter-bad-abi` and `greeter` are crates in
//! `fixtures/` (the first and last are workspace members: this crate links
//! them as the test host). The other variants are version 1 with one visible edit,
//! written to a scratch crate and built like the rest, so each differs from
//! version 1 in exactly the way its name says.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hotswap_scratch::ScratchCrate;

/// A module library the tests can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// What the test host is compiled against.
    V1,
    /// New behaviour, a gained and a dropped state field, an added function.
    V2,
    /// Version 1 with `increment` taking `u32` instead of `u64`.
    ChangedSignature,
    /// Version 1 without `greet`.
    MissingFunction,
    /// Version 1 whose `setup` panics.
    SetupPanics,
    /// Version 1 whose `setup` returns an error.
    SetupFails,
    /// Version 1 calling a symbol nothing defines: `dlopen` refuses it.
    Unresolved,
    /// Version 1 whose `version()` returns what `hotswap_test_late_symbol`
    /// returns, a symbol it does not define: `dlopen` refuses it until
    /// [`Fixture::LateSymbolProvider`] is loaded into the global scope.
    NeedsLateSymbol,
    /// Not a module: a plain library defining `hotswap_test_late_symbol`
    /// (returning 3).
    LateSymbolProvider,
    /// Version 1 whose `teardown` panics.
    TeardownPanics,
    /// Version 1 whose `version()` uses a thread-local with a destructor (in
    /// a helper outside the hot module, as a dependency would): glibc keeps
    /// such a library mapped after `dlclose` until the thread exits.
    ThreadLocalDestructor,
    /// A hand-written header claiming another `abi_stable` ABI.
    BadAbi,
    /// A hand-written header under `counter`'s symbol describing another
    /// module.
    ForgedHeader,
    /// A second module crate with two modules.
    Greeter,
    /// Version 1 whose state cannot be encoded for handoff at a count of 41.
    EncodeFails,
    /// Version 1 built with `panic = "abort"`.
    PanicAbort,
    /// Version 1 whose `fail` panics with a payload whose `Drop` panics too.
    PayloadDropPanics,
    /// The `greeter` crate whose `shelf` module lost its `setup` and
    /// `teardown`, and with them its state.
    GreeterShelfWithoutSetup,
    /// Version 1 whose `version()` returns what the C library
    /// `libhotswapdep.so` ([`dependency_library`]) returns, 3: it needs that
    /// library (`DT_NEEDED`) and has a `DT_RUNPATH` of
    /// [`RUNPATH_PLACEHOLDER`], which [`with_runpath`] replaces.
    NeedsLibrary,
}

/// The `DT_RUNPATH` of [`Fixture::NeedsLibrary`] as built: long enough for
/// [`with_runpath`] to write a temporary directory over it.
pub const RUNPATH_PLACEHOLDER: &str = "/hotswap-test-runpath-placeholder-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The soname of the C library [`Fixture::NeedsLibrary`] needs.
pub const DEPENDENCY: &str = "libhotswapdep.so";

/// A fixture that is version 1 with edits: `(find, replace)` pairs.
struct Edit {
    name: &'static str,
    changes: Vec<(&'static str, &'static str)>,
    /// Appended to the manifest.
    manifest: &'static str,
    /// The crate's `build.rs`, if it has one.
    build_script: Option<String>,
}

impl Fixture {
    fn edit(self) -> Option<Edit> {
        let edit = |name, find, replace| {
            Some(Edit {
                name,
                changes: vec![(find, replace)],
                manifest: "",
                build_script: None,
            })
        };
        match self {
            Self::ChangedSignature => edit(
                "counter-changed-sig",
                "pub fn increment(state: &mut State, by: u64) -> u64 {\n        state.count += by;",
                "pub fn increment(state: &mut State, by: u32) -> u64 {\n        state.count += u64::from(by);",
            ),
            Self::MissingFunction => edit(
                "counter-missing-fn",
                "pub fn greet(name: &str) -> String {\n        format!(\"hello, {name}\")\n    }",
                "",
            ),
            Self::SetupPanics => edit(
                "counter-setup-panics",
                "pub fn setup(prev: Option<State>) -> State {\n        prev.unwrap_or_default()",
                "pub fn setup(prev: Option<State>) -> State {\n        panic!(\"setup refuses to start (offered a count of {})\", prev.map_or(0, |state| state.count))",
            ),
            Self::SetupFails => edit(
                "counter-setup-fails",
                "pub fn setup(prev: Option<State>) -> State {\n        prev.unwrap_or_default()",
                "pub fn setup(prev: Option<State>) -> Result<State, String> {\n        match prev {\n            Some(state) if state.count > 0 => Err(format!(\"will not take over a count of {}\", state.count)),\n            other => Ok(other.unwrap_or_default()),\n        }",
            ),
            Self::Unresolved => edit(
                "counter-unresolved",
                "pub fn version() -> u32 {\n        1\n    }",
                "pub fn version() -> u32 {\n        extern \"C\" {\n            fn hotswap_test_symbol_that_nothing_defines() -> u32;\n        }\n        // SAFETY: never runs: dlopen refuses the library first.\n        unsafe { hotswap_test_symbol_that_nothing_defines() }\n    }",
            ),
            Self::NeedsLateSymbol => edit(
                "counter-late-symbol",
                "pub fn version() -> u32 {\n        1\n    }",
                "pub fn version() -> u32 {\n        extern \"C\" {\n            fn hotswap_test_late_symbol() -> u32;\n        }\n        // SAFETY: a plain `extern \"C\" fn() -> u32`; dlopen refuses the\n        // library until something defines it.\n        unsafe { hotswap_test_late_symbol() }\n    }",
            ),
            Self::TeardownPanics => edit(
                "counter-teardown-panics",
                "pub fn teardown(state: State) -> State {\n        assert_eq",
                "pub fn teardown(state: State) -> State {\n        if state.count < u64::MAX {\n            panic!(\"teardown gives up at a count of {}\", state.count);\n        }\n        assert_eq",
            ),
            Self::ThreadLocalDestructor => Some(Edit {
                name: "counter-tls-destructor",
                changes: vec![
                    (
                        "use hotswap_runtime::hot_module;",
                        "use hotswap_runtime::hot_module;\n\npub struct Noisy(u32);\n\nimpl Drop for Noisy {\n    fn drop(&mut self) {\n        self.0 = 0;\n    }\n}\n\nthread_local! {\n    static NOISY: std::cell::RefCell<Noisy> = const { std::cell::RefCell::new(Noisy(1)) };\n}\n\npub fn touch_thread_local() -> u32 {\n    NOISY.with(|noisy| noisy.borrow().0)\n}",
                    ),
                    ("pub fn version() -> u32 {\n        1\n    }", "pub fn version() -> u32 {\n        crate::touch_thread_local()\n    }"),
                ],
                manifest: "",
                build_script: None,
            }),
            Self::EncodeFails => Some(Edit {
                name: "counter-encode-fails",
                changes: vec![
                    (
                        "    pub struct State {\n        pub count: u64,",
                        "    pub struct State {\n        #[serde(serialize_with = \"crate::refuse_41\")]\n        pub count: u64,",
                    ),
                    (
                        "use hotswap_runtime::hot_module;\n",
                        "use hotswap_runtime::hot_module;\n\n/// Encodes a count, except 41.\npub fn refuse_41<S: serde::Serializer>(count: &u64, serializer: S) -> Result<S::Ok, S::Error> {\n    if *count == 41 {\n        return Err(serde::ser::Error::custom(\"41 cannot be encoded\"));\n    }\n    serializer.serialize_u64(*count)\n}\n",
                    ),
                ],
                manifest: "",
                build_script: None,
            }),
            Self::PanicAbort => Some(Edit {
                name: "counter-panic-abort",
                changes: Vec::new(),
                manifest: "\n[profile.dev]\npanic = \"abort\"\n",
                build_script: None,
            }),
            Self::PayloadDropPanics => Some(Edit {
                name: "counter-payload-drop-panics",
                changes: vec![
                    (
                        "    pub fn fail(message: &str) -> u32 {\n        panic!(\"{message}\")",
                        "    pub fn fail(message: &str) -> u32 {\n        std::panic::panic_any(crate::Bomb(message.to_owned()))",
                    ),
                    (
                        "use hotswap_runtime::hot_module;\n",
                        "use hotswap_runtime::hot_module;\n\n/// A panic payload whose drop panics too.\npub struct Bomb(pub String);\n\nimpl Drop for Bomb {\n    fn drop(&mut self) {\n        panic!(\"dropping the payload of {:?} panics\", self.0);\n    }\n}\n",
                    ),
                ],
                manifest: "",
                build_script: None,
            }),
            Self::GreeterShelfWithoutSetup => Some(Edit {
                name: "greeter-shelf-without-setup",
                changes: vec![(
                    "    pub fn setup(prev: Option<Shelf>) -> Shelf {\n        prev.unwrap_or_default()\n    }\n\n    pub fn teardown(shelf: Shelf) -> Shelf {\n        shelf\n    }\n",
                    "",
                )],
                manifest: "",
                build_script: None,
            }),
            Self::ForgedHeader => Some(Edit {
                name: "counter-forged-header",
                changes: vec![
                    ("    abi_stable: AbiStableVersion { major: 0, minor: 10, ..AbiStableVersion::CURRENT },\n", ""),
                    ("ModuleDescriptor::stateless(\"counter\"", "ModuleDescriptor::stateless(\"gauge\""),
                ],
                manifest: "",
                build_script: None,
            }),
            Self::NeedsLibrary => {
                let linked = dependency_library(&modules_dir().join("dependency"), None);
                let link_dir = linked.parent().expect("has a parent").display().to_string();
                Some(Edit {
                    name: "counter-needs-library",
                    changes: vec![(
                        "pub fn version() -> u32 {\n        1\n    }",
                        "pub fn version() -> u32 {\n        extern \"C\" {\n            fn hotswap_test_dependency() -> u32;\n        }\n        // SAFETY: a C function of libhotswapdep.so without arguments.\n        unsafe { hotswap_test_dependency() }\n    }",
                    )],
                    manifest: "",
                    build_script: Some(format!(
                        "fn main() {{\n    println!(\"cargo:rustc-link-search=native={link_dir}\");\n    println!(\"cargo:rustc-link-lib=dylib=hotswapdep\");\n    println!(\"cargo:rustc-link-arg=-Wl,--enable-new-dtags,-rpath,{RUNPATH_PLACEHOLDER}\");\n}}\n"
                    )),
                })
            }
            _ => None,
        }
    }

    /// The name of its library in the fixtures directory.
    fn name(self) -> &'static str {
        self.edit().map_or(self.crate_dir(), |edit| edit.name)
    }

    /// The package the fixture is a version of.
    fn package(self) -> &'static str {
        match self {
            Self::Greeter | Self::GreeterShelfWithoutSetup => "greeter",
            Self::LateSymbolProvider => "hotswap-late-symbol",
            _ => "counter",
        }
    }

    fn crate_dir(self) -> &'static str {
        match self {
            Self::V2 => "counter-v2",
            Self::BadAbi | Self::ForgedHeader => "counter-bad-abi",
            Self::Greeter | Self::GreeterShelfWithoutSetup => "greeter",
            Self::LateSymbolProvider => "late-symbol",
            _ => "counter-v1",
        }
    }
}

/// The workspace root.
pub use hotswap_scratch::workspace_root;

fn modules_dir() -> PathBuf {
    workspace_root().join("target/hotswap-modules")
}

/// Builds the C library [`Fixture::NeedsLibrary`] needs into `dir` as
/// `libhotswapdep.so` (mode 0644): its constructor creates `marker`, if
/// given. Returns its path.
pub fn dependency_library(dir: &Path, marker: Option<&Path>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create dependency dir");
    let output = dir.join(DEPENDENCY);
    // Written aside and renamed: a test process may be loading the last one.
    let building = dir.join(format!("{DEPENDENCY}.{}", std::process::id()));
    let mut cc = std::process::Command::new("cc");
    cc.args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-Wl,-soname,{DEPENDENCY}"))
        .arg("-o")
        .arg(&building)
        .arg(workspace_root().join("tests/fixtures/dependency/dependency.c"));
    if let Some(marker) = marker {
        cc.arg(format!("-DMARKER={:?}", marker.display().to_string()));
    }
    let status = cc.status().expect("run cc");
    assert!(status.success(), "cc failed to build {DEPENDENCY}");
    std::fs::set_permissions(&building, std::fs::Permissions::from_mode(0o644))
        .expect("set dependency permissions");
    std::fs::rename(&building, &output).expect("rename dependency");
    output
}

/// `bytes` (a build of [`Fixture::NeedsLibrary`]) with its `DT_RUNPATH`
/// changed to `runpath`, which must not be longer than
/// [`RUNPATH_PLACEHOLDER`].
pub fn with_runpath(bytes: &[u8], runpath: &str) -> Vec<u8> {
    let placeholder = RUNPATH_PLACEHOLDER.as_bytes();
    assert!(
        runpath.len() <= placeholder.len(),
        "runpath too long: {runpath}"
    );
    let at = bytes
        .windows(placeholder.len())
        .position(|window| window == placeholder)
        .expect("the build has the placeholder runpath");
    let mut patched = bytes.to_vec();
    let slot = &mut patched[at..at + placeholder.len()];
    slot.fill(0);
    slot[..runpath.len()].copy_from_slice(runpath.as_bytes());
    patched
}

/// The built library of `fixture`, built on first use in this process.
pub fn library(fixture: Fixture) -> PathBuf {
    // Held while building: fixtures share a target dir and a library name.
    static BUILT: Mutex<Option<HashMap<Fixture, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(&fixture) {
        return path.clone();
    }
    let root = workspace_root();
    let modules = modules_dir();
    if std::env::var_os(CHILD).is_some() {
        // The parent built it before starting this process (see `in_child`).
        return modules
            .join("fixtures")
            .join(format!("{}.so", fixture.name()));
    }
    let base = root.join("tests/fixtures").join(fixture.crate_dir());
    let output = match fixture.edit() {
        None => {
            let manifest =
                std::fs::read_to_string(base.join("Cargo.toml")).expect("read fixture manifest");
            if manifest.contains("[workspace]") {
                hotswap_scratch::copy_lock(&base).expect("copy Cargo.lock");
            }
            hotswap_scratch::build_crate(&base, fixture.package(), &modules)
        }
        Some(edit) => {
            edited_crate(&base, &modules.join("edited").join(edit.name), &edit).build(&modules)
        }
    };
    let output = output.unwrap_or_else(|error| panic!("building fixture {fixture:?}: {error}"));
    let name = fixture.name();
    let stable = modules.join("fixtures").join(format!("{name}.so"));
    std::fs::create_dir_all(stable.parent().expect("has a parent")).expect("create fixtures dir");
    std::fs::copy(&output, &stable).expect("copy built library");
    built.insert(fixture, stable.clone());
    stable
}

/// A scratch copy of version 1's crate, named `name`, reset to version 1's
/// source and built in the shared target dir: returns the crate's directory
/// and the library where cargo put it, for tests that edit the source.
///
/// Only one test process at a time may use it (it shares `libcounter.so`
/// with the other fixtures): keep such tests in their own test binary.
pub fn scratch_counter(name: &'static str) -> (PathBuf, PathBuf) {
    let edit = Edit {
        name,
        changes: Vec::new(),
        manifest: "",
        build_script: None,
    };
    let modules = modules_dir();
    let scratch = edited_crate(
        &workspace_root().join("tests/fixtures/counter-v1"),
        &modules.join("edited").join(name),
        &edit,
    );
    let library = scratch
        .build(&modules)
        .unwrap_or_else(|error| panic!("building {name}: {error}"));
    (scratch.dir().to_owned(), library)
}

/// `library(fixture)` without debug info: about a tenth of the size, for
/// tests that load a library a thousand times.
pub fn stripped_library(fixture: Fixture) -> PathBuf {
    // Once per process: tests run in parallel and must not read a file that
    // `strip` is still writing.
    static STRIPPED: Mutex<Option<HashMap<Fixture, PathBuf>>> = Mutex::new(None);
    let mut stripped = STRIPPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let stripped = stripped.get_or_insert_with(HashMap::new);
    if let Some(path) = stripped.get(&fixture) {
        return path.clone();
    }
    let full = library(fixture);
    let output = full.with_extension("stripped.so");
    let status = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg(&full)
        .arg("-o")
        .arg(&output)
        .status()
        .expect("run strip (binutils)");
    assert!(status.success(), "strip failed on {}", full.display());
    stripped.insert(fixture, output.clone());
    output
}

/// The scratch crate at `scratch`: the fixture crate at `base` with `edit`
/// applied to its source, same package, edition and dependencies.
fn edited_crate(base: &Path, scratch: &Path, edit: &Edit) -> ScratchCrate {
    let mut source = std::fs::read_to_string(base.join("src/lib.rs")).expect("read base source");
    for (find, replace) in &edit.changes {
        assert!(
            source.contains(find),
            "fixture {}: the edit no longer applies to {}",
            edit.name,
            base.display()
        );
        source = source.replace(find, replace);
    }
    let manifest = std::fs::read_to_string(base.join("Cargo.toml")).expect("read base manifest");
    ScratchCrate::new(scratch, manifest_value(&manifest, "name"))
        .edition(manifest_value(&manifest, "edition"))
        .dependencies(dependencies(&manifest))
        .source(source)
        .manifest_extra(edit.manifest)
        .build_script(edit.build_script.clone())
}

/// The string value of the first `key = "…"` line of a fixture's manifest.
fn manifest_value<'a>(manifest: &'a str, key: &str) -> &'a str {
    manifest
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once('=')?;
            (name.trim() == key).then(|| value.trim().trim_matches('"'))
        })
        .unwrap_or_else(|| panic!("no `{key}` in a fixture manifest:\n{manifest}"))
}

/// A fixture manifest's `[dependencies]` lines but `hotswap-runtime`, which
/// a scratch crate has anyway.
fn dependencies(manifest: &str) -> String {
    let (_, table) = manifest
        .split_once("\n[dependencies]\n")
        .expect("a fixture manifest has [dependencies]");
    table
        .lines()
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.starts_with('#') && !line.starts_with("hotswap-runtime"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A private directory holding the library path a `Hot` is opened on; tests
/// replace what is at that path the way a build would.
pub struct Stage {
    dir: tempfile::TempDir,
}

impl Stage {
    /// A stage holding `fixture`.
    pub fn with(fixture: Fixture) -> Self {
        Self::with_file(&library(fixture))
    }

    /// A stage holding a copy of the library `file`.
    pub fn with_file(file: &Path) -> Self {
        let stage = Self {
            dir: tempfile::tempdir().expect("create stage"),
        };
        stage.put_file(file);
        stage
    }

    /// Where the library is.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("libcounter.so")
    }

    /// Replaces the library with `fixture`, atomically (write, then rename).
    pub fn put(&self, fixture: Fixture) {
        self.put_bytes(&std::fs::read(library(fixture)).expect("read fixture"));
    }

    /// Replaces the library with a copy of `file`, atomically.
    pub fn put_file(&self, file: &Path) {
        self.put_bytes(&std::fs::read(file).expect("read library"));
    }

    /// Replaces the library with `bytes`, atomically.
    pub fn put_bytes(&self, bytes: &[u8]) {
        let next = self.dir.path().join("next.so");
        std::fs::write(&next, bytes).expect("write staged library");
        // Whatever the umask: the runtime refuses libraries others can write.
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o644))
            .expect("set staged library permissions");
        std::fs::rename(&next, self.path()).expect("rename staged library");
    }

    /// The directory holding the library.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Removes the library.
    pub fn remove(&self) {
        std::fs::remove_file(self.path()).expect("remove staged library");
    }
}

/// The environment variable that tells a test it runs as [`in_child`]'s
/// child.
const CHILD: &str = "HOTSWAP_TEST_CHILD";

/// What a child test process did.
#[derive(Debug)]
pub struct ChildOutcome {
    /// Its exit status; `None` if it was killed for running past the
    /// timeout (a hang).
    pub status: Option<std::process::ExitStatus>,
    /// What it printed to stderr (and stdout, after it).
    pub output: String,
}

impl ChildOutcome {
    /// The signal that ended it, if one did.
    pub fn signal(&self) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        self.status.and_then(|status| status.signal())
    }
}

/// Runs the calling test again in a child process, for behaviour that could
/// crash or hang the test process: returns `None` in the child (which then
/// does the dangerous part), and in the parent what the child did, killing
/// it after `timeout`. `test` is the test's name as libtest knows it;
/// `fixtures` are built first (the child uses them as built, and builds
/// none).
pub fn in_child(
    test: &str,
    fixtures: &[Fixture],
    timeout: std::time::Duration,
) -> Option<ChildOutcome> {
    if std::env::var_os(CHILD).is_some() {
        return None;
    }
    for &fixture in fixtures {
        library(fixture);
    }
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the child test process");
    // Drained as it comes, so a chatty child never blocks on a full pipe.
    let drain = |stream: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_string(&mut text);
            }
            text
        })
    };
    use std::io::Read;
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let output = stderr.join().unwrap_or_default() + &stdout.join().unwrap_or_default();
    Some(ChildOutcome { status, output })
}

/// The bytes a module version was loaded from: its in-memory file, found
/// among this process's open descriptors by device and inode (the runtime
/// keeps it open while the version is loaded).
pub fn image_bytes(image: hotswap_runtime::FileId) -> Vec<u8> {
    std::fs::read(image_descriptor(image)).expect("read the in-memory file")
}

/// The `/proc/self/fd/N` path of a module version's in-memory file: the
/// name glibc knows the loaded library by.
pub fn image_descriptor(image: hotswap_runtime::FileId) -> PathBuf {
    open_descriptors()
        .into_iter()
        .find(|path| hotswap_runtime::FileId::of_path(path).ok() == Some(image))
        .unwrap_or_else(|| panic!("no open descriptor of the in-memory file {image}"))
}

/// How many descriptors of this process are module images (in-memory
/// files named `hotswap:…`).
pub fn open_module_images() -> usize {
    open_descriptors()
        .into_iter()
        .filter(|path| {
            std::fs::read_link(path)
                .is_ok_and(|target| target.to_string_lossy().starts_with("/memfd:hotswap:"))
        })
        .count()
}

fn open_descriptors() -> Vec<PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect()
}

/// This process's resident memory, in KiB.
pub fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in KiB")
}

/// A bound on waiting for progress in the load tests, so a failure shows
/// as a failure and not a hang. Nothing measures time with it.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// What the swapper and the clients of a load test wait on each other for.
#[derive(Default)]
pub struct Progress {
    counts: Mutex<Counts>,
    changed: std::sync::Condvar,
}

/// The counts behind [`Progress`].
#[derive(Debug, Default)]
pub struct Counts {
    /// Swaps (or rounds of swaps) completed.
    pub swaps: u64,
    /// Replies received, by all clients.
    pub replies: u64,
    /// A thread panicked: the others stop instead of waiting for it.
    pub aborted: bool,
}

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` and returns what it returns, waking every waiter.
    pub fn update<R>(&self, change: impl FnOnce(&mut Counts) -> R) -> R {
        let result = change(&mut self.lock());
        self.changed.notify_all();
        result
    }

    /// Blocks until `done` holds, or panics naming `what` after
    /// [`PATIENCE`] or when another thread panicked.
    pub fn wait_until(&self, what: &str, done: impl Fn(&Counts) -> bool) {
        let (counts, timeout) = self
            .changed
            .wait_timeout_while(self.lock(), PATIENCE, |counts| {
                !done(counts) && !counts.aborted
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            !counts.aborted,
            "gave up waiting for {what}: another thread panicked"
        );
        assert!(
            !timeout.timed_out(),
            "no progress while waiting for {what} ({counts:?})"
        );
    }
}

/// Marks a [`Progress`] aborted when dropped by a panicking thread.
pub struct AbortOnPanic<'a>(pub &'a Progress);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.update(|counts| counts.aborted = true);
        }
    }
}

/// Builds the fixture crate in `tests/fixtures/FIXTURE` (package `package`)
/// with `edit` applied to its `src/lib.rs`, and copies the library to
/// `target/hotswap-tests/FIXTURE-NAME.so`, which it returns.
///
/// Builds of one process take turns (every build of a package writes the
/// same cdylib name), and a child process of [`in_child`] builds nothing:
/// it finds what its parent built, which may be building another variant
/// of the same package into that same file meanwhile.
pub fn build_variant(
    fixture: &str,
    package: &str,
    name: &str,
    edit: Option<(&str, &str)>,
    dependencies: &str,
) -> PathBuf {
    static BUILDING: Mutex<()> = Mutex::new(());
    let root = workspace_root();
    let library = root.join(format!("target/hotswap-tests/{fixture}-{name}.so"));
    if std::env::var_os(CHILD).is_some() {
        return library;
    }
    let _turn = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = root.join("tests/fixtures").join(fixture).join("src/lib.rs");
    let source = std::fs::read_to_string(&path).expect("read the fixture");
    let source = match edit {
        None => source,
        Some((from, to)) => {
            let edited = source.replace(from, to);
            assert_ne!(edited, source, "{} has {from:?}", path.display());
            edited
        }
    };
    let built = ScratchCrate::new(
        root.join("target/hotswap-tests").join(fixture).join(name),
        package,
    )
    .edition("2021")
    .dependencies(dependencies)
    .source(source)
    .build(&root.join("target/hotswap-modules"))
    .unwrap_or_else(|error| panic!("build {fixture} {name}: {error}"));
    std::fs::copy(built, &library).expect("copy the build");
    library
}

/// The message a panic carried (a module's panic is resumed with a
/// `String`); empty for another payload.
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| {
            payload
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
        })
        .unwrap_or_default()
}
