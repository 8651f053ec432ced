//! Swaps in a process that keeps serving: background detection, swap
//! modes, concurrent callers and faults during swaps.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::counter::Hot;
use hotswap_runtime::FileId;
use hotswap_runtime::{Error, Options, SwapEvent, SwapMode, SwapTimings};
use hotswap_tests::{library, stripped_library, Fixture, Stage};

/// Generous: these tests check that things happen, not how fast (the
/// benchmarks measure that).
const PATIENCE: Duration = Duration::from_secs(20);

fn open(stage: &Stage, mode: SwapMode) -> Hot {
    Hot::open_with(stage.path(), Options::new().swap_mode(mode)).expect("open version 1")
}

/// The next event, or a panic naming what was awaited.
fn next_event(events: &Receiver<SwapEvent>, awaited: &str) -> SwapEvent {
    events
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("no event while waiting for {awaited}"))
}

fn next_swap_or_refusal(events: &Receiver<SwapEvent>) -> SwapEvent {
    loop {
        match next_event(events, "a swap or a refusal") {
            event @ (SwapEvent::Swapped { .. } | SwapEvent::Refused { .. }) => return event,
            _ => continue,
        }
    }
}

/// The phases of a swap add up to at most its total, each was measured,
/// and none is a rebuild's.
fn assert_consistent(timings: &SwapTimings) {
    assert!(timings.phases() <= timings.total, "{timings:?}");
    for (phase, took) in [
        ("read", timings.read),
        ("load", timings.load),
        ("check", timings.check),
        ("critical section", timings.critical_section),
    ] {
        assert!(took > Duration::ZERO, "{phase} not measured: {timings:?}");
    }
    assert_eq!(
        (timings.debounce, timings.build),
        (None, None),
        "not a rebuild"
    );
}

/// Nothing but unload reports arrives for `quiet`.
fn assert_no_swap_or_refusal(events: &Receiver<SwapEvent>, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(event @ (SwapEvent::Swapped { .. } | SwapEvent::Refused { .. })) =
            events.recv_timeout(left)
        {
            panic!("unexpected {event:?}")
        }
    }
}

#[test]
fn a_renamed_build_is_picked_up_in_the_background() {
    let stage = Stage::with(Fixture::V1);
    library(Fixture::V2);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(5);
    let replaced = Instant::now();
    stage.put(Fixture::V2); // write beside, then rename over
    match next_swap_or_refusal(&events) {
        SwapEvent::Swapped {
            from: 0,
            to: 1,
            timings,
            ..
        } => {
            let serving = replaced.elapsed();
            println!("renamed build serving after {serving:?} ({timings})");
            assert_consistent(&timings);
            // Timed from the rename's event, which came after the rename.
            assert!(timings.total <= serving, "{timings:?}");
        }
        other => panic!("expected a swap, got {other:?}"),
    }
    assert_eq!(
        (hot.get().version(), hot.get().count(), hot.generation()),
        (2, 5, 1)
    );
}

#[test]
fn a_hard_linked_build_is_picked_up_like_cargo_output() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(3);
    // What cargo does to target/debug/libX.so: remove, then hard-link the new build.
    let built = stage.path().with_file_name("deps-libcounter.so");
    std::fs::copy(library(Fixture::V2), &built).unwrap();
    std::fs::remove_file(stage.path()).unwrap();
    std::fs::hard_link(&built, stage.path()).unwrap();
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { to: 1, .. }
    ));
    assert_eq!((hot.get().version(), hot.get().count()), (2, 3));
}

#[test]
fn rewriting_the_same_bytes_is_not_a_change() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    stage.put(Fixture::V1); // same bytes, new inode and mtime
    std::fs::File::options()
        .append(true)
        .open(stage.path())
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    assert_eq!(hot.generation(), 0);
    // The watcher is alive: a real change is taken.
    stage.put(Fixture::V2);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { .. }
    ));
}

