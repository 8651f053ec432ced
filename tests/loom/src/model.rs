//! Model checks of the pin/retire protocol: no value is dropped while a
//! pin holds it, and every replaced value is dropped once its last pin is
//! released (no leak, no value kept alive by an idle thread).
//!
//! The oracle is outside the model: a plain `std` flag per value, set by
//! its `Drop`. Loom runs the modelled threads one at a time, so the flag is
//! current when a reader checks it, right after pinning, before it reads
//! anything through the pin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::pin::{Domain, PinCell};
use loom::thread;

/// A version: its `Drop` says so in the oracle.
struct Version {
    dropped: Arc<AtomicBool>,
}

impl Drop for Version {
    fn drop(&mut self) {
        assert!(
            !self.dropped.swap(true, Ordering::SeqCst),
            "a version was dropped twice"
        );
    }
}

fn version() -> (Arc<Version>, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let version = Arc::new(Version {
        dropped: dropped.clone(),
    });
    (version, dropped)
}

fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// One reader pins and releases while a writer replaces the value: the
/// reader never sees a dropped value, and after both finish every replaced
/// value has been dropped (by the writer's scan or by the reader's
/// release, whichever came last).
#[test]
fn a_pinned_value_is_never_dropped_and_a_released_one_always_is() {
    loom::model(|| {
        let domain = leak(Domain::new());
        let (v1, v1_dropped) = version();
        let (v2, v2_dropped) = version();
        let cell = Arc::new(PinCell::new(v1, domain));

        let reader = {
            let cell = cell.clone();
            let v1_dropped = v1_dropped.clone();
            let v2_dropped = v2_dropped.clone();
            thread::spawn(move || {
                let record = domain.claim();
                let pin = cell.pin(record);
                assert!(
                    !v1_dropped.load(Ordering::SeqCst) || !v2_dropped.load(Ordering::SeqCst),
                    "both versions dropped while one is pinned"
                );
                let pinned = &pin.dropped;
                assert!(
                    !pinned.load(Ordering::SeqCst),
                    "a pinned version was dropped"
                );
                drop(pin);
                record.release();
            })
        };
        drop(cell.replace(v2));
        reader.join().unwrap();

        assert!(
            v1_dropped.load(Ordering::SeqCst),
            "the replaced version outlived its last pin"
        );
        assert!(
            !v2_dropped.load(Ordering::SeqCst),
            "the current version was dropped"
        );
        drop(cell);
        assert!(v2_dropped.load(Ordering::SeqCst));
    });
}

/// Two readers, one of them holding two pins at once (its one slot, then a
/// counted pin), against two replacements: still no pinned value dropped,
/// none leaked.
#[test]
fn nested_pins_across_two_replacements() {
    let mut builder = loom::model::Builder::new();
    // Three threads and two replacements: bound the preemptions so the
    // exploration finishes in seconds.
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let domain = leak(Domain::new());
        let (v1, v1_dropped) = version();
        let (v2, v2_dropped) = version();
        let (v3, v3_dropped) = version();
        let cell = Arc::new(PinCell::new(v1, domain));

        let readers: Vec<_> = (0..2)
            .map(|nesting| {
                let cell = cell.clone();
                thread::spawn(move || {
                    let record = domain.claim();
                    let outer = cell.pin(record);
                    assert!(
                        !outer.dropped.load(Ordering::SeqCst),
                        "a pinned version was dropped"
                    );
                    if nesting == 1 {
                        let inner = cell.pin(record);
                        assert!(
                            !inner.dropped.load(Ordering::SeqCst),
                            "a pinned version was dropped"
                        );
                        assert!(
                            !outer.dropped.load(Ordering::SeqCst),
                            "a pinned version was dropped"
                        );
                        drop(inner);
                    }
                    assert!(
                        !outer.dropped.load(Ordering::SeqCst),
                        "a pinned version was dropped"
                    );
                    drop(outer);
                    record.release();
                })
            })
            .collect();
        drop(cell.replace(v2));
        drop(cell.replace(v3));
        for reader in readers {
            reader.join().unwrap();
        }
        assert!(v1_dropped.load(Ordering::SeqCst), "version 1 leaked");
        assert!(v2_dropped.load(Ordering::SeqCst), "version 2 leaked");
        assert!(
            !v3_dropped.load(Ordering::SeqCst),
            "the current version was dropped"
        );
    });
}

/// A pin made on one thread and dropped on another (guards are `Send`),
/// while the thread that made it gives its record back and a replacement
/// runs: the value stays alive until the drop, and is dropped after it.
#[test]
fn a_pin_dropped_on_another_thread_after_its_record_was_given_back() {
    loom::model(|| {
        let domain: &'static Domain = leak(Domain::new());
        let (v1, v1_dropped) = version();
        let (v2, _v2_dropped) = version();
        // Leaked: the pin that borrows it moves to another thread.
        let cell: &'static PinCell<Version> = leak(PinCell::new(v1, domain));
        let record = domain.claim();
        let pin = cell.pin(record);
        record.release();
        let pinned = pin.dropped.clone();
        let dropper = thread::spawn(move || {
            assert!(
                !pinned.load(Ordering::SeqCst),
                "a pinned version was dropped"
            );
            drop(pin);
        });
        drop(cell.replace(v2));
        dropper.join().unwrap();
        assert!(v1_dropped.load(Ordering::SeqCst), "version 1 leaked");
    });
}
