//! A thousand swaps must leave no mapped copies, no files and no memory
//! behind. Alone in its own test binary: resident memory is measured for
//! the whole process, which other tests would disturb.

use counter::counter::Hot;
use hotswap_runtime::residency::mapped_files_under;
use hotswap_runtime::{Options, SwapEvent, SwapMode};
use hotswap_tests::{stripped_library, Fixture, Stage};

#[test]
fn a_thousand_swaps_leave_no_mapped_copies_and_no_files() {
    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).unwrap();
    let events = hot.subscribe();
    let copies = hot.copy_dir().to_owned();
    let mut baseline_rss = 0;
    for swap in 0..1000 {
        stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
        hot.reload().expect("swap");
        hot.get().increment(1);
        if swap == 99 {
            baseline_rss = resident_kib();
        }
        assert!(
            mapped_files_under(&copies) <= 2,
            "swap {swap}: {} copies mapped",
            mapped_files_under(&copies)
        );
    }
    assert_eq!(hot.get().count(), 1000);
    let grown = resident_kib().saturating_sub(baseline_rss);
    assert!(
        grown < 64 * 1024,
        "resident memory grew by {grown} KiB over 900 swaps"
    );
    let files = std::fs::read_dir(&copies).unwrap().count();
    assert_eq!(files, 1, "only the serving version's copy is on disk");
    let (mut unloaded, mut resident) = (0, 0);
    for event in events.try_iter() {
        match event {
            SwapEvent::Unloaded { .. } => unloaded += 1,
            SwapEvent::StayedResident { .. } => resident += 1,
            _ => {}
        }
    }
    assert_eq!(
        (unloaded, resident),
        (1000, 0),
        "every retired version left the address space"
    );
    drop(hot);
    assert!(
        !copies.exists(),
        "dropping Hot removes its private directory"
    );
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
