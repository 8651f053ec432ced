//! Pinning the serving version with no locked instruction: hazard pointers
//! with asymmetric fences.
//!
//! [`PinCell`] holds the serving version as an `Arc` turned into a raw
//! pointer. A reader pins it by writing that pointer into a slot of its own
//! thread's [`Record`] and reading the cell again: if the cell still holds
//! it, the version cannot be freed until the slot is cleared. Both the pin
//! and its release are plain loads and stores; what orders the reader's
//! slot store before its second read is a *light* fence (a compiler fence),
//! paired with a *heavy* one on the rare writer side (`membarrier`, which
//! runs a full barrier on every thread of the process): the asymmetric
//! fences of folly's and `haphazard`'s hazard pointers.
//!
//! A replaced version is retired into the cell's list and freed by whoever
//! finds no slot holding it: the writer right after the heavy fence, or
//! the reader whose release drops the last pin on a retired version (it
//! sees the retired flag, so the version goes as soon as its last guard
//! does; nothing of it is cached per thread, so an idle thread never keeps
//! one alive).
//!
//! Why not a crate: `haphazard` frees retired objects in batches, when a
//! threshold is reached, not when the last pin goes; and it hands out one
//! hazard pointer per `HazardPointer`, whose allocation is a locked
//! instruction. arc-swap's `load` costs a locked instruction on each pin
//! and each release.
//!
//! This file uses only `super::sync` and `std`, so the loom model
//! (`tests/loom`) checks this very code with loom's atomics and fences.

use std::ptr::{self, NonNull};
use std::sync::Arc;

pub(crate) use super::sync::SLOTS;
use super::sync::{fence, heavy_fence, light_fence, AtomicBool, AtomicPtr, Mutex, Ordering};

/// One thread's hazard slots. Only the thread that claimed the record
/// stores a pointer into a free slot; any thread may clear a slot (a guard
/// may be dropped on another thread than the one that made it).
#[repr(align(128))] // no false sharing with another thread's record
pub(crate) struct Record {
    slots: [AtomicPtr<()>; SLOTS],
    /// Whether a thread owns the record; cleared at that thread's exit.
    claimed: AtomicBool,
    /// The next record of the domain; set before the record is published.
    next: *const Record,
}

// SAFETY: `next` points to another leaked `Record` and never changes once
// the record is published; everything else is atomic.
unsafe impl Send for Record {}
// SAFETY: as above.
unsafe impl Sync for Record {}

impl Record {
    fn new(next: *const Record) -> Self {
        Self {
            slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            claimed: AtomicBool::new(true),
            next,
        }
    }

    /// A slot no pin holds. Called only by the thread that claimed the
    /// record, the only one that fills slots.
    #[inline(always)]
    fn free_slot(&self) -> Option<&AtomicPtr<()>> {
        // Usually the first: guards rarely nest.
        let first = &self.slots[0];
        if first.load(Ordering::Relaxed).is_null() {
            return Some(first);
        }
        self.free_slot_past_first()
    }

    #[cold]
    #[inline(never)]
    fn free_slot_past_first(&self) -> Option<&AtomicPtr<()>> {
        self.slots[1..]
            .iter()
            .find(|slot| slot.load(Ordering::Relaxed).is_null())
    }

    /// Gives the record back for another thread to claim; its slots may
    /// still be held by guards sent elsewhere, which clear them later.
    pub(crate) fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }
}

/// Every record ever made: a list that only grows (records are reused, never
/// freed), so a scan can walk it without locking.
pub(crate) struct Domain {
    head: AtomicPtr<Record>,
}

impl Domain {
    /// An empty domain.
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn records(&self) -> impl Iterator<Item = &Record> {
        let mut at = self.head.load(Ordering::Acquire).cast_const();
        std::iter::from_fn(move || {
            // SAFETY: records are leaked, so every pointer in the list is
            // valid for the rest of the process, and `next` was written
            // before the record was published (Release/Acquire on `head`).
            let record = unsafe { at.as_ref() }?;
            at = record.next;
            Some(record)
        })
    }

