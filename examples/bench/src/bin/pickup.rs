//! How fast a new build serves, measured the way a developer meets it: a
//! debug host (this binary, without `--release`) and debug module builds.
//!
//! - `rename`: a ~24 MB debug build renamed over the watched library →
//!   `SwapEvent::Swapped`, with the swap's own breakdown;
//! - `edit`: a module source saved by rename (write a temporary file,
//!   rename it over `src/lib.rs`) → rebuild on save → `Swapped`, beside how
//!   long cargo took; and first, cargo's incremental build of that module by
//!   itself, with and without the flags rebuild on save passes;
//! - both print how far apart the file events of one save, and of cargo
//!   putting its output in place, arrive (what the debounce and the
//!   watcher's quiet period must cover).
//!
//! `cargo run -p hotswap-bench --bin pickup [-- rename|edit] [--runs N]`
//!
//! The module crates are written to `target/hotswap-pickup`, and built in
//! its `target` (which cargo must create, marking it as a target directory
//! for rebuild on save to recognise); the first run compiles their
//! dependencies there (a few minutes on two cores).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_module::bench::Hot;
use hotswap_runtime::trust::Sha256Digest;
use hotswap_runtime::{Options, SwapEvent, SwapTimings};
use hotswap_scratch::{build_crate, workspace_root, ScratchCrate, SERDE};
use notify::{RecursiveMode, Watcher as _};

/// How long one swap may take before the run is given up.
const PATIENCE: Duration = Duration::from_secs(300);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|arg| arg == "--runs")
        .and_then(|at| args.get(at + 1))
        .map_or(9, |runs| runs.parse().expect("--runs N"));
    let only = |what: &str| {
        !args.iter().any(|arg| arg == "rename" || arg == "edit")
            || args.iter().any(|arg| arg == what)
    };
    if cfg!(debug_assertions) {
        println!("debug host (as `cargo run` builds it)");
    } else {
        println!("release host: run without --release to measure what a debug host does");
    }
    let out = workspace_root().join("target/hotswap-pickup");
    if only("rename") {
        rename(&out, runs);
    }
    if only("edit") {
        edit(&out, runs);
    }
}

/// The bench module's source with one more function, `edition()`, that
/// returns `edition`: each edition is a different build.
fn module_source(edition: u64) -> String {
    let source = std::fs::read_to_string(workspace_root().join("examples/bench-module/src/lib.rs"))
        .expect("read the bench module's source");
    let anchor = "    pub fn data_len(";
    assert!(source.contains(anchor), "the bench module changed");
    source.replacen(
        anchor,
        &format!("    pub fn edition() -> u64 {{\n        {edition}\n    }}\n\n{anchor}"),
        1,
    )
}

fn scratch(dir: &Path, edition: u64) -> ScratchCrate {
    ScratchCrate::new(dir, "bench-module").source(module_source(edition))
}

/// (a) Renamed debug builds → `Swapped`.
fn rename(out: &Path, runs: usize) {
    // The size of a module with some dependencies: the whole runtime
    // compiled in (as in the modules the issue measured), and two functions
    // using serde_json and regex (without its Unicode tables), about 24 MB
    // in a debug build.
    let builds: Vec<Vec<u8>> = (1..=2)
        .map(|edition| {
            println!("building debug module {edition} of 2 (runtime, serde_json, regex) ...");
            let crate_dir = out.join(format!("rename-{edition}"));
            let source = module_source(edition).replacen(
                "    pub fn edition()",
                "    pub fn to_json(state: &State) -> String {\n        serde_json::to_string(&state.data).unwrap_or_default()\n    }\n\n    pub fn matches(pattern: &str, text: &str) -> bool {\n        regex::Regex::new(pattern).is_ok_and(|regex| regex.is_match(text))\n    }\n\n    pub fn edition()",
                1,
            );
            let library = ScratchCrate::new(&crate_dir, "bench-module")
                .source(source)
                .dependencies(format!("{SERDE}\nserde_json = \"1\"\nregex = {{ version = \"1\", default-features = false, features = [\"std\"] }}\n"))
                .runtime_features(&["host"])
                .write()
                .map_err(|error| error.to_string())
                .and_then(|dir| {
                    build_crate(&dir, "bench-module", &out.join("target"))
                        .map_err(|error| error.to_string())
                })
                .unwrap_or_else(|error| panic!("building module {edition}: {error}"));
            std::fs::read(library).expect("read the built module")
        })
        .collect();
    println!(
        "\n(a) rename of a {:.1} MB debug build -> Swapped, {runs} runs",
        builds[1].len() as f64 / 1e6
    );
    renames(&builds, Options::new(), runs);
    // SHA-256 of every build, unoptimised like the rest of this host.
    let digests = builds.iter().map(|build| Sha256Digest::of(build));
    let runs = runs.div_ceil(2);
    println!("\n(a) the same with Options::allow_digests (SHA-256 in `admit`), {runs} runs");
    renames(&builds, Options::new().allow_digests(digests), runs);
}

