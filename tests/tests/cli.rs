//! The `hotswap` binary of `hotswap-runtime`, run as a user would, on real
//! fixture libraries: what it prints and how it exits.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hotswap_runtime::trust::{signature_path, PublicKey, SecretKey, Sha256Digest, Signature};
use hotswap_tests::{library, Fixture};

/// The `hotswap` binary of `hotswap-runtime` (feature `cli`), built by cargo
/// into the target dir this test runs from, once per process.
///
/// Cargo gives a test `CARGO_BIN_EXE_*` only for its own package's binaries,
/// and this package depends on `hotswap-runtime` without being its
/// dev-dependency: so the test runs cargo itself (up to date in a moment
/// when nothing changed), never a binary left over from an older build.
fn hotswap_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test is `<target dir>/<profile dir>/deps/cli-<hash>`.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary is in <target dir>/<profile>/deps");
        let target_dir = profile_dir.parent().expect("the profile dir has a parent");
        let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile dir name in {}", exe.display()),
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--package", "hotswap-runtime"])
            .args([
                "--features",
                "cli",
                "--bin",
                "hotswap",
                "--profile",
                profile,
            ])
            .arg("--target-dir")
            .arg(target_dir)
            .arg("--manifest-path")
            .arg(hotswap_tests::workspace_root().join("Cargo.toml"))
            .status()
            .expect("run cargo build for the hotswap binary");
        assert!(status.success(), "cargo build of the hotswap binary failed");
        profile_dir.join("hotswap")
    })
}

/// What one run of the tool left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn hotswap<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let output = Command::new(hotswap_binary())
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
    assert!(line(out, "functions").ends_with(" 27"), "{out}");
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
    assert_eq!(listed, 27, "{out}");
}

#[test]
fn inspect_lists_every_module_of_a_library() {
    let run = inspect(Fixture::Greeter);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains(": 4 hot modules\n"), "{out}");
    // Each module's block: from its `module` line to the next blank line.
    let blocks: Vec<&str> = out.split("\n\n").skip(1).collect();
    assert_eq!(blocks.len(), 4, "{out}");
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
    assert_eq!(names, ["counter", "greeting", "leaky", "shelf"]);
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
            "module `counter` (crate counter): compatible (27 functions checked; added: added)"
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

