//! The `hotswap` binary, run as a user would, on real fixture libraries:
//! what it prints and how it exits.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use hotswap_tests::{library, Fixture};

/// What one run of the tool left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hotswap<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_hotswap"))
        .args(args)
        .output()
        .expect("run the hotswap binary");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

fn inspect(fixture: Fixture) -> Run {
    hotswap([OsStr::new("inspect"), library(fixture).as_os_str()])
}

fn check(old: Fixture, new: Fixture) -> Run {
    hotswap([
        OsStr::new("check"),
        library(old).as_os_str(),
        library(new).as_os_str(),
    ])
}

/// The line of the output that starts with `start` (after indentation).
fn line<'a>(output: &'a str, start: &str) -> &'a str {
    output
        .lines()
        .find(|line| line.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{output}"))
}

/// The `abi_stable` ABI the fixtures were built with: this crate's.
fn abi_stable_version() -> String {
    let header = abi_stable::library::AbiHeader::VALUE;
    format!("{}.{}", header.abi_major, header.abi_minor)
}

#[test]
fn inspect_lists_every_function_with_its_signature_and_receiver() {
    let run = inspect(Fixture::V1);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    let out = &run.stdout;
    assert!(
        out.starts_with(&format!(
            "{}: 1 hot module\n",
            library(Fixture::V1).display()
        )),
        "{out}"
    );
    assert_eq!(
        line(out, "module"),
        "module `counter` (crate counter 0.1.0)"
    );
    assert_eq!(
        line(out, "symbol").split_whitespace().collect::<Vec<_>>(),
        ["symbol", "__hotswap_module__counter__counter"]
    );
    assert!(line(out, "abi_stable").ends_with(&format!("ABI {}", abi_stable_version())));
    assert!(line(out, "state handoff").ends_with("messagepack/rmp-serde-named"));
    assert!(line(out, "setup").ends_with("yes"));
    assert!(line(out, "teardown").ends_with("yes"));
    assert!(line(out, "functions").ends_with(" 23"), "{out}");
    for (receiver, signature) in [
        ("&mut State", "fn increment(&mut State, by: u64) -> u64"),
        ("&State", "fn count(&State) -> u64"),
        ("stateless", "fn greet(name: &str) -> String"),
        ("stateless", "fn nothing()"),
        (
            "stateless",
            "fn centroid(points: &[Point]) -> Option<Point>",
        ),
    ] {
        let listed = out
            .lines()
            .any(|line| line == format!("    {receiver:<11} {signature}"));
        assert!(listed, "`{signature}` as {receiver} missing in:\n{out}");
    }
    let listed = out.lines().filter(|line| line.contains(" fn ")).count();
    assert_eq!(listed, 23, "{out}");
}

#[test]
fn inspect_lists_every_module_of_a_library() {
    let run = inspect(Fixture::Greeter);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains(": 2 hot modules\n"), "{out}");
    // Each module's block: from its `module` line to the next blank line.
    let blocks: Vec<&str> = out.split("\n\n").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{out}");
    let counter = blocks
        .iter()
        .find(|block| block.starts_with("module `counter` (crate greeter 0.1.0)"))
        .unwrap_or_else(|| panic!("no counter module in:\n{out}"));
    assert!(line(counter, "setup").ends_with("yes"), "{counter}");
    assert!(
        counter.contains("&mut State  fn add(&mut Tally, amount: i64) -> i64"),
        "{counter}"
    );
    let greeting = blocks
        .iter()
        .find(|block| block.starts_with("module `greeting` (crate greeter 0.1.0)"))
        .unwrap_or_else(|| panic!("no greeting module in:\n{out}"));
    assert!(line(greeting, "setup").ends_with("no"), "{greeting}");
    assert!(line(greeting, "teardown").ends_with("no"), "{greeting}");
    assert!(
        greeting.contains("stateless   fn greet(name: &str) -> String"),
        "{greeting}"
    );
}