    /// A record for the calling thread: one given back, or a new one.
    pub(crate) fn claim(&self) -> &Record {
        for record in self.records() {
            if !record.claimed.load(Ordering::Relaxed)
                && record
                    .claimed
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return record;
            }
        }
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let record = Box::into_raw(Box::new(Record::new(head)));
            match self
                .head
                .compare_exchange(head, record, Ordering::Release, Ordering::Relaxed)
            {
                // SAFETY: just leaked; lives for the rest of the process.
                Ok(_) => return unsafe { &*record },
                Err(now) => {
                    // SAFETY: never published: still ours alone.
                    drop(unsafe { Box::from_raw(record) });
                    head = now;
                }
            }
        }
    }

    /// Whether any slot holds `pointer`.
    fn is_pinned(&self, pointer: *const (), pinned: &mut Vec<*const ()>) -> bool {
        if pinned.is_empty() {
            for record in self.records() {
                pinned.extend(
                    record
                        .slots
                        .iter()
                        .map(|slot| slot.load(Ordering::Relaxed).cast_const())
                        .filter(|held| !held.is_null()),
                );
            }
            pinned.push(ptr::null()); // the scan ran, even if it found none
        }
        pinned.contains(&pointer)
    }
}

/// An `Arc<T>` that readers pin without a locked instruction and a writer
/// replaces; a replaced value is dropped once no pin holds it.
pub(crate) struct PinCell<T> {
    /// Owns one strong reference of the `Arc` it came from.
    current: AtomicPtr<T>,
    /// Replaced values some pin may still hold. Its lock also orders every
    /// replacement (and its heavy fence) before every later scan.
    retired: Mutex<Vec<Arc<T>>>,
    /// Whether `retired` is non-empty: what a release checks before it
    /// looks for work.
    has_retired: AtomicBool,
    domain: &'static Domain,
}

// SAFETY: the cell hands out `&T` to other threads and drops `T`s on any
// thread, as `Arc<T>` does; it needs what `Arc<T>` needs to be shared.
unsafe impl<T: Send + Sync> Send for PinCell<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for PinCell<T> {}

impl<T> PinCell<T> {
    /// A cell holding `value`, pinned through records of `domain`.
    pub(crate) fn new(value: Arc<T>, domain: &'static Domain) -> Self {
        Self {
            current: AtomicPtr::new(Arc::into_raw(value).cast_mut()),
            retired: Mutex::new(Vec::new()),
            has_retired: AtomicBool::new(false),
            domain,
        }
    }

    /// Pins the current value through a slot of `record` (the calling
    /// thread's): loads and stores only. With every slot taken, takes a
    /// reference count instead.
    #[inline(always)]
    pub(crate) fn pin<'a>(&'a self, record: &Record) -> Pin<'a, T> {
        let Some(slot) = record.free_slot() else {
            return self.pin_counted();
        };
        // SAFETY: a record is never freed; the slot outlives every pin.
        let slot: &'static AtomicPtr<()> = unsafe { &*ptr::from_ref(slot) };
        let mut pointer = self.current.load(Ordering::Acquire);
        // Release: what this thread did through its previous pin in this
        // slot happens before a scan that reads the new value and frees the
        // old one (a plain store on x86, as Relaxed is).
        slot.store(pointer.cast(), Ordering::Release);
        // Orders the store before the load below, against the heavy fence
        // of a writer (see `replace`).
        light_fence();
        let again = self.current.load(Ordering::Acquire);
        if again != pointer {
            pointer = self.pin_raced(slot, again);
        }
        Pin {
            cell: self,
            // SAFETY: the cell always holds a value (`Arc::into_raw` is
            // never null).
            pointer: unsafe { NonNull::new_unchecked(pointer) },
            hold: Hold::Slot(slot),
        }
    }

    /// The rest of a pin that raced with a replacement: `pointer` was
    /// replaced between the first load and the check. Its slot may have
    /// kept the replaced value from being dropped by the writer's scan, and
    /// no release will come for it, so this looks again once pinned.
    #[cold]
    #[inline(never)]
    fn pin_raced(&self, slot: &AtomicPtr<()>, mut pointer: *mut T) -> *mut T {
        loop {
            slot.store(pointer.cast(), Ordering::Release);
            light_fence();
            let again = self.current.load(Ordering::Acquire);
            if again == pointer {
                break;
            }
            pointer = again;
        }
        if self.has_retired.load(Ordering::Acquire) {
            self.reclaim();
        }
        pointer
    }

    /// Pins the current value with a strong reference of its own.
    #[cold]
    pub(crate) fn pin_counted(&self) -> Pin<'_, T> {
        let pointer = {
            // Replacements take this lock: `current` and its reference stay.
            let _retired = self.lock_retired();
            let pointer = self.current.load(Ordering::Acquire);
            // SAFETY: `current` owns a strong reference, which cannot be
            // given up while the lock is held.
            unsafe { Arc::increment_strong_count(pointer) };
            pointer
        };
        Pin {
            cell: self,
            // SAFETY: from `Arc::into_raw`, never null.
            pointer: unsafe { NonNull::new_unchecked(pointer) },
            hold: Hold::Counted,
        }
    }

    /// Makes `value` current; the old value is dropped once no pin holds
    /// it. Returns the retired values no pin holds now (the old one among
    /// them, if unpinned), for the caller to drop when it holds no lock;
    /// the others go when their last pin is released.
    #[must_use = "the values returned are dropped where the caller chooses"]
    pub(crate) fn replace(&self, value: Arc<T>) -> Vec<Arc<T>> {
        let mut retired = self.lock_retired();
        let old = self
            .current
            .swap(Arc::into_raw(value).cast_mut(), Ordering::AcqRel);
        // SAFETY: the reference `current` owned, handed over.
        retired.push(unsafe { Arc::from_raw(old) });
        self.has_retired.store(true, Ordering::Release);
        // Every reader that pinned `old` before the swap above is now seen
        // in its slot, and every later pin reads the new value.
        heavy_fence();
        self.collect(&mut retired)
    }

    /// Drops every retired value no pin holds. Runs when a release may
    /// have dropped the last pin on one.
    #[cold]
    #[inline(never)]
    fn reclaim(&self) {
        let dropped = {
            let mut retired = self.lock_retired();
            // No heavy fence needed: each retired value had its own, in
            // `replace`, under this lock, which this scan is ordered after.
            self.collect(&mut retired)
        };
        drop(dropped);
    }

    /// Takes the retired values no slot holds out of `retired`. They are
    /// dropped by the caller after the lock is released: dropping a
    /// version unloads a library, which must not run under the lock.
    fn collect(&self, retired: &mut Vec<Arc<T>>) -> Vec<Arc<T>> {
        let mut pinned = Vec::new();
        let mut free = Vec::new();
        let mut index = 0;
        while index < retired.len() {
            if self
                .domain
                .is_pinned(Arc::as_ptr(&retired[index]).cast(), &mut pinned)
            {
                index += 1;
            } else {
                free.push(retired.swap_remove(index));
            }
        }
        // What pins did before releasing happens before the drop.
        fence(Ordering::Acquire);
        if retired.is_empty() {
            self.has_retired.store(false, Ordering::Relaxed);
        }
        free
    }

    fn lock_retired(&self) -> super::sync::MutexGuard<'_, Vec<Arc<T>>> {
        self.retired
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T> Drop for PinCell<T> {
    fn drop(&mut self) {
        // No pin outlives the cell (they borrow it).
        let current = self.current.load(Ordering::Relaxed);
        // SAFETY: the reference `current` owns.
        drop(unsafe { Arc::from_raw(current) });
    }
}

