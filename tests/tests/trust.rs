//! Only trusted code loads: every refusal happens before `dlopen` (nothing
//! is loaded, so none of the build's code ran), names the problem, is
//! reported as a swap event, and keeps the old version serving with its
//! state.

use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use counter::counter::Hot;
use hotswap_runtime::trust::{signature_path, SecretKey, Sha256Digest, TrustProblem};
use hotswap_runtime::{Error, Options, SwapEvent, SwapMode};
use hotswap_tests::{
    dependency_library, image_bytes, library, with_runpath, Fixture, Stage, DEPENDENCY,
};

fn bytes_of(fixture: Fixture) -> Vec<u8> {
    std::fs::read(library(fixture)).expect("read fixture")
}

fn sign(stage: &Stage, key: &SecretKey) {
    let library = std::fs::read(stage.path()).expect("read staged library");
    // Written whole, then renamed: a watcher never reads half a signature.
    let next = stage.dir().join("next.sig");
    std::fs::write(&next, format!("{}\n", key.sign(&library))).expect("write signature");
    std::fs::rename(&next, signature_path(&stage.path())).expect("rename signature");
}

thread_local! {
    /// Builds that got past the trust checks on this test's thread.
    static LOADS: Cell<usize> = const { Cell::new(0) };
}

/// Counts a build that passed the checks and is about to be loaded.
fn count_load(_: &Path) {
    LOADS.with(|loads| loads.set(loads.get() + 1));
}

/// Manual swaps on the test's thread, counting what gets loaded.
fn manual() -> Options {
    Options::new()
        .swap_mode(SwapMode::Manual)
        .__before_load(count_load)
}

/// Version 1, signed by `key`, opened with only `key` trusted, its state
/// brought to a known count.
fn signed_v1(key: &SecretKey, options: Options) -> (Stage, Hot) {
    let stage = Stage::with(Fixture::V1);
    sign(&stage, key);
    let hot = Hot::open_with(stage.path(), options.trust_keys([key.public_key()]))
        .expect("open signed version 1");
    hot.get().increment(7);
    (stage, hot)
}

/// Version 1, opened with `options`, its state brought to a known count.
fn v1_serving(options: Options) -> (Stage, Hot) {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), options).expect("open version 1");
    hot.get().increment(7);
    (stage, hot)
}

/// What every refusal must leave: version 1 serving, state intact, and
/// the refused build stopped before loading (no `dlopen`).
fn assert_refused_before_loading(hot: &Hot, error: &Error) -> TrustProblem {
    assert_stopped_before_loading(hot, error);
    match (error, hot.last_error()) {
        (Error::Untrusted { problem, .. }, Some(Error::Untrusted { .. })) => problem.clone(),
        other => panic!("not a trust refusal: {other:?}"),
    }
}

/// Version 1 serving with its state, and nothing of the refused build
/// loaded: it did not get past the checks.
fn assert_stopped_before_loading(hot: &Hot, error: &Error) {
    assert_eq!(
        LOADS.with(Cell::get),
        1,
        "only version 1 got past the checks: {error}"
    );
    assert_eq!(hot.generation(), 0, "{error}");
    assert_eq!(hot.get().version(), 1);
    assert_eq!(hot.get().count(), 7);
    assert_eq!(
        Sha256Digest::of(&image_bytes(hot.serving_image())),
        Sha256Digest::of(&bytes_of(Fixture::V1)),
        "what serves was loaded from version 1's bytes"
    );
}

fn refused(events: &Receiver<SwapEvent>) -> Error {
    events
        .try_iter()
        .find_map(|event| match event {
            SwapEvent::Refused { error, .. } => Some(error),
            _ => None,
        })
        .expect("a Refused event")
}

#[test]
fn an_unsigned_build_is_refused() {
    let key = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, manual());
    let events = hot.subscribe();
    // A build that would fail inside dlopen: refused before it gets there.
    stage.put(Fixture::Unresolved);
    std::fs::remove_file(signature_path(&stage.path())).unwrap();
    let error = hot.reload().expect_err("no signature");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::SignatureMissing { signature } if *signature == signature_path(&stage.path())),
        "{problem}"
    );
    assert!(
        error
            .to_string()
            .contains("it is not signed: no signature at"),
        "{error}"
    );
    assert!(matches!(refused(&events), Error::Untrusted { .. }));
}