#[test]
fn a_build_of_the_same_size_differing_in_its_last_byte_is_a_change() {
    // Bytes past the end of everything the loader reads: both load, and
    // only the comparison of the very last byte tells them apart.
    let mut bytes = std::fs::read(library(Fixture::V1)).unwrap();
    bytes.push(0);
    let stage = Stage::with(Fixture::V1);
    stage.put_bytes(&bytes);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(7);
    // The same bytes again, as a new file: not a change.
    stage.put_bytes(&bytes);
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    *bytes.last_mut().unwrap() = 1;
    stage.put_bytes(&bytes);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { from: 0, to: 1, .. }
    ));
    assert_eq!((hot.get().count(), hot.generation()), (7, 1));
}

#[test]
fn a_half_written_build_is_never_loaded() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(2);
    let bytes = std::fs::read(library(Fixture::V2)).unwrap();
    // Written in place, slowly, the way `cp` or a linker would.
    let mut file = std::fs::File::create(stage.path()).unwrap();
    use std::io::Write;
    let chunks: Vec<&[u8]> = bytes.chunks(bytes.len() / 4 + 1).collect();
    for (index, chunk) in chunks.iter().enumerate() {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        if index + 1 < chunks.len() {
            std::thread::sleep(Duration::from_millis(150));
            assert_eq!(
                hot.get().version(),
                1,
                "serving version 1 while the build is incomplete"
            );
        }
    }
    drop(file);
    match next_swap_or_refusal(&events) {
        SwapEvent::Swapped { to: 1, .. } => {}
        other => panic!("a partial build was reported instead of waited for: {other:?}"),
    }
    assert_eq!((hot.get().version(), hot.get().count()), (2, 2));
}

#[test]
fn a_refused_build_is_reported_once_and_the_next_good_one_is_taken() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(4);
    stage.put(Fixture::ChangedSignature);
    match next_swap_or_refusal(&events) {
        SwapEvent::Refused {
            error:
                Error::SignatureChanged {
                    function: "increment",
                    ..
                },
            ..
        } => {}
        other => panic!("expected a refusal naming `increment`, got {other:?}"),
    }
    assert!(matches!(
        hot.last_error(),
        Some(Error::SignatureChanged { .. })
    ));
    // The same refused bytes again: not retried, not reported again.
    stage.put(Fixture::ChangedSignature);
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    assert_eq!((hot.get().version(), hot.get().count()), (1, 4));

    stage.put(Fixture::V2);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { to: 1, .. }
    ));
    assert_eq!((hot.get().version(), hot.get().count()), (2, 4));
    assert!(hot.last_error().is_none());
}

