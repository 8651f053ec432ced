//! The core contract against real libraries: typed calls, every supported
//! type, swaps that carry state, and every refused swap leaving the old
//! version serving with its state intact.

use std::panic::{catch_unwind, AssertUnwindSafe};

use counter::counter::{Hot, Point};
use hotswap_runtime::__test_hooks::mapped_module_images;
use hotswap_runtime::inspect::{self, ModuleLibrary};
use hotswap_runtime::{Error, Options, SwapMode};
use hotswap_tests::{image_bytes, library, Fixture, Stage};

/// These tests swap with explicit `reload()` calls: nothing in the background.
fn open_manual(path: impl AsRef<std::path::Path>) -> Result<Hot, Error> {
    Hot::open_with(path, Options::new().swap_mode(SwapMode::Manual))
}

/// Opens version 1 and brings its state to a known count and note.
fn serving_v1(stage: &Stage) -> Hot {
    let hot = open_manual(stage.path()).expect("open version 1");
    hot.get().increment(7);
    hot.get().set_note("kept");
    hot
}

/// What a refused swap must leave behind: version 1, same generation,
/// state exactly as it was, and still working.
fn assert_still_serving_v1(hot: &Hot) {
    assert_eq!(hot.generation(), 0);
    let module = hot.get();
    assert_eq!(module.version(), 1);
    assert_eq!(module.count(), 7);
    assert_eq!(module.note(), "kept");
    assert_eq!(module.increment(1), 8);
    assert_eq!(module.greet("again"), "hello, again");
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    *payload
        .downcast::<String>()
        .expect("module panics resume with a String payload")
}

#[test]
fn typed_calls_reach_the_loaded_library() {
    let stage = Stage::with(Fixture::V1);
    let hot = open_manual(stage.path()).unwrap();
    let module = hot.get();
    assert_eq!(module.version(), 1);
    assert_eq!(module.increment(5), 5);
    assert_eq!(module.increment(2), 7);
    assert_eq!(module.count(), 7);
    assert_eq!(module.greet("world"), "hello, world");
    assert_eq!(hot.generation(), 0);
    assert!(hot.last_error().is_none());
}

#[test]
fn every_supported_type_crosses_both_ways() {
    let stage = Stage::with(Fixture::V1);
    let hot = open_manual(stage.path()).unwrap();
    let m = hot.get();
    assert_eq!(m.numbers(-1, -2, -3, -4, 5, 6, 7, 8, -9), 7.0);
    assert_eq!(m.floats(1.5, 3.0), (3.0, 1.5));
    assert_eq!(m.logic(true, 'ß'), (false, 'ß'));
    assert_eq!(m.logic(false, 'q'), (true, 'Q'));
    m.nothing();
    assert_eq!(m.sum(&[1, 2, 3, u32::MAX]), 6 + u64::from(u32::MAX));
    assert_eq!(m.sum(&[]), 0);
    assert_eq!(m.words("a bb  ccc".to_owned()), vec!["a", "bb", "ccc"]);
    assert_eq!(m.lengths(vec!["é".to_owned(), String::new()]), vec![2, 0]);
    assert_eq!(m.first_char(Some("xyz")), Some('x'));
    assert_eq!(m.first_char(None), None);
    assert_eq!(m.parse(" 42 "), Ok(42));
    assert_eq!(
        m.parse("x"),
        Err("\"x\": invalid digit found in string".to_owned())
    );
    assert_eq!(
        m.nested(vec![Some((1, "one".to_owned())), None]),
        vec![Ok("1:one".to_owned()), Err(0)]
    );
    assert_eq!(
        m.triple(1, "ab", vec![1, 2, 3]),
        (2, "AB".to_owned(), vec![3, 2, 1], true)
    );
    assert_eq!(
        m.translate(Point { x: 1, y: 2 }, Point { x: 10, y: 20 }),
        Point { x: 11, y: 22 }
    );
    assert_eq!(
        m.centroid(&[Point { x: 0, y: 0 }, Point { x: 4, y: 6 }]),
        Some(Point { x: 2, y: 3 })
    );
    assert_eq!(m.centroid(&[]), None);
}