#[test]
fn a_build_with_one_flipped_byte_is_refused() {
    let key = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, manual());
    stage.put(Fixture::V2);
    sign(&stage, &key);
    let mut tampered = std::fs::read(stage.path()).unwrap();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    stage.put_bytes(&tampered);
    let error = hot.reload().expect_err("tampered");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(problem, TrustProblem::SignatureInvalid { .. }),
        "{problem}"
    );
    assert!(
        error
            .to_string()
            .contains("does not verify with any trusted key"),
        "{error}"
    );

    // The untouched, signed build is accepted.
    stage.put(Fixture::V2);
    hot.reload().expect("signed version 2");
    assert_eq!((hot.get().version(), hot.get().count()), (2, 7));
}

#[test]
fn a_build_signed_by_another_key_is_refused() {
    let key = SecretKey::generate().unwrap();
    let stranger = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, manual());
    stage.put(Fixture::V2);
    sign(&stage, &stranger);
    let error = hot.reload().expect_err("signed by a key nobody trusts");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(problem, TrustProblem::SignatureInvalid { .. }),
        "{problem}"
    );
}

#[test]
fn a_build_whose_digest_is_not_allowed_is_refused() {
    let v1 = Sha256Digest::of(&bytes_of(Fixture::V1));
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), manual().allow_digests([v1])).expect("v1 is allowed");
    hot.get().increment(7);
    stage.put(Fixture::V2);
    let error = hot.reload().expect_err("v2 is not allowed");
    let problem = assert_refused_before_loading(&hot, &error);
    let v2 = Sha256Digest::of(&bytes_of(Fixture::V2));
    assert!(
        matches!(problem, TrustProblem::DigestNotAllowed { sha256 } if sha256 == v2),
        "{problem}"
    );
    assert!(error.to_string().contains(&v2.to_string()), "{error}");
}

#[test]
fn a_library_others_can_write_is_refused_unless_allowed() {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), manual()).unwrap();
    hot.get().increment(7);
    stage.put(Fixture::V2);
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let error = hot.reload().expect_err("world-writable library");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::WritableByOthers { path, mode } if *path == stage.path() && mode & 0o777 == 0o666),
        "{problem}"
    );
    assert!(
        error
            .to_string()
            .contains("is writable by other users (mode 666)"),
        "{error}"
    );

    // The development switch lets it through.
    let relaxed = Hot::open_with(stage.path(), manual().allow_insecure_files(true))
        .expect("allowed for development");
    assert_eq!(relaxed.get().version(), 2);
}

#[test]
fn a_library_in_a_directory_others_can_write_is_refused() {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), manual()).unwrap();
    hot.get().increment(7);
    stage.put(Fixture::V2);
    std::fs::set_permissions(stage.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let error = hot.reload().expect_err("world-writable directory");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::WritableByOthers { path, .. } if path == stage.dir()),
        "{problem}"
    );
    let error = Hot::open_with(stage.path(), manual()).expect_err("open refuses it too");
    assert!(matches!(error, Error::Untrusted { .. }), "{error}");
}

#[test]
fn a_library_owned_by_another_user_or_writable_by_another_group_is_refused() {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), manual()).unwrap();
    hot.get().increment(7);
    stage.put(Fixture::V2);
    let me = current_uid(stage.dir());
    if me != 0 {
        // Only root can give a file away (CI runs as root); other users
        // are covered by the permission tests above.
        eprintln!("not root: skipping the ownership and group cases");
        return;
    }
    // Group-writable by another group: refused.
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o664)).unwrap();
    std::os::unix::fs::chown(stage.path(), None, Some(4242)).unwrap();
    let error = hot.reload().expect_err("writable by group 4242");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::WritableByOthers { .. }),
        "{problem}"
    );
    std::os::unix::fs::chown(stage.path(), Some(4242), Some(0)).unwrap();
    let error = hot.reload().expect_err("owned by uid 4242");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::OwnedByOtherUser { owner: 4242, .. }),
        "{problem}"
    );
    // Group-writable by the user's private group (root's is gid 0): fine,
    // as on distributions whose users build with umask 002.
    std::os::unix::fs::chown(stage.path(), Some(0), Some(0)).unwrap();
    hot.reload()
        .expect("group-writable by the user's own group");
    assert_eq!((hot.get().version(), hot.get().count()), (2, 7));
}

