//! The pin/retire protocol of `get()` under load, on real module builds:
//! four threads take guards (some held across swaps, some nested deeper
//! than a thread's hazard slots) while versions 1 and 2 are swapped in
//! turn; then retired versions must leave as soon as their last guard
//! does, including when a thread that once called `get()` sits idle.
//! Alone in its own test binary: it counts the module images mapped in the
//! whole process. (`tests/loom` model-checks the same protocol.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use counter::counter::Hot;
use hotswap_runtime::__test_hooks::mapped_module_images;
use hotswap_runtime::{FileId, Options, SwapMode};
use hotswap_tests::{stripped_library, Fixture, Stage};

const THREADS: usize = 4;
const SWAPS: u64 = 60;
/// More than the 8 hazard slots a thread has: the rest are counted pins.
const NESTED: usize = 12;

/// Waits until at most `images` module images are mapped (a retired
/// version unloads on the thread that drops its last guard, or on the
/// reaper thread once its threads have finished).
fn wait_for_mapped(images: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mapped = mapped_module_images().len();
        if mapped <= images {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {mapped} module images still mapped, expected at most {images}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One test, so that nothing else maps module images meanwhile.
/// Waits until `image` is unmapped, or fails saying `what`.
fn wait_unmapped(image: FileId, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while image.is_mapped() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn pins_under_load_and_prompt_unloads() {
    guards_held_across_swaps_on_four_threads_see_one_version_each_and_retired_versions_leave();
    a_thread_that_called_get_once_and_idles_keeps_no_retired_version();
}

fn guards_held_across_swaps_on_four_threads_see_one_version_each_and_retired_versions_leave() {
    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).unwrap();
    let stop = AtomicBool::new(false);
    let increments = AtomicU64::new(0);
    let start = Barrier::new(THREADS + 1);

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (hot, stop, increments, start) = (&hot, &stop, &increments, &start);
            scope.spawn(move || {
                start.wait();
                let mut held = Vec::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    // A guard answers from the version it pinned, however
                    // many swaps happen while it is held.
                    let guard = hot.get();
                    let version = guard.version();
                    assert!(version == 1 || version == 2);
                    guard.increment(1);
                    increments.fetch_add(1, Ordering::Relaxed);
                    held.push((guard, version));
                    if round % 7 == 1 {
                        // Nested deeper than the thread's hazard slots.
                        let nested: Vec<_> = (0..NESTED).map(|_| hot.get()).collect();
                        let versions: Vec<u32> =
                            nested.iter().map(|guard| guard.version()).collect();
                        assert!(versions
                            .iter()
                            .all(|version| *version == 1 || *version == 2));
                        // Each nested guard still answers from what it pinned.
                        for (guard, version) in nested.iter().zip(&versions) {
                            assert_eq!(guard.version(), *version);
                        }
                    }
                    // Keep up to 2 guards per thread across swaps, dropping
                    // them in an order that differs from taking them.
                    if held.len() > 2 {
                        held.swap_remove(thread % held.len());
                    }
                    for (guard, version) in &held {
                        assert_eq!(guard.version(), *version, "a held guard changed version");
                    }
                }
            });
        }
        start.wait();
        for swap in 0..SWAPS {
            stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
            hot.reload().expect("swap");
            std::thread::sleep(Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
    });

    assert_eq!(hot.generation(), SWAPS);
    // No stateful call was lost across 60 handoffs.
    assert_eq!(hot.get().count(), increments.load(Ordering::Relaxed));
    // Every guard has dropped: only the serving version is left.
    wait_for_mapped(1, "after every guard dropped");
}

fn a_thread_that_called_get_once_and_idles_keeps_no_retired_version() {
    let stage = Stage::with(Fixture::V1);
    let v2 = stripped_library(Fixture::V2);
    let hot = Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).unwrap();
    let (called, idle) = (mpsc::channel(), mpsc::channel::<()>());
    std::thread::scope(|scope| {
        let hot = &hot;
        let (called_tx, idle_rx) = (called.0, idle.1);
        scope.spawn(move || {
            assert_eq!(hot.get().version(), 1);
            called_tx.send(()).unwrap();
            // Idle, alive, never calling again until told to stop.
            let _ = idle_rx.recv();
        });
        called.1.recv().unwrap();
        let retired = hot.serving_image();
        stage.put_file(&v2);
        hot.reload().unwrap();
        assert_eq!(hot.get().version(), 2);
        // Unloaded while the idle thread is still alive.
        wait_unmapped(
            retired,
            "version 1 stays mapped while a thread that once pinned it idles",
        );
        drop(idle.0);
    });

    // A guard held across a swap keeps its version, which leaves as soon
    // as that guard drops.
    let held = hot.get();
    assert_eq!(held.version(), 2);
    let retired = hot.serving_image();
    stage.put(Fixture::V1);
    hot.reload().unwrap();
    assert_eq!(hot.get().version(), 1);
    assert_eq!(held.version(), 2, "the held guard still calls version 2");
    assert!(retired.is_mapped(), "a guard still pins version 2");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while retired.is_mapped() {
        assert!(
            Instant::now() < deadline,
            "version 2 outlived its last guard"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