#[test]
fn reload_swaps_code_and_hands_state_over() {
    let stage = Stage::with(Fixture::V1);
    let hot = serving_v1(&stage);

    stage.put(Fixture::V2);
    hot.reload().expect("swap to version 2");
    assert_eq!(hot.generation(), 1);
    let module = hot.get();
    assert_eq!(module.version(), 2, "new code serves");
    assert_eq!(module.greet("you"), "good day, you");
    assert_eq!(module.count(), 7, "the count came through");
    // `touched` is new in version 2 (`#[serde(default)]`), `legacy_note` gone.
    assert_eq!(module.describe(), "v2 count=7 touched=0");
    assert_eq!(module.increment(3), 10);
    assert_eq!(module.describe(), "v2 count=10 touched=1");
    assert_eq!(
        module.translate(Point { x: 5, y: 5 }, Point { x: 1, y: 2 }),
        Point { x: 4, y: 3 }
    );
    drop(module);

    // And back: version 2's handoff lacks `legacy_note`, which defaults.
    stage.put(Fixture::V1);
    hot.reload().expect("swap back to version 1");
    assert_eq!(hot.generation(), 2);
    assert_eq!(hot.get().describe(), "v1 count=10 note=\"\"");
}

#[test]
fn refused_swaps_name_the_cause_and_keep_the_old_version_serving() {
    type Check = fn(&Error) -> bool;
    type Case = (&'static str, Box<dyn Fn(&Stage)>, Check, &'static str);
    let cases: Vec<Case> = vec![
        ("missing file", Box::new(|stage| stage.remove()), |e| matches!(e, Error::Read { .. }), "cannot read module library"),
        (
            "garbage file",
            Box::new(|stage| stage.put_bytes(b"this is not an ELF file, just text")),
            |e| matches!(e, Error::Malformed { .. }),
            "is not a loadable library: not an ELF file",
        ),
        (
            "truncated library",
            Box::new(|stage| {
                let bytes = std::fs::read(library(Fixture::V2)).unwrap();
                stage.put_bytes(&bytes[..bytes.len() / 3]);
            }),
            |e| matches!(e, Error::Malformed { .. }),
            "is not a loadable library: truncated",
        ),
        (
            "library the loader refuses",
            Box::new(|stage| stage.put_bytes(&std::fs::read(library(Fixture::Unresolved)).unwrap())),
            |e| matches!(e, Error::Load { .. }),
            "undefined symbol: hotswap_test_symbol_that_nothing_defines",
        ),
        (
            "library without the module",
            Box::new(|stage| stage.put_bytes(&std::fs::read(library(Fixture::Greeter)).unwrap())),
            |e| matches!(e, Error::NotAModule { module: "counter", .. }),
            "does not export hot module `counter`",
        ),
        (
            "incompatible abi_stable",
            Box::new(|stage| stage.put(Fixture::BadAbi)),
            |e| matches!(e, Error::Incompatible { .. }),
            "built with abi_stable ABI 0.10",
        ),
        (
            "header describing another module",
            Box::new(|stage| stage.put(Fixture::ForgedHeader)),
            |e| matches!(e, Error::Incompatible { .. }),
            "exports `__hotswap_module__counter__counter` but describes module `gauge` of crate `counter`",
        ),
        (
            "changed signature",
            Box::new(|stage| stage.put(Fixture::ChangedSignature)),
            |e| matches!(e, Error::SignatureChanged { function: "increment", .. }),
            "function `increment` of module `counter` changed its signature: the host was compiled against `fn increment(&mut State, by: u64) -> u64`, the library has `fn increment(&mut State, by: u32) -> u64`",
        ),
        (
            "missing function",
            Box::new(|stage| stage.put(Fixture::MissingFunction)),
            |e| matches!(e, Error::MissingFunction { function: "greet", .. }),
            "has no function `greet`",
        ),
        (
            "setup panics",
            Box::new(|stage| stage.put(Fixture::SetupPanics)),
            |e| matches!(e, Error::Setup { panicked: true, .. }),
            "setup of module `counter` panicked: setup refuses to start (offered a count of 7)",
        ),
        (
            "setup fails",
            Box::new(|stage| stage.put(Fixture::SetupFails)),
            |e| matches!(e, Error::Setup { panicked: false, .. }),
            "setup of module `counter` failed: will not take over a count of 7",
        ),
    ];
    for (case, break_it, is_expected, message) in cases {
        let stage = Stage::with(Fixture::V1);
        let hot = serving_v1(&stage);
        break_it(&stage);
        let error = hot.reload().expect_err(case);
        assert!(is_expected(&error), "{case}: unexpected error {error:?}");
        assert_check_agrees(case, &stage, &error);
        assert!(
            error.to_string().contains(message),
            "{case}: message {:?} lacks {message:?}",
            error.to_string()
        );
        assert_eq!(
            hot.last_error().map(|e| e.to_string()),
            Some(error.to_string()),
            "{case}: last_error"
        );
        assert_still_serving_v1(&hot);

        // The next good build is taken, and the error clears.
        stage.put(Fixture::V2);
        hot.reload()
            .unwrap_or_else(|error| panic!("{case}: good build after a refused one: {error}"));
        assert_eq!((hot.get().version(), hot.get().count()), (2, 8), "{case}");
        assert!(hot.last_error().is_none(), "{case}");
    }
}