/// The current user: the owner of a directory this process created.
fn current_uid(created: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(created).unwrap().uid()
}

#[test]
fn replacing_the_file_between_check_and_load_changes_nothing() {
    let key = SecretKey::generate().unwrap();
    let stage = Stage::with(Fixture::V1);
    sign(&stage, &key);
    let unresolved = bytes_of(Fixture::Unresolved);
    let original = stage.path();
    // Right after the checks pass, an attacker swaps in a build that was
    // never signed (one that dlopen would refuse, so loading it would show).
    let attack = move |path: &Path| {
        count_load(path);
        if path == original && std::fs::read(path).unwrap() != unresolved {
            let next = path.with_extension("attack");
            std::fs::write(&next, &unresolved).unwrap();
            std::fs::rename(&next, path).unwrap();
        }
    };
    let hot = Hot::open_with(
        stage.path(),
        manual()
            .trust_keys([key.public_key()])
            .__before_load(attack),
    )
    .expect("the checked bytes are the ones loaded");
    assert_eq!(hot.get().version(), 1);
    hot.get().increment(7);
    assert_eq!(
        Sha256Digest::of(&image_bytes(hot.serving_image())),
        Sha256Digest::of(&bytes_of(Fixture::V1)),
        "the in-memory file loaded holds the checked build"
    );
    // The file on disk is now the attacker's: the next reload checks it
    // and refuses it.
    let error = hot
        .reload()
        .expect_err("the replacement is not signed by the key");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(problem, TrustProblem::SignatureInvalid { .. }),
        "{problem}"
    );
}

/// The watcher's next verdict on a build: `Ok` once swapped, `Err` when
/// refused.
fn next_verdict(events: &Receiver<SwapEvent>) -> Result<(), Error> {
    loop {
        match events
            .recv_timeout(Duration::from_secs(30))
            .expect("a verdict")
        {
            SwapEvent::Swapped { .. } => return Ok(()),
            SwapEvent::Refused { error, .. } => return Err(error),
            _ => {}
        }
    }
}

#[test]
fn a_watched_build_waits_for_its_signature() {
    let key = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, Options::new());
    let events = hot.subscribe();
    // The build lands first, beside the previous build's signature:
    // refused and reported...
    stage.put(Fixture::V2);
    let error = next_verdict(&events).expect_err("the old signature does not fit");
    assert!(
        matches!(
            &error,
            Error::Untrusted {
                problem: TrustProblem::SignatureInvalid { .. },
                ..
            }
        ),
        "{error}"
    );
    assert_eq!((hot.get().version(), hot.get().count()), (1, 7));
    // ...then its signature lands, and the same build is taken.
    sign(&stage, &key);
    next_verdict(&events).expect("signed now");
    assert_eq!((hot.get().version(), hot.get().count()), (2, 7));
}