#[test]
fn inspect_json_holds_the_same_listing() {
    let run = hotswap([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        library(Fixture::Greeter).as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let document: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    assert_eq!(
        document["path"].as_str(),
        library(Fixture::Greeter).to_str()
    );
    let modules = document["modules"].as_array().expect("a list of modules");
    let mut names: Vec<&str> = modules
        .iter()
        .map(|module| module["module"].as_str().expect("a module name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["counter", "greeting"]);
    let counter = modules
        .iter()
        .find(|module| module["module"] == "counter")
        .expect("counter");
    assert_eq!(counter["symbol"], "__hotswap_module__greeter__counter");
    assert_eq!(counter["crate_name"], "greeter");
    assert_eq!(counter["crate_version"], "0.1.0");
    assert_eq!(counter["handoff_format"], "messagepack/rmp-serde-named");
    assert_eq!(counter["setup"], true);
    assert_eq!(
        format!(
            "{}.{}",
            counter["abi_stable"]["major"], counter["abi_stable"]["minor"]
        ),
        abi_stable_version()
    );
    assert_eq!(
        counter["functions"],
        serde_json::json!([{
            "name": "add",
            "signature": "fn add(&mut Tally, amount: i64) -> i64",
            "receiver": "&mut State",
        }])
    );
}

#[test]
fn inspect_names_a_module_it_cannot_read() {
    let run = inspect(Fixture::BadAbi);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("symbol __hotswap_module__counter__counter: cannot be read by this hotswap"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "built with abi_stable ABI 0.10, this host uses abi_stable ABI {}",
            abi_stable_version()
        )),
        "{out}"
    );
}

#[test]
fn check_accepts_a_build_that_adds_functions() {
    let run = check(Fixture::V1, Fixture::V2);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    assert!(
        run.stdout.contains(
            "module `counter` (crate counter): compatible (23 functions checked; added: added)"
        ),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .ends_with("\ncompatible: a host built against OLD accepts NEW\n"));

    // The other way round, `added` is missing.
    let run = check(Fixture::V2, Fixture::V1);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("has no function `added`"),
        "{}",
        run.stdout
    );
}

/// `check` from version 1 to `new`: exit code 1, the module refused with
/// `reason` and the verdict, on stdout. Returns stdout.
fn assert_check_refuses(new: Fixture, reason: &str) -> String {
    let run = check(Fixture::V1, new);
    assert_eq!(run.code, 1, "{new:?}: {}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "", "{new:?}");
    let out = run.stdout;
    for expected in [
        "module `counter` (crate counter): incompatible\n",
        reason,
        "\nincompatible: a host built against OLD would refuse NEW\n",
    ] {
        assert!(
            out.contains(expected),
            "{new:?}: {expected:?} missing in:\n{out}"
        );
    }
    out
}

#[test]
fn check_names_a_changed_signature() {
    // Word for word what `reload()` says (tests/tests/core.rs).
    let out = assert_check_refuses(
        Fixture::ChangedSignature,
        "function `increment` of module `counter` changed its signature: the host was compiled against `fn increment(&mut State, by: u64) -> u64`, the library has `fn increment(&mut State, by: u32) -> u64`",
    );
    assert!(out.contains("mismatched type"), "{out}");
}

#[test]
fn check_names_a_missing_function() {
    assert_check_refuses(
        Fixture::MissingFunction,
        &format!(
            "module `counter` in {} has no function `greet`, which this host calls",
            library(Fixture::MissingFunction).display()
        ),
    );
}

#[test]
fn check_refuses_another_abi_stable() {
    assert_check_refuses(
        Fixture::BadAbi,
        &format!(
            "{} is incompatible with this host: built with abi_stable ABI 0.10",
            library(Fixture::BadAbi).display()
        ),
    );
}

#[test]
fn check_refuses_a_build_without_the_module() {
    let out = assert_check_refuses(
        Fixture::Greeter,
        "does not export hot module `counter` (symbol `__hotswap_module__counter__counter` not found)",
    );
    assert!(
        out.contains("module `greeting` (crate greeter): only in NEW"),
        "{out}"
    );
}

/// Exit code 2, nothing on stdout, and an error naming `file` on stderr.
fn assert_refused_file(run: &Run, file: &Path, problem: &str) {
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "");
    let expected = format!("hotswap: error: {}", file.display());
    assert!(
        run.stderr.contains(&expected) && run.stderr.contains(problem),
        "stderr {:?} lacks {expected:?} or {problem:?}",
        run.stderr
    );
}

#[test]
fn files_that_are_not_module_libraries_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a library").unwrap();
    let v1 = library(Fixture::V1);

    let run = hotswap([OsStr::new("inspect"), text.as_os_str()]);
    assert_refused_file(&run, &text, "is not a loadable library: not an ELF file");
    let run = hotswap([OsStr::new("check"), text.as_os_str(), v1.as_os_str()]);
    assert_refused_file(&run, &text, "is not a loadable library: not an ELF file");
    let run = hotswap([OsStr::new("check"), v1.as_os_str(), text.as_os_str()]);
    assert_refused_file(&run, &text, "is not a loadable library: not an ELF file");

    // An ELF file without any hot module: this test's own executable.
    let elf = std::env::current_exe().unwrap();
    let run = hotswap([OsStr::new("inspect"), elf.as_os_str()]);
    assert_refused_file(&run, &elf, "exports no hot module");

    let missing = dir.path().join("missing.so");
    let run = hotswap([OsStr::new("inspect"), missing.as_os_str()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with(&format!(
            "hotswap: error: cannot read module library {}",
            missing.display()
        )),
        "{}",
        run.stderr
    );

    // A library of OLD that cannot be read leaves nothing to check against.
    let run = check(Fixture::BadAbi, Fixture::V1);
    assert_refused_file(
        &run,
        &library(Fixture::BadAbi),
        "built with abi_stable ABI 0.10",
    );
}

#[test]
fn usage_errors_exit_with_2_and_help_documents_the_exit_codes() {
    for args in [&["check", "only-one.so"][..], &["frobnicate"], &[]] {
        let run = hotswap(args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("Usage: hotswap"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for command in ["inspect", "check"] {
        let run = hotswap([command, "--help"]);
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains("Exit codes:\n  0  "), "{}", run.stdout);
        assert!(
            run.stdout.contains("so its initializers run"),
            "{}",
            run.stdout
        );
    }
}