/// How a [`Pin`] keeps its value alive.
enum Hold {
    /// A hazard slot holds the pointer.
    Slot(&'static AtomicPtr<()>),
    /// The pin owns a strong reference.
    Counted,
}

/// A pinned value of a [`PinCell`]: it stays alive until this drops.
pub(crate) struct Pin<'a, T> {
    cell: &'a PinCell<T>,
    pointer: NonNull<T>,
    hold: Hold,
}

// SAFETY: a pin gives `&T` and may drop a `T` (like `Arc<T>`); clearing
// its slot from another thread is an atomic store (see `Record`).
unsafe impl<T: Send + Sync> Send for Pin<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Pin<'_, T> {}

impl<T> Pin<'_, T> {
    /// A strong reference to the pinned value, which may outlive the pin
    /// (an async call holds its version this way across `.await`s).
    pub(crate) fn to_arc(&self) -> Arc<T> {
        let pointer = self.pointer.as_ptr();
        // SAFETY: every value of a cell comes from `Arc::into_raw` (`new`,
        // `replace`), and this pin keeps it alive, so its strong count is
        // at least one while the count is raised.
        unsafe {
            Arc::increment_strong_count(pointer);
            Arc::from_raw(pointer)
        }
    }
}

impl<T> std::ops::Deref for Pin<'_, T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the slot or the strong reference keeps it alive.
        unsafe { self.pointer.as_ref() }
    }
}

impl<T> Drop for Pin<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        match self.hold {
            Hold::Slot(slot) => {
                slot.store(ptr::null_mut(), Ordering::Release);
                // Orders the store before the loads below, against a
                // writer's heavy fence: either its scan sees the slot
                // cleared, or this sees the value retired.
                light_fence();
                if self.cell.has_retired.load(Ordering::Acquire)
                    && self.cell.current.load(Ordering::Relaxed) != self.pointer.as_ptr()
                {
                    // The pinned value was replaced: this may have been its
                    // last pin. (The pointer is only compared, not read.)
                    self.cell.reclaim();
                }
            }
            // SAFETY: the strong reference this pin took.
            Hold::Counted => drop(unsafe { Arc::from_raw(self.pointer.as_ptr()) }),
        }
    }
}