/// `inspect::check` (what `hotswap check` runs) of version 1 against the
/// staged file refuses it with the error `reload()` gave, word for word,
/// except where only running `setup` can tell.
fn assert_check_agrees(case: &str, stage: &Stage, reload_error: &Error) {
    let old = ModuleLibrary::open(library(Fixture::V1)).expect("open version 1");
    let verdict = ModuleLibrary::open(stage.path()).and_then(|new| {
        let checks = inspect::check(&old, &new)?;
        assert_eq!(checks.len(), 1, "{case}");
        Ok(checks.into_iter().next().expect("one module").result)
    });
    match (reload_error, verdict) {
        // `check` does not run `setup`.
        (Error::Setup { .. }, Ok(Ok(_))) => {}
        // The loader's message names the in-memory file, which differs.
        (Error::Load { .. }, Err(error @ Error::Load { .. })) => {
            assert!(
                error.to_string().contains("undefined symbol"),
                "{case}: {error}"
            );
        }
        (_, Err(error) | Ok(Err(error))) => {
            assert_eq!(error.to_string(), reload_error.to_string(), "{case}");
        }
        (_, Ok(Ok(compatible))) => panic!("{case}: check accepted it: {compatible:?}"),
    }
}

#[test]
fn open_refuses_what_reload_refuses() {
    let stage = Stage::with(Fixture::ChangedSignature);
    let error = open_manual(stage.path()).expect_err("changed signature");
    assert!(
        matches!(
            error,
            Error::SignatureChanged {
                function: "increment",
                ..
            }
        ),
        "{error:?}"
    );
    stage.put(Fixture::SetupPanics);
    let error = open_manual(stage.path()).expect_err("setup panics");
    assert!(
        error
            .to_string()
            .contains("setup refuses to start (offered a count of 0)"),
        "{error}"
    );
    stage.remove();
    assert!(matches!(open_manual(stage.path()), Err(Error::Read { .. })));
}

