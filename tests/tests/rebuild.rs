//! Rebuild on save: editing the module crate's source on disk changes what
//! the same `Hot` serves, without a restart and without losing state.
//!
//! In its own test binary: it builds `counter` into the target dir the other
//! fixtures share.

use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use counter::counter::Hot;
use hotswap_runtime::{Error, Options, SwapEvent};
use hotswap_tests::scratch_counter;

/// Generous: a debug build of the fixture on a loaded 2-core machine.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

const GREET: &str = "format!(\"hello, {name}\")";

fn save(source: &Path, contents: &str) {
    std::fs::write(source, contents).expect("save the module's source");
}

/// The events up to and including the one `done` accepts.
fn events_until(events: &Receiver<SwapEvent>, done: impl Fn(&SwapEvent) -> bool) -> Vec<SwapEvent> {
    let mut seen = Vec::new();
    loop {
        let event = events
            .recv_timeout(BUILD_TIMEOUT)
            .unwrap_or_else(|_| panic!("no rebuild outcome; events so far: {seen:?}"));
        let finished = done(&event);
        seen.push(event);
        if finished {
            return seen;
        }
    }
}

/// Waits for a build and its swap (in either order: the library watcher may
/// take cargo's output before the rebuilder hands it over).
fn built_and_swapped(events: &Receiver<SwapEvent>) -> Vec<SwapEvent> {
    let mut seen = Vec::new();
    while !(seen.iter().any(|e| matches!(e, SwapEvent::Built { .. }))
        && seen.iter().any(|e| matches!(e, SwapEvent::Swapped { .. })))
    {
        seen.extend(events_until(events, |event| match event {
            SwapEvent::BuildFailed { error, .. } | SwapEvent::Refused { error, .. } => {
                panic!("the edit should have been swapped in: {error}")
            }
            SwapEvent::Built { .. } | SwapEvent::Swapped { .. } => true,
            _ => false,
        }));
    }
    seen
}

#[test]
fn saving_the_source_rebuilds_and_swaps_in_the_new_behaviour() {
    let (crate_dir, library) = scratch_counter("counter-rebuild");
    let source = crate_dir.join("src/lib.rs");
    let original = std::fs::read_to_string(&source).unwrap();
    assert!(original.contains(GREET), "the fixture's greet changed");

    // A directory that is not a crate is refused before anything loads.
    let nowhere = tempfile::tempdir().unwrap();
    let error = Hot::open_with(&library, Options::new().rebuild_on_save(nowhere.path()))
        .expect_err("a directory without Cargo.toml is not a crate");
    assert!(matches!(error, Error::Rebuild { .. }), "{error}");
    assert!(error.to_string().contains("has no Cargo.toml"), "{error}");

    let hot = Hot::open_with(&library, Options::new().rebuild_on_save(&crate_dir)).expect("open");
    let events = hot.subscribe();
    assert_eq!(hot.get().increment(5), 5);
    assert_eq!(hot.get().greet("ada"), "hello, ada");

    // A burst of saves is one build, of the last save.
    for greeting in ["hi", "hey", "howdy"] {
        save(
            &source,
            &original.replace(GREET, &format!("format!(\"{greeting}, {{name}}\")")),
        );
    }
    let seen = built_and_swapped(&events);
    let builds: Vec<_> = seen
        .iter()
        .filter_map(|event| match event {
            SwapEvent::Built { library, .. } => Some(library),
            _ => None,
        })
        .collect();
    assert_eq!(builds.len(), 1, "one build for the burst: {seen:?}");
    // The swap carries the whole way from the save: debounce and build
    // included, whichever thread swapped cargo's output in.
    let timings = seen
        .iter()
        .find_map(|event| match event {
            SwapEvent::Swapped { timings, .. } => Some(*timings),
            _ => None,
        })
        .expect("swapped");
    let (Some(debounce), Some(build)) = (timings.debounce, timings.build) else {
        panic!("a rebuild's swap without its debounce and build: {timings:?}");
    };
    assert!(
        debounce > Duration::ZERO && build > Duration::ZERO,
        "{timings}"
    );
    assert!(timings.phases() <= timings.total, "{timings:?}");
    println!("save -> serving: {timings}");
    // Built in the profile the opened library came from.
    assert!(
        builds[0].ends_with("debug/libcounter.so"),
        "{}",
        builds[0].display()
    );
    assert_eq!(hot.get().greet("ada"), "howdy, ada");
    assert_eq!(hot.get().increment(1), 6, "the state came through the swap");
    assert_eq!(
        hot.generation(),
        1,
        "one swap, although two watchers saw the build"
    );

    // A build that fails reaches the host with the compiler's diagnostics,
    // and the serving version keeps serving with its state.
    save(&source, &original.replace(GREET, "42u32"));
    let seen = events_until(&events, |event| {
        matches!(
            event,
            SwapEvent::BuildFailed { .. } | SwapEvent::Swapped { .. }
        )
    });
    let Some(SwapEvent::BuildFailed { error, .. }) = seen.last() else {
        panic!("the broken edit was swapped in: {seen:?}");
    };
    // Builds run one after another: a second build for the burst would have
    // been reported before this one.
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, SwapEvent::Built { .. })),
        "the burst was built more than once: {seen:?}"
    );
    let Error::Build { output, .. } = error else {
        panic!("not a build error: {error}");
    };
    assert!(
        output.contains("error[E0308]: mismatched types"),
        "{output}"
    );
    assert!(
        output.contains("src/lib.rs"),
        "the diagnostic points at the file: {output}"
    );
    assert!(matches!(hot.last_error(), Some(Error::Build { .. })));
    assert_eq!(hot.get().greet("ada"), "howdy, ada");
    assert_eq!(hot.get().increment(1), 7);
    assert_eq!(hot.generation(), 1);

    // Fixing the source is picked up like any other save.
    save(&source, &original);
    built_and_swapped(&events);
    assert_eq!(hot.get().greet("ada"), "hello, ada");
    assert_eq!(hot.get().count(), 7);
    assert_eq!(hot.generation(), 2);
    assert!(hot.last_error().is_none());
}