#[test]
fn a_build_the_loader_refuses_for_now_is_retried_until_it_loads() {
    let provider = library(Fixture::LateSymbolProvider);
    library(Fixture::NeedsLateSymbol);
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(6);
    stage.put(Fixture::NeedsLateSymbol);
    let staged = std::fs::read(stage.path()).unwrap();

    // dlopen refuses it (a symbol it needs is missing): every attempt is
    // reported, with the next one sooner or later, and version 1 serves
    // on with its state meanwhile.
    let mut delays = Vec::new();
    while delays.len() < 3 {
        match next_event(&events, "a failed attempt") {
            SwapEvent::Retrying {
                error,
                attempt,
                retry_in,
                ..
            } => {
                assert!(matches!(error, Error::Load { .. }), "{error:?}");
                assert!(
                    error.to_string().contains("hotswap_test_late_symbol"),
                    "{error}"
                );
                assert_eq!(attempt as usize, delays.len() + 1);
                delays.push(retry_in);
                assert!(matches!(hot.last_error(), Some(Error::Load { .. })));
                assert_eq!((hot.get().version(), hot.generation()), (1, 0));
                hot.get().increment(1);
            }
            event @ (SwapEvent::Swapped { .. } | SwapEvent::Refused { .. }) => {
                panic!("expected a retry, got {event:?}")
            }
            _ => continue,
        }
    }
    let ms = Duration::from_millis;
    assert_eq!(delays, [ms(100), ms(200), ms(400)], "backing off");
    assert_eq!(hot.get().count(), 9);

    // The symbol appears in the global scope, as a library loaded late
    // would make it: the same build now loads, unchanged.
    // SAFETY: a plain library without initializers, defining one
    // `extern "C" fn() -> u32`; it stays loaded for the rest of the test
    // process, as the module that is about to bind to it needs.
    let global = unsafe {
        libloading::os::unix::Library::open(
            Some(&provider),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
    }
    .expect("load the library defining the symbol");
    std::mem::forget(global);
    loop {
        match next_event(&events, "the swap once the symbol is there") {
            SwapEvent::Swapped { from: 0, to: 1, .. } => break,
            // An attempt that raced with the load above.
            SwapEvent::Retrying { .. } | SwapEvent::Unloaded { .. } => continue,
            other => panic!("expected the swap, got {other:?}"),
        }
    }
    assert_eq!(
        (hot.get().version(), hot.get().count()),
        (3, 9),
        "the new build, bound to the symbol, has the state"
    );
    assert!(hot.last_error().is_none());
    assert_eq!(
        std::fs::read(stage.path()).unwrap(),
        staged,
        "the same bytes"
    );
}

#[test]
fn a_refused_build_is_judged_again_once_another_was_swapped_in() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    stage.put(Fixture::ChangedSignature);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Refused { .. }
    ));
    stage.put(Fixture::V2);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { to: 1, .. }
    ));
    // The refused bytes again, after a swap: judged (and reported) again,
    // not skipped in silence.
    stage.put(Fixture::ChangedSignature);
    match next_swap_or_refusal(&events) {
        SwapEvent::Refused {
            error: Error::SignatureChanged { .. },
            ..
        } => {}
        other => panic!("expected the refusal again, got {other:?}"),
    }
    assert!(matches!(
        hot.last_error(),
        Some(Error::SignatureChanged { .. })
    ));
    // ...and then remembered until the next swap.
    stage.put(Fixture::ChangedSignature);
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    assert_eq!(hot.get().version(), 2);
}

#[test]
fn a_build_refused_for_the_old_versions_teardown_is_taken_when_written_again() {
    let stage = Stage::with(Fixture::TeardownPanics);
    let hot = open(&stage, SwapMode::Background);
    let events = hot.subscribe();
    hot.get().increment(9);
    stage.put(Fixture::V2);
    match next_swap_or_refusal(&events) {
        SwapEvent::Refused {
            error: Error::Teardown { .. },
            ..
        } => {}
        other => panic!("expected the teardown's refusal, got {other:?}"),
    }
    // Nothing is wrong with those bytes: written again, they are set up
    // afresh (the state was lost with the old version's teardown).
    stage.put(Fixture::V2);
    assert!(matches!(
        next_swap_or_refusal(&events),
        SwapEvent::Swapped { to: 1, .. }
    ));
    assert_eq!((hot.get().version(), hot.get().count()), (2, 0));
}

#[test]
fn on_get_mode_forgets_an_offer_once_the_file_is_back_to_what_serves() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::OnGet);
    let events = hot.subscribe();
    stage.put(Fixture::V2);
    // Offered to the next get(), which does not come...
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    // ...before the file goes back to the serving build's bytes.
    stage.put(Fixture::V1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(hot.get().version(), 1, "a stale offer was swapped in");
    assert_no_swap_or_refusal(&events, Duration::from_millis(300));
    assert_eq!(hot.generation(), 0);
}