#[test]
fn a_watched_build_is_taken_once_its_permissions_are_fixed() {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open(stage.path()).unwrap();
    hot.get().increment(7);
    let events = hot.subscribe();
    let writable = stage.dir().join("writable.so");
    std::fs::write(&writable, bytes_of(Fixture::V2)).unwrap();
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::rename(&writable, stage.path()).unwrap();
    let error = next_verdict(&events).expect_err("world-writable");
    assert!(
        error.to_string().contains("writable by other users"),
        "{error}"
    );
    assert_eq!((hot.get().version(), hot.get().count()), (1, 7));
    // Same bytes, fixed mode: worth another look.
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    next_verdict(&events).expect("private now");
    assert_eq!((hot.get().version(), hot.get().count()), (2, 7));

    // The same for the directory: refused while others can write it...
    std::fs::set_permissions(stage.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    stage.put(Fixture::V1);
    let error = next_verdict(&events).expect_err("world-writable directory");
    assert!(
        matches!(&error, Error::Untrusted { problem: TrustProblem::WritableByOthers { path, .. }, .. } if path == stage.dir()),
        "{error}"
    );
    // ...and taken once it is fixed, though the library did not change.
    std::fs::set_permissions(stage.dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    next_verdict(&events).expect("private directory now");
    assert_eq!((hot.get().version(), hot.get().count()), (1, 7));
}

#[test]
fn a_link_into_a_directory_others_can_write_is_refused() {
    let stage = Stage::with(Fixture::V1);
    let hot = Hot::open_with(stage.path(), manual()).unwrap();
    hot.get().increment(7);
    // The library the link leads to sits in a world-writable directory.
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let target = shared.path().join("libcounter.so");
    std::fs::write(&target, bytes_of(Fixture::V2)).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    let link = stage.dir().join("link.so");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    std::fs::rename(&link, stage.path()).unwrap();
    let error = hot
        .reload()
        .expect_err("the target's directory is world-writable");
    let problem = assert_refused_before_loading(&hot, &error);
    let shared_dir = shared.path().canonicalize().unwrap();
    assert!(
        matches!(&problem, TrustProblem::WritableByOthers { path, .. } if *path == shared_dir),
        "{problem}"
    );
}

#[test]
fn a_signed_build_of_another_module_is_refused_before_loading() {
    let key = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, manual());
    // Signed by the trusted key, but it is `greeter`, not `counter`.
    stage.put(Fixture::Greeter);
    sign(&stage, &key);
    let error = hot.reload().expect_err("greeter is not counter");
    assert_stopped_before_loading(&hot, &error);
    assert!(
        matches!(&error, Error::NotAModule { module: "counter", symbol, .. } if symbol == "__hotswap_module__counter__counter"),
        "{error:?}"
    );
    assert!(
        matches!(hot.last_error(), Some(Error::NotAModule { .. })),
        "{:?}",
        hot.last_error()
    );
}

/// Tests that load `libhotswapdep.so` run one at a time: once it is in the
/// process, it counts as loaded for every other test.
static DEPENDENCY_TESTS: Mutex<()> = Mutex::new(());

/// A build of [`Fixture::NeedsLibrary`] whose `DT_RUNPATH` is a fresh
/// directory holding `libhotswapdep.so`, whose constructor would create
/// `marker`.
struct NeedsLibrary {
    dir: tempfile::TempDir,
    marker: PathBuf,
    build: Vec<u8>,
    _serial: MutexGuard<'static, ()>,
}

impl NeedsLibrary {
    fn new() -> Self {
        let serial = DEPENDENCY_TESTS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps.contains(DEPENDENCY),
            "{DEPENDENCY} is still loaded from an earlier test"
        );
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("constructor-ran");
        dependency_library(dir.path(), Some(&marker));
        let build = with_runpath(
            &bytes_of(Fixture::NeedsLibrary),
            &dir.path().display().to_string(),
        );
        Self {
            dir,
            marker,
            build,
            _serial: serial,
        }
    }

    fn library(&self) -> PathBuf {
        self.dir.path().join(DEPENDENCY)
    }

    fn assert_never_loaded(&self) {
        assert!(
            !self.marker.exists(),
            "the dependency's constructor ran: it was loaded"
        );
    }
}

#[test]
fn with_pinned_keys_a_build_with_a_runpath_is_refused() {
    let needs = NeedsLibrary::new();
    let key = SecretKey::generate().unwrap();
    let (stage, hot) = signed_v1(&key, manual());
    // Signed, and its dependency is safe where its RUNPATH says: still
    // refused, since nothing pins the dependency's bytes.
    stage.put_bytes(&needs.build);
    sign(&stage, &key);
    let error = hot.reload().expect_err("a RUNPATH under pinned keys");
    let problem = assert_refused_before_loading(&hot, &error);
    let dir = needs.dir.path().display().to_string();
    assert!(
        matches!(&problem, TrustProblem::LibrarySearchPath { tag: "DT_RUNPATH", entry } if *entry == dir),
        "{problem:?}"
    );
    assert!(
        error
            .to_string()
            .contains("link the dependency into the host or preload it"),
        "{error}"
    );
    needs.assert_never_loaded();

    // A `$ORIGIN` entry says why it cannot work either way.
    stage.put_bytes(&with_runpath(&bytes_of(Fixture::NeedsLibrary), "$ORIGIN"));
    sign(&stage, &key);
    let error = hot.reload().expect_err("a $ORIGIN RUNPATH");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::LibrarySearchPath { entry, .. } if entry == "$ORIGIN"),
        "{problem:?}"
    );
    assert!(
        error
            .to_string()
            .contains("`$ORIGIN` would be `/proc/self/fd`"),
        "{error}"
    );
}