#[test]
fn inspect_and_check_write_nothing_to_disk() {
    // Where a temporary directory would be: missing, then empty.
    let missing = Path::new("/nonexistent/hotswap-tmp");
    let empty = tempfile::tempdir().unwrap();
    for temp in [missing, empty.path()] {
        let run = |args: &[&OsStr]| {
            let output = Command::new(hotswap_binary())
                .args(args)
                .env("TMPDIR", temp)
                .output()
                .expect("run the hotswap binary");
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            (output.status.code(), text)
        };
        let (v1, v2) = (library(Fixture::V1), library(Fixture::V2));
        let (code, text) = run(&[OsStr::new("inspect"), v1.as_os_str()]);
        assert_eq!(
            code,
            Some(0),
            "inspect with TMPDIR={}: {text}",
            temp.display()
        );
        let (code, text) = run(&[OsStr::new("check"), v1.as_os_str(), v2.as_os_str()]);
        assert_eq!(
            code,
            Some(0),
            "check with TMPDIR={}: {text}",
            temp.display()
        );
    }
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
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
    for args in [
        &["check", "only-one.so"][..],
        &["frobnicate"],
        &[],
        &["keygen"],
        &["keygen", "a", "--out", "b"],
        &["sign", "lib.so"],
        &["verify", "lib.so"],
        &["sha256"],
    ] {
        let run = hotswap(args);
        assert_eq!(run.code, 2, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("Usage: hotswap"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for (command, loading) in [
        ("inspect", "so its initializers run"),
        ("check", "so its initializers run"),
        ("sign", "never loaded (no dlopen)"),
        ("verify", "never loaded (no dlopen)"),
        ("sha256", "never loaded (no dlopen)"),
        ("keygen", "Exit codes:"),
    ] {
        let run = hotswap([command, "--help"]);
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains("Exit codes:\n  0  "), "{}", run.stdout);
        assert!(run.stdout.contains(loading), "{}", run.stdout);
    }
}

/// A key pair made by `hotswap keygen DIR/NAME`: the key files.
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let run = hotswap([OsStr::new("keygen"), dir.join(name).as_os_str()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// A private directory holding a copy of version 1 of the counter, to sign.
fn library_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libcounter.so");
    std::fs::copy(library(Fixture::V1), &copy).unwrap();
    (dir, copy)
}

fn sign(library: &Path, key: &Path) -> Run {
    hotswap([
        OsStr::new("sign"),
        library.as_os_str(),
        OsStr::new("--key"),
        key.as_os_str(),
    ])
}

fn verify<S: AsRef<OsStr>>(library: &Path, keys: impl IntoIterator<Item = S>) -> Run {
    let mut args = vec![OsStr::new("verify").to_owned(), library.into()];
    for key in keys {
        args.extend([OsStr::new("--key").to_owned(), key.as_ref().to_owned()]);
    }
    hotswap(args)
}

/// The names of the files in `dir`, sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort_unstable();
    names
}

#[test]
fn keygen_writes_a_private_key_and_never_overwrites_one() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("release");
    let run = hotswap([OsStr::new("keygen"), name.as_os_str()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    let (key, public) = (
        dir.path().join("release.key"),
        dir.path().join("release.pub"),
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    let public_text = std::fs::read_to_string(&public).unwrap();
    assert!(key_text.ends_with('\n') && public_text.ends_with('\n'));
    let secret: SecretKey = key_text.parse().unwrap();
    let public_key: PublicKey = public_text.parse().unwrap();
    assert_eq!(secret.public_key(), public_key);
    assert_eq!(
        run.stdout,
        format!(
            "new key pair\n  secret key  {} (mode 600: whoever can read it can sign builds)\n  public key  {}: {public_key}\n",
            key.display(),
            public.display()
        )
    );

    // Again: refused, and both files are as they were.
    let run = hotswap([OsStr::new("keygen"), name.as_os_str()]);
    assert_refused_file(&run, &key, "exists already: refusing to overwrite it");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), key_text);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_text);

    // A public key alone in the way: refused too, and no secret key left
    // behind without its public key.
    std::fs::remove_file(&key).unwrap();
    let run = hotswap([OsStr::new("keygen"), OsStr::new("--out"), name.as_os_str()]);
    assert_refused_file(&run, &public, "exists already: refusing to overwrite it");
    assert_eq!(files_in(dir.path()), ["release.pub"]);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_text);

    // --out NAME is NAME.
    std::fs::remove_file(&public).unwrap();
    let run = hotswap([OsStr::new("keygen"), OsStr::new("--out"), name.as_os_str()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(files_in(dir.path()), ["release.key", "release.pub"]);

    // NAME.key names the same pair, not NAME.key.key.
    std::fs::remove_file(&key).unwrap();
    std::fs::remove_file(&public).unwrap();
    let run = hotswap([OsStr::new("keygen"), key.as_os_str()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(files_in(dir.path()), ["release.key", "release.pub"]);
}

#[test]
fn sign_then_verify_accepts_the_signed_build() {
    let (dir, library) = library_copy();
    let (key, public) = keygen(dir.path(), "release");
    let public_key = std::fs::read_to_string(&public).unwrap();
    let public_key = public_key.trim();
    let signature = signature_path(&library);
    let sha256 = Sha256Digest::of_file(&library).unwrap();

    let run = sign(&library, &key);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(
        run.stdout,
        format!(
            "{}: signed\n  signature   {}\n  sha256      {sha256}\n  public key  {public_key}\n",
            library.display(),
            signature.display()
        )
    );
    let written = std::fs::read_to_string(&signature).unwrap();
    assert!(written.ends_with('\n'), "{written:?}");
    let parsed: Signature = written.parse().unwrap();
    let public_key: PublicKey = public_key.parse().unwrap();
    assert!(public_key.verifies(&std::fs::read(&library).unwrap(), &parsed));
    // No temporary file left beside it.
    assert_eq!(
        files_in(dir.path()),
        [
            "libcounter.so",
            "libcounter.so.sig",
            "release.key",
            "release.pub"
        ]
    );

    let verified = format!(
        "{}: verified\n  signature   {}\n  sha256      {sha256}\n  public key  {public_key}\n",
        library.display(),
        signature.display()
    );
    let run = verify(&library, [&public]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(run.stdout, verified);
    // The key in hex, after a key that does not verify it.
    let (_, other) = keygen(dir.path(), "other");
    let run = verify(
        &library,
        [other.into_os_string(), public_key.to_string().into()],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, verified);
}

/// `verify` exits with 1 and says why on stdout.
fn assert_not_verified(run: &Run, library: &Path, reason: &str) {
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stderr, "");
    assert_eq!(
        run.stdout,
        format!("{}: not verified: {reason}\n", library.display())
    );
}

/// `verify` exits with 1: the signature of `library` is well-formed but no
/// key given verifies it.
fn assert_no_key_verifies(run: &Run, library: &Path) {
    assert_not_verified(
        run,
        library,
        &format!(
            "its signature {} does not verify with any trusted key: the library changed after \
             it was signed, or another key signed it",
            signature_path(library).display()
        ),
    );
}

#[test]
fn verify_refuses_a_build_changed_after_signing() {
    let (dir, library) = library_copy();
    let (key, public) = keygen(dir.path(), "release");
    assert_eq!(sign(&library, &key).code, 0);
    let mut bytes = std::fs::read(&library).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&library, bytes).unwrap();
    assert_no_key_verifies(&verify(&library, [&public]), &library);
}

#[test]
fn verify_refuses_a_signature_of_another_key() {
    let (dir, library) = library_copy();
    let (key, _) = keygen(dir.path(), "release");
    let (_, other) = keygen(dir.path(), "other");
    assert_eq!(sign(&library, &key).code, 0);
    assert_no_key_verifies(&verify(&library, [&other]), &library);
}

#[test]
fn verify_names_a_missing_or_malformed_signature() {
    let (dir, library) = library_copy();
    let (_, public) = keygen(dir.path(), "release");
    let signature = signature_path(&library);
    assert_not_verified(
        &verify(&library, [&public]),
        &library,
        &format!(
            "it is not signed: no signature at {} (sign it with `hotswap sign`)",
            signature.display()
        ),
    );
    std::fs::write(&signature, "signed, honestly\n").unwrap();
    let run = verify(&library, [&public]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "{}: not verified: its signature {} is unreadable: not an ed25519 signature (128 hex digits expected)",
            library.display(),
            signature.display()
        )),
        "{}",
        run.stdout
    );
}

#[test]
fn sign_refuses_a_key_file_others_can_read() {
    let (dir, library) = library_copy();
    let (key, _) = keygen(dir.path(), "release");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = sign(&library, &key);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        format!(
            "hotswap: error: {} is accessible by other users (mode 640): a secret key must be \
             private; make it so with `chmod 600 {}`\n",
            key.display(),
            key.display()
        )
    );
    assert!(!signature_path(&library).exists());
}