#[test]
fn on_get_mode_swaps_in_the_get_that_sees_the_change() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::OnGet);
    let events = hot.subscribe();
    hot.get().increment(1);
    stage.put(Fixture::V2);
    // Without a get(), nothing swaps...
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    assert_eq!(hot.generation(), 0);
    // ...and the first get() after detection does it, on the calling thread.
    let deadline = Instant::now() + PATIENCE;
    while hot.get().version() != 2 {
        assert!(
            Instant::now() < deadline,
            "no get() picked the new build up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((hot.generation(), hot.get().count()), (1, 1));
}

#[test]
fn manual_mode_swaps_only_on_reload() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage, SwapMode::Manual);
    let events = hot.subscribe();
    stage.put(Fixture::V2);
    assert_no_swap_or_refusal(&events, Duration::from_millis(500));
    assert_eq!(hot.get().version(), 1);
    hot.reload().unwrap();
    assert_eq!(hot.get().version(), 2);
    let timings = events
        .try_iter()
        .find_map(|event| match event {
            SwapEvent::Swapped { timings, .. } => Some(timings),
            _ => None,
        })
        .expect("reload() reported its swap");
    assert_consistent(&timings);
    assert_eq!(timings.detect, Duration::ZERO, "reload() reads at once");
}

#[test]
fn concurrent_callers_lose_no_update_across_dozens_of_swaps() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Hot>();

    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Arc::new(open(&stage, SwapMode::Manual));
    let stop = Arc::new(AtomicBool::new(false));
    let increments = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let (hot, stop, increments) = (hot.clone(), stop.clone(), increments.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let module = hot.get();
                    let before = module.count();
                    let after = module.increment(1);
                    assert!(
                        after > before,
                        "a state update went backwards: {before} -> {after}"
                    );
                    increments.fetch_add(1, Ordering::Relaxed);
                    // Stateless calls run on whichever version the guard pinned.
                    assert!(module.greet("w").ends_with(", w"));
                    if worker == 0 {
                        assert!(matches!(module.version(), 1 | 2));
                    }
                }
            })
        })
        .collect();
    for swap in 0..40 {
        stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
        hot.reload().expect("swap under load");
    }
    stop.store(true, Ordering::Relaxed);
    workers
        .into_iter()
        .for_each(|worker| worker.join().expect("worker"));
    assert_eq!(hot.generation(), 40);
    assert!(increments.load(Ordering::Relaxed) > 0);
    assert_eq!(hot.get().count(), increments.load(Ordering::Relaxed));
}

#[test]
fn panics_in_calls_during_swaps_are_contained() {
    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Arc::new(open(&stage, SwapMode::Manual));
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let panicker = {
        let (hot, stop, completed) = (hot.clone(), stop.clone(), completed.clone());
        std::thread::spawn(move || {
            let mut panics = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Updates 1 then panics while holding the state.
                let result = catch_unwind(AssertUnwindSafe(|| hot.get().increment_then_fail(1)));
                let message = *result
                    .expect_err("always panics")
                    .downcast::<String>()
                    .unwrap();
                assert!(
                    message.contains("failed after incrementing to"),
                    "{message}"
                );
                completed.fetch_add(1, Ordering::Relaxed);
                panics += 1;
            }
            panics
        })
    };
    for swap in 0..20 {
        stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
        hot.reload().expect("swap while a caller panics");
    }
    stop.store(true, Ordering::Relaxed);
    let panics = panicker
        .join()
        .expect("the panicking caller's thread survives");
    assert!(panics > 0);
    assert_eq!(
        hot.get().count(),
        completed.load(Ordering::Relaxed),
        "every update before each panic is kept"
    );
}