#[test]
fn a_module_panic_resumes_in_the_caller_and_the_module_keeps_working() {
    let stage = Stage::with(Fixture::V1);
    let hot = serving_v1(&stage);

    let payload =
        catch_unwind(AssertUnwindSafe(|| hot.get().fail("boom"))).expect_err("fail panics");
    assert_eq!(panic_message(payload), "boom");

    // A panic while holding `&mut State`: the update before it stays, the
    // state lock is not poisoned, later calls work.
    let payload =
        catch_unwind(AssertUnwindSafe(|| hot.get().increment_then_fail(3))).expect_err("panics");
    assert_eq!(panic_message(payload), "failed after incrementing to 10");
    assert_eq!(hot.get().count(), 10);
    assert_eq!(hot.get().increment(1), 11);

    // And the state still hands over.
    stage.put(Fixture::V2);
    hot.reload().unwrap();
    assert_eq!(hot.get().count(), 11);
    let payload =
        catch_unwind(AssertUnwindSafe(|| hot.get().fail("again"))).expect_err("fail panics");
    assert_eq!(panic_message(payload), "v2: again");
}

#[test]
fn a_guard_held_across_a_swap_stays_valid() {
    let stage = Stage::with(Fixture::V1);
    let hot = serving_v1(&stage);
    let old = hot.get();
    stage.put(Fixture::V2);
    hot.reload().expect("a held guard does not block the swap");
    let new = hot.get();
    // Stateless calls run on the pinned version, which stays loaded...
    assert_eq!((old.version(), new.version()), (1, 2));
    assert_eq!(old.greet("x"), "hello, x");
    // ...stateful calls run on the version that owns the state.
    assert_eq!(old.describe(), "v2 count=7 touched=0");
    assert_eq!(old.increment(1), 8);
    assert_eq!(new.count(), 8);
}

#[test]
fn two_module_crates_link_and_load_side_by_side() {
    let stage = Stage::with(Fixture::V1);
    let counter = open_manual(stage.path()).unwrap();
    let greeter_lib = library(Fixture::Greeter);
    let greeting = greeter::greeting::Hot::open(&greeter_lib).unwrap();
    let tally = greeter::counter::Hot::open(&greeter_lib).unwrap();
    // (These two watch the fixture directory; nothing changes there.)
    assert_eq!(counter.get().increment(2), 2);
    assert_eq!(tally.get().add(-5), -5);
    assert_eq!(greeting.get().greet("both"), "greetings, both");
    assert_eq!(counter.get().greet("both"), "hello, both");
    assert_eq!(tally.get().add(8), 3);
    // Same module name, different crate: the other crate's library is refused.
    let error =
        greeter::counter::Hot::open(stage.path()).expect_err("counter crate is not greeter");
    assert!(matches!(error, Error::NotAModule { .. }), "{error:?}");
}

#[test]
fn dropping_hot_tears_down_and_unloads_every_version() {
    let stage = Stage::with(Fixture::V1);
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("teardown-ran");
    let hot = open_manual(stage.path()).unwrap();
    hot.get().increment(41);
    hot.get().set_teardown_marker(marker.display().to_string());
    // Loaded from an in-memory file holding the library's bytes.
    let v1 = hot.serving_image();
    assert!(v1.is_mapped());
    assert!(
        mapped_module_images()
            .iter()
            .any(|image| image.id == v1 && image.name == "/memfd:hotswap:libcounter.so"),
        "named after the library in the process's mappings"
    );
    assert_eq!(
        image_bytes(v1),
        std::fs::read(library(Fixture::V1)).unwrap()
    );

    stage.put(Fixture::V2);
    hot.reload().unwrap();
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "41",
        "the swap ran version 1's teardown"
    );
    let v2 = hot.serving_image();
    assert_ne!(v1, v2, "each load is a new in-memory file");
    assert!(!v1.is_mapped(), "version 1 left the address space");
    assert!(v2.is_mapped());
    hot.get().increment(1);
    let beside: Vec<_> = std::fs::read_dir(stage.dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        beside,
        ["libcounter.so"],
        "nothing is written beside the library"
    );

    drop(hot);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "42",
        "dropping Hot ran version 2's teardown"
    );
    assert!(!v2.is_mapped(), "dropping Hot unloads version 2");
}
