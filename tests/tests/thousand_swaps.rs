//! A thousand swaps must leave no mapped copies, no files and no memory
//! behind. Alone in its own test binary: resident memory, mappings and
//! open descriptors are measured for the whole process, which other tests
//! would disturb.

use counter::counter::Hot;
use hotswap_runtime::__test_hooks::{mapped_files, mapped_module_images};
use hotswap_runtime::{Options, SwapEvent, SwapMode};
use hotswap_tests::{open_module_images, resident_kib, stripped_library, Fixture, Stage};

#[test]
fn a_thousand_swaps_leave_no_mapped_copies_and_no_files() {
    let stage = Stage::with(Fixture::V1);
    let (v1, v2) = (stripped_library(Fixture::V1), stripped_library(Fixture::V2));
    let hot = Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).unwrap();
    let events = hot.subscribe();
    let mut baseline_rss = 0;
    for swap in 0..1000 {
        stage.put_file(if swap % 2 == 0 { &v2 } else { &v1 });
        hot.reload().expect("swap");
        hot.get().increment(1);
        if swap == 99 {
            baseline_rss = resident_kib();
        }
        let mapped = mapped_module_images().len();
        assert!(mapped <= 2, "swap {swap}: {mapped} module images mapped");
        let open = open_module_images();
        assert!(open <= 2, "swap {swap}: {open} module images open");
    }
    assert_eq!(hot.get().count(), 1000);
    let grown = resident_kib().saturating_sub(baseline_rss);
    assert!(
        grown < 64 * 1024,
        "resident memory grew by {grown} KiB over 900 swaps"
    );
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

    // Nothing was written to disk: no file under the temporary directory
    // is mapped (the stage's library is read, never mapped), and nothing
    // but the library is beside it. This checkout may itself be under the
    // temporary directory: the test binary and what it built are not copies.
    let temp = std::env::temp_dir().canonicalize().unwrap();
    let checkout = hotswap_tests::workspace_root().canonicalize().unwrap();
    let under_temp: Vec<_> = mapped_files()
        .into_iter()
        .filter(|file| {
            let path = std::path::Path::new(&file.name);
            path.starts_with(&temp) && !path.starts_with(&checkout)
        })
        .collect();
    assert!(under_temp.is_empty(), "mapped from disk: {under_temp:?}");
    let beside: Vec<_> = std::fs::read_dir(stage.dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["libcounter.so"]);

    drop(hot);
    let left = mapped_module_images();
    assert!(
        left.is_empty(),
        "dropping Hot unloads the last one: {left:?}"
    );
    assert_eq!(open_module_images(), 0, "and closes its in-memory file");
}