#[test]
fn with_pinned_digests_a_build_with_a_runpath_is_refused() {
    let needs = NeedsLibrary::new();
    let allowed = [
        Sha256Digest::of(&bytes_of(Fixture::V1)),
        Sha256Digest::of(&needs.build),
    ];
    let (stage, hot) = v1_serving(manual().allow_digests(allowed));
    stage.put_bytes(&needs.build);
    let error = hot.reload().expect_err("a RUNPATH under pinned digests");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(
            &problem,
            TrustProblem::LibrarySearchPath {
                tag: "DT_RUNPATH",
                ..
            }
        ),
        "{problem:?}"
    );
    needs.assert_never_loaded();
}

#[test]
fn a_dependency_others_can_write_is_refused_unless_allowed() {
    let needs = NeedsLibrary::new();
    let (stage, hot) = v1_serving(manual());
    std::fs::set_permissions(needs.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(needs.library(), std::fs::Permissions::from_mode(0o666)).unwrap();
    stage.put_bytes(&needs.build);
    let error = hot.reload().expect_err("world-writable dependency");
    let problem = assert_refused_before_loading(&hot, &error);
    let TrustProblem::InsecureDependency {
        library,
        needed_by: None,
        problem,
    } = &problem
    else {
        panic!("{problem:?}");
    };
    assert_eq!(library, DEPENDENCY);
    assert!(
        matches!(&**problem, TrustProblem::WritableByOthers { path, mode } if *path == needs.library() && mode & 0o777 == 0o666),
        "{problem:?}"
    );
    assert!(
        error.to_string().contains(&format!(
            "its dependency `{DEPENDENCY}` would be loaded unchecked: {}",
            needs.library().display()
        )),
        "{error}"
    );
    needs.assert_never_loaded();

    // The file is fixed, its directory is not.
    std::fs::set_permissions(needs.library(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = hot
        .reload()
        .expect_err("world-writable dependency directory");
    let problem = assert_refused_before_loading(&hot, &error);
    let dir = needs.dir.path().canonicalize().unwrap();
    assert!(
        matches!(&problem, TrustProblem::InsecureDependency { problem, .. } if matches!(&**problem, TrustProblem::WritableByOthers { path, .. } if *path == dir)),
        "{problem:?}"
    );
    needs.assert_never_loaded();

    // The development switch lets it through, as it does the module.
    let relaxed = Hot::open_with(stage.path(), manual().allow_insecure_files(true))
        .expect("allowed for development");
    assert_eq!(relaxed.get().version(), 3, "served by the dependency");
    assert!(needs.marker.exists(), "the dependency was loaded");
}

#[test]
fn a_dependency_found_with_safe_permissions_is_loaded() {
    let needs = NeedsLibrary::new();
    let (stage, hot) = v1_serving(manual());
    stage.put_bytes(&needs.build);
    hot.reload()
        .expect("the dependency is private to its owner");
    assert_eq!((hot.get().version(), hot.get().count()), (3, 7));
    assert!(needs.marker.exists(), "loaded from the RUNPATH checked");
}

#[test]
fn a_dependency_found_nowhere_is_refused_and_origin_is_explained() {
    let needs = NeedsLibrary::new();
    let (stage, hot) = v1_serving(manual());
    std::fs::remove_file(needs.library()).unwrap();
    stage.put_bytes(&needs.build);
    let error = hot.reload().expect_err("no dependency anywhere");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::DependencyNotFound { library, needed_by: None } if library == DEPENDENCY),
        "{problem:?}"
    );

    // Beside the build, with a `$ORIGIN` RUNPATH: the build's directory is
    // not where the module is loaded from, and the error says so.
    dependency_library(stage.dir(), Some(&needs.marker));
    stage.put_bytes(&with_runpath(&bytes_of(Fixture::NeedsLibrary), "$ORIGIN"));
    let error = hot.reload().expect_err("$ORIGIN is /proc/self/fd");
    let problem = assert_refused_before_loading(&hot, &error);
    assert!(
        matches!(&problem, TrustProblem::OriginNotFound { library, entry } if library == DEPENDENCY && entry == "$ORIGIN"),
        "{problem:?}"
    );
    assert!(
        error.to_string().contains(
            "`/proc/self/fd` (the module is loaded from an in-memory file), not the build's"
        ),
        "{error}"
    );
    needs.assert_never_loaded();
}