/// Renames `builds` in turn over a library opened with `options`.
fn renames(builds: &[Vec<u8>], options: Options, runs: usize) {
    let stage = tempfile::tempdir().expect("stage directory");
    let library = stage.path().join("libbench_module.so");
    let next = stage.path().join("next.so");
    std::fs::write(&library, &builds[0]).expect("stage version 1");
    let hot = Hot::open_with(&library, options).expect("open version 1");
    let events = hot.subscribe();
    let recorder = Recorder::watch(stage.path(), RecursiveMode::NonRecursive);
    let mut samples = Samples::default();
    for run in 0..runs {
        let bytes = &builds[(run + 1) % 2];
        std::fs::write(&next, bytes).expect("write the next build");
        // Let the write's own events pass: only the rename is timed.
        std::thread::sleep(Duration::from_millis(100));
        recorder.clear();
        let renamed = Instant::now();
        std::fs::rename(&next, &library).expect("rename");
        let timings = next_swap(&events);
        let took = renamed.elapsed();
        samples.push("rename -> file event", recorder.first_since(renamed));
        println!("  run {run}: {}  |  {timings}", Millis(took));
        samples.push("rename -> Swapped", took);
        samples.push_timings(&timings);
        samples.push("event spread", recorder.spread(|path| path == library));
        // Let the retired version unload before the next one lands.
        std::thread::sleep(Duration::from_millis(300));
        let _ = events.try_iter().count();
    }
    assert_eq!(hot.generation(), runs as u64, "every rename was swapped in");
    samples.print();
}

/// (b) Save by rename → rebuild on save → `Swapped`.
fn edit(out: &Path, runs: usize) {
    let crate_dir = out.join("edit");
    println!("\nbuilding the tiny debug module the edit loop rebuilds ...");
    let crate_dir = scratch(&crate_dir, 0)
        .write()
        .expect("write the module crate");
    let target_dir = out.join("target");
    let library = build_crate(&crate_dir, "bench-module", &target_dir).expect("build the module");
    let source = crate_dir.join("src/lib.rs");
    let save = |edition: u64| {
        // What editors do: write the whole file beside, rename it over.
        let temporary = crate_dir.join("src/.lib.rs.tmp");
        std::fs::write(&temporary, module_source(edition)).expect("write the source");
        std::fs::rename(&temporary, &source).expect("rename the source");
    };

    println!("\n(b) incremental debug build of the tiny module by cargo alone, {runs} runs");
    let mut cargo_alone = Samples::default();
    let mut edition = 1000;
    for _ in 0..runs {
        for (name, flags) in [
            ("cargo build --lib", &[][..]),
            (
                "  + rebuild on save's flags",
                &[
                    "--message-format=json-render-diagnostics",
                    "--profile",
                    "dev",
                ][..],
            ),
        ] {
            edition += 1;
            save(edition);
            let started = Instant::now();
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--quiet", "--lib", "--manifest-path"])
                .arg(crate_dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target_dir)
                .args(flags)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run cargo");
            assert!(status.success(), "cargo build failed");
            cargo_alone.push(name, started.elapsed());
        }
    }
    cargo_alone.print();

    let hot = Hot::open_with(&library, Options::new().rebuild_on_save(&crate_dir)).expect("open");
    let events = hot.subscribe();
    let sources = Recorder::watch(&crate_dir.join("src"), RecursiveMode::NonRecursive);
    let outputs = Recorder::watch(
        library.parent().expect("a directory"),
        RecursiveMode::NonRecursive,
    );
    println!("\n(b) save by rename -> rebuild on save -> Swapped, {runs} runs");
    let mut samples = Samples::default();
    for run in 0..runs {
        edition += 1;
        sources.clear();
        outputs.clear();
        let saved = Instant::now();
        save(edition);
        let (mut built, mut timings, mut took) = (None, None, Duration::ZERO);
        while built.is_none() || timings.is_none() {
            match events.recv_timeout(PATIENCE).expect("a rebuild") {
                SwapEvent::Built { took, .. } => built = Some(took),
                SwapEvent::Swapped { timings: swap, .. } => {
                    took = saved.elapsed();
                    timings = Some(swap);
                }
                SwapEvent::BuildFailed { error, .. } | SwapEvent::Refused { error, .. } => {
                    panic!("{error}")
                }
                _ => {}
            }
        }
        let (Some(built), Some(timings)) = (built, timings) else {
            unreachable!()
        };
        // (Swapped arrives before Built when the library watcher took
        // cargo's output before cargo exited.)
        assert_eq!(hot.generation(), run as u64 + 1, "each save was swapped in");
        println!(
            "  run {run}: save -> serving {}, cargo {}, overhead {}  |  {timings}",
            Millis(took),
            Millis(built),
            Millis(took.saturating_sub(built)),
        );
        samples.push("save -> serving", took);
        samples.push("cargo build (Built.took)", built);
        samples.push("overhead (serving - cargo)", took.saturating_sub(built));
        samples.push_timings(&timings);
        samples.push(
            "save: event spread",
            sources.spread(|path| path.extension().is_some_and(|extension| extension == "rs")),
        );
        samples.push(
            "cargo output: event spread",
            outputs.spread(|path| path == library),
        );
        std::thread::sleep(Duration::from_millis(300));
        let _ = events.try_iter().count();
    }
    samples.print();
}