#[test]
fn a_panicking_teardown_is_reported_and_the_old_version_keeps_serving() {
    let stage = Stage::with(Fixture::TeardownPanics);
    let hot = open(&stage, SwapMode::Manual);
    hot.get().increment(9);
    stage.put(Fixture::V2);
    let error = hot.reload().expect_err("teardown panics");
    assert!(
        matches!(error, Error::Teardown { panicked: true, .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("teardown gives up at a count of 9"),
        "{error}"
    );
    assert!(error.to_string().contains("the state is lost"), "{error}");
    // Not hidden, and not silently reset: the old version serves its
    // stateless functions, and every stateful call says the state is gone.
    assert_eq!((hot.get().version(), hot.generation()), (1, 0));
    for _ in 0..2 {
        let payload = catch_unwind(AssertUnwindSafe(|| hot.get().count()))
            .expect_err("a stateful call without state");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("teardown gives up at a count of 9"),
            "{message}"
        );
    }
    // The next build is set up afresh.
    stage.put(Fixture::V2);
    hot.reload().expect("a build that sets up");
    assert_eq!((hot.get().version(), hot.get().count()), (2, 0));
}

/// The unload report of generation `generation`: `Some(image)` if it
/// stayed resident, `None` if it left the address space.
fn unload_report(events: &Receiver<SwapEvent>, generation: u64) -> Option<FileId> {
    loop {
        match next_event(events, "a retired version's unload report") {
            SwapEvent::StayedResident {
                generation: reported,
                image,
                ..
            } if reported == generation => return Some(image),
            SwapEvent::Unloaded {
                generation: reported,
                ..
            } if reported == generation => return None,
            _ => continue,
        }
    }
}

#[test]
fn a_thread_local_destructor_of_a_module_does_not_keep_its_version_mapped() {
    let stage = Stage::with(Fixture::ThreadLocalDestructor);
    let hot = open(&stage, SwapMode::Manual);
    let events = hot.subscribe();
    // This thread now holds a thread-local (with a destructor) of the
    // library: glibc alone would keep the library mapped until it exits.
    assert_eq!(hot.get().version(), 1);
    // And so does a thread that exits while the version is loaded, whose
    // destructor then runs.
    std::thread::scope(|scope| {
        scope.spawn(|| assert_eq!(hot.get().version(), 1));
    });
    let retired = hot.serving_image();
    stage.put(Fixture::V2);
    hot.reload().unwrap();
    assert_eq!(
        unload_report(&events, 0),
        None,
        "a thread-local destructor kept the library mapped"
    );
    assert!(!retired.is_mapped(), "the report matches the address space");
    assert!(hot.serving_image().is_mapped());
    assert_eq!(hot.get().version(), 2);
}

#[test]
fn residency_is_told_right_when_the_library_is_reached_through_a_symlinked_directory() {
    let stage = Stage::with(Fixture::V1);
    let links = tempfile::tempdir().unwrap();
    let linked = links.path().join("builds");
    std::os::unix::fs::symlink(stage.dir(), &linked).unwrap();
    let hot = Hot::open_with(
        linked.join("libcounter.so"),
        Options::new().swap_mode(SwapMode::Manual),
    )
    .expect("open through the link");
    let events = hot.subscribe();
    assert_eq!(hot.get().version(), 1);
    // A second handle on generation 0, by the name glibc knows it by, keeps
    // it mapped after the runtime closes it.
    // SAFETY: the library is loaded already: this only counts a reference.
    let pinned = unsafe {
        libloading::os::unix::Library::open(
            Some(hotswap_tests::image_descriptor(hot.serving_image())),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
        )
    }
    .expect("a second handle");

    // Resident: reported so, and really mapped.
    stage.put(Fixture::V2);
    hot.reload().unwrap();
    let resident = unload_report(&events, 0).expect("generation 0 stays resident");
    assert!(resident.is_mapped());

    // Unloaded: reported so, and really gone.
    let v2 = hot.serving_image();
    assert!(v2.is_mapped());
    stage.put(Fixture::V1);
    hot.reload().unwrap();
    assert_eq!(unload_report(&events, 1), None, "generation 1 leaves");
    assert!(!v2.is_mapped());
    assert!(resident.is_mapped(), "generation 0 is still there");
    assert_eq!((hot.get().version(), hot.generation()), (1, 2));
    drop(pinned);
}
