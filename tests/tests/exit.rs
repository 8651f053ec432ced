//! Nothing is left on disk however a host ends: `process::exit` and
//! `abort` run no destructor, so nothing a `Hot` wrote could be cleaned up
//! (a crash is the same). Each test runs this test binary again as a child
//! that loads a module, swaps it once and dies; the child's temporary
//! directory (`TMPDIR`) is a fresh, empty one that must stay empty, and
//! nothing may appear beside the library either.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use counter::counter::Hot;
use hotswap_runtime::__test_hooks::mapped_module_images;
use hotswap_runtime::Options;
use hotswap_tests::{library, open_module_images, Fixture, Stage};

/// How the child dies: `abort` or `exit`.
const DEATH: &str = "HOTSWAP_TEST_CHILD_DEATH";
/// The library the child opens, and the build it swaps in.
const LIBRARY: &str = "HOTSWAP_TEST_CHILD_LIBRARY";
const NEXT: &str = "HOTSWAP_TEST_CHILD_NEXT";
/// Enough for a debug child to start, load and swap on a busy machine.
const TIMEOUT: Duration = Duration::from_secs(120);
const CHILD: &str = "child_loads_a_module_then_dies";

#[test]
#[ignore = "the child role of the other tests in this file, which run it"]
fn child_loads_a_module_then_dies() {
    let var = |name| {
        std::env::var(name)
            .unwrap_or_else(|_| panic!("{name}: run by the other tests of this file"))
    };
    let (death, library, next) = (var(DEATH), PathBuf::from(var(LIBRARY)), var(NEXT));
    // Background mode: the watcher thread runs too.
    let hot = Hot::open_with(&library, Options::new()).expect("open version 1");
    hot.get().increment(5);
    // Swap once, so a version was retired as well.
    let staged = library.with_file_name("next.so");
    std::fs::copy(&next, &staged).expect("stage version 2");
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&staged, &library).expect("rename version 2 in");
    hot.reload().expect("swap to version 2");
    println!(
        "child: serving version {} with count {}, {} module images mapped, {} open",
        hot.get().version(),
        hot.get().count(),
        mapped_module_images().len(),
        open_module_images(),
    );
    match death.as_str() {
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        other => panic!("unknown death {other:?}"),
    }
}

/// Runs the child, which dies by `death`; returns how it ended and what it
/// printed, once its empty temporary directory and the stage are checked.
fn child_dies(death: &str) -> (ExitStatus, String) {
    let stage = Stage::with(Fixture::V1);
    let next = library(Fixture::V2);
    let child_temp = tempfile::tempdir().unwrap();
    let output = tempfile::tempdir().unwrap();
    let stdout = output.path().join("stdout");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            CHILD,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DEATH, death)
        .env(LIBRARY, stage.path())
        .env(NEXT, &next)
        .env("TMPDIR", child_temp.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(output.path().join("stderr")).unwrap())
        .spawn()
        .expect("run this test binary as the child");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not die within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let printed = std::fs::read_to_string(&stdout).unwrap();
    let stderr = std::fs::read_to_string(output.path().join("stderr")).unwrap();
    assert!(
        printed.contains("child: serving version 2 with count 5, 1 module images mapped, 1 open"),
        "the child loaded and swapped before dying:\n{printed}\n{stderr}"
    );
    assert_eq!(
        entries(child_temp.path()),
        Vec::<String>::new(),
        "left in the child's TMPDIR"
    );
    assert_eq!(
        entries(stage.dir()),
        ["libcounter.so"],
        "left beside the library"
    );
    (status, printed)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_host_that_aborts_leaves_nothing_on_disk() {
    let (status, _) = child_dies("abort");
    assert_eq!(status.signal(), Some(6), "died by SIGABRT: {status}");
}

#[test]
fn a_host_that_calls_process_exit_leaves_nothing_on_disk() {
    let (status, _) = child_dies("exit");
    assert_eq!(status.code(), Some(3), "{status}");
}