/// The timings of the next swap.
fn next_swap(events: &Receiver<SwapEvent>) -> SwapTimings {
    loop {
        match events.recv_timeout(PATIENCE).expect("a swap") {
            SwapEvent::Swapped { timings, .. } => return timings,
            SwapEvent::Refused { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
}

/// Records when file events arrive under a directory.
struct Recorder {
    events: Arc<Mutex<Vec<(Instant, PathBuf)>>>,
    _watcher: notify::RecommendedWatcher,
}

impl Recorder {
    fn watch(directory: &Path, mode: RecursiveMode) -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let at = Instant::now();
                if let Ok(event) = event {
                    if !event.kind.is_access() {
                        let mut sink = sink.lock().unwrap();
                        sink.extend(event.paths.into_iter().map(|path| (at, path)));
                    }
                }
            })
            .expect("a watcher");
        watcher.watch(directory, mode).expect("watch");
        Self {
            events,
            _watcher: watcher,
        }
    }

    fn clear(&self) {
        self.events.lock().unwrap().clear();
    }

    /// From `since` until the first event.
    fn first_since(&self, since: Instant) -> Duration {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .map(|(at, _)| at.saturating_duration_since(since))
            .min()
            .unwrap_or_default()
    }

    /// From the first to the last event about a path `matches` accepts.
    fn spread(&self, matches: impl Fn(&Path) -> bool) -> Duration {
        let events = self.events.lock().unwrap();
        let times: Vec<Instant> = events
            .iter()
            .filter(|(_, path)| matches(path))
            .map(|(at, _)| *at)
            .collect();
        match (times.iter().min(), times.iter().max()) {
            (Some(first), Some(last)) => *last - *first,
            _ => Duration::ZERO,
        }
    }
}

/// Durations by name, in the order first seen.
#[derive(Default)]
struct Samples(Vec<(&'static str, Vec<Duration>)>);

impl Samples {
    fn push(&mut self, name: &'static str, took: Duration) {
        match self.0.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, samples)) => samples.push(took),
            None => self.0.push((name, vec![took])),
        }
    }

    fn push_timings(&mut self, timings: &SwapTimings) {
        if let Some(debounce) = timings.debounce {
            self.push("  debounce", debounce);
        }
        if let Some(build) = timings.build {
            self.push("  build (to output noticed)", build);
        }
        self.push("  detect", timings.detect);
        self.push("  read", timings.read);
        self.push("  admit", timings.admit);
        self.push("  load", timings.load);
        self.push("  check", timings.check);
        self.push("  critical section", timings.critical_section);
        self.push("  total (SwapTimings)", timings.total);
    }

    fn print(&self) {
        println!("  {:<32} {:>10} {:>10} {:>10}", "", "min", "median", "max");
        for (name, samples) in &self.0 {
            let mut sorted = samples.clone();
            sorted.sort();
            println!(
                "  {name:<32} {:>10} {:>10} {:>10}",
                Millis(sorted[0]).to_string(),
                Millis(sorted[sorted.len() / 2]).to_string(),
                Millis(sorted[sorted.len() - 1]).to_string(),
            );
        }
    }
}

struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ms", self.0.as_secs_f64() * 1e3)
    }
}