#[test]
fn key_files_mixed_up_or_missing_exit_with_2() {
    let (dir, library) = library_copy();
    let (key, public) = keygen(dir.path(), "release");
    let missing = dir.path().join("missing.so");
    for (run, error) in [
        (
            sign(&library, &public),
            format!("{} is a public key file", public.display()),
        ),
        (
            verify(&library, [&key]),
            format!("{} is a secret key file", key.display()),
        ),
        (
            verify(&library, [dir.path().join("nobody.pub")]),
            format!(
                "--key {}: no such key file, and not a public key in hex either",
                dir.path().join("nobody.pub").display()
            ),
        ),
        (
            sign(&missing, &key),
            format!("cannot read {}", missing.display()),
        ),
        (
            verify(&missing, [&public]),
            format!("cannot read {}", missing.display()),
        ),
    ] {
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert_eq!(run.stdout, "");
        assert!(
            run.stderr.starts_with(&format!("hotswap: error: {error}")),
            "{:?} lacks {error:?}",
            run.stderr
        );
    }
    assert!(!signature_path(&library).exists());
}

#[test]
fn sha256_prints_the_digest_allow_digests_takes() {
    let v1 = library(Fixture::V1);
    let v2 = library(Fixture::V2);
    let run = hotswap([OsStr::new("sha256"), v1.as_os_str(), v2.as_os_str()]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for (line, library) in lines.iter().zip([&v1, &v2]) {
        let (digest, path) = line.split_once("  ").unwrap();
        assert_eq!(path, library.to_str().unwrap());
        assert_eq!(
            digest.parse::<Sha256Digest>().unwrap(),
            Sha256Digest::of_file(library).unwrap()
        );
    }
}

#[test]
fn a_host_trusting_the_key_loads_what_the_tool_signed_and_nothing_else() {
    use counter::counter::Hot;
    use hotswap_runtime::{Error, Options, SwapMode};

    let (dir, library) = library_copy();
    let (key, public) = keygen(dir.path(), "release");
    let trusted: PublicKey = std::fs::read_to_string(&public).unwrap().parse().unwrap();
    let options = || {
        Options::new()
            .swap_mode(SwapMode::Manual)
            .trust_keys([trusted])
    };
    let error = Hot::open_with(&library, options()).expect_err("not signed yet");
    assert!(matches!(error, Error::Untrusted { .. }), "{error}");

    assert_eq!(sign(&library, &key).code, 0);
    let hot = Hot::open_with(&library, options()).expect("signed by the trusted key");
    assert_eq!(hot.get().version(), 1);

    // `verify` and the runtime agree on a changed build.
    let mut changed = std::fs::read(&library).unwrap();
    let last = changed.len() - 1;
    changed[last] ^= 0x01;
    std::fs::write(&library, &changed).unwrap();
    assert_eq!(verify(&library, [&public]).code, 1);
    let error = hot.reload().expect_err("changed after signing");
    assert!(matches!(error, Error::Untrusted { .. }), "{error}");
    assert_eq!(hot.get().version(), 1);
}

#[test]
fn inspect_lists_what_a_module_calls() {
    let built = tempfile::tempdir().unwrap();
    let orders = built.path().join("libshop_orders.so");
    hotswap_shop::build_module(
        hotswap_shop::Module::Orders,
        hotswap_shop::Version::V1,
        &orders,
    )
    .expect("build the shop's orders module");
    let run = hotswap([OsStr::new("inspect"), orders.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Its callees' code is linked in, headers and all: three modules.
    assert!(run.stdout.contains(": 3 hot modules"), "{}", run.stdout);
    let orders_section = run
        .stdout
        .split("\n\n")
        .find(|section| section.starts_with("module `orders`"))
        .expect("orders is listed");
    assert!(
        orders_section.contains("  uses           shop_catalog::catalog, shop_pricing::pricing\n"),
        "{orders_section}"
    );
    assert!(
        orders_section.contains("  services       Store_TO<'lt>, Time_TO<'lt>\n"),
        "{orders_section}"
    );

    let json = hotswap([
        OsStr::new("inspect"),
        OsStr::new("--json"),
        orders.as_os_str(),
    ]);
    let document: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    let modules = document["modules"].as_array().expect("modules");
    let orders = modules
        .iter()
        .find(|module| module["module"] == "orders")
        .expect("orders");
    assert_eq!(
        orders["uses"],
        serde_json::json!(["shop_catalog::catalog", "shop_pricing::pricing"])
    );
    let catalog = modules
        .iter()
        .find(|module| module["module"] == "catalog")
        .expect("catalog");
    assert!(
        catalog.get("uses").is_none(),
        "a module that calls nothing has no `uses`: {catalog}"
    );
}
