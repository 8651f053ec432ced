//! A module that starts threads, std's and rayon's, in its calls and in
//! its teardown: three hundred swaps must leave at most a few versions
//! mapped and resident memory bounded. Alone in its own test binary:
//! resident memory is measured for the whole process.

use std::time::Duration;

use counter::counter::Hot;
use hotswap_runtime::__test_hooks::mapped_module_images;
use hotswap_runtime::{Options, SwapEvent, SwapMode};
use hotswap_tests::{resident_kib, stripped_library, Fixture, Stage};

#[test]
fn threads_started_and_joined_by_a_module_leave_no_version_mapped() {
    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).unwrap();
    let events = hot.subscribe();
    let mut baseline_rss = 0;
    let mut expected = 0;
    for swap in 0..300u64 {
        // std threads and a rayon pool of the version's own, from this
        // long-lived host thread; teardown starts eight more.
        expected += 20 * 21 / 2;
        assert_eq!(hot.get().parallel_sum(20), expected);
        stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
        hot.reload().expect("swap");
        // A rayon pool's threads finish after the pool drops: the retired
        // version is unloaded once they have, moments later.
        loop {
            match events.recv_timeout(Duration::from_secs(10)) {
                Ok(SwapEvent::Unloaded { generation, .. }) if generation == swap => break,
                Ok(SwapEvent::StayedResident { generation, .. }) => {
                    panic!("generation {generation} stayed resident")
                }
                Ok(SwapEvent::ThreadsOutlived {
                    generation,
                    threads,
                    ..
                }) => {
                    panic!("generation {generation} left {threads} thread(s) running")
                }
                Ok(_) => continue,
                Err(_) => panic!("generation {swap} was not unloaded"),
            }
        }
        let mapped = mapped_module_images().len();
        assert!(mapped <= 3, "swap {swap}: {mapped} copies mapped");
        if swap == 49 {
            baseline_rss = resident_kib();
        }
    }
    assert_eq!(hot.get().count(), expected);
    let grown = resident_kib().saturating_sub(baseline_rss);
    assert!(
        grown < 64 * 1024,
        "resident memory grew by {grown} KiB over 250 swaps"
    );
}
