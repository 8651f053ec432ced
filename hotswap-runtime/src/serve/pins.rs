//! The process's one pin domain and each thread's record in it: what
//! `get()` reaches with one thread-local load.

use std::cell::Cell;
use std::ptr;
use std::sync::LazyLock;

use crate::serve::pin::{Domain, Pin, PinCell, Record};
use crate::serve::sync;

static DOMAIN: LazyLock<Domain> = LazyLock::new(|| {
    sync::init();
    Domain::new()
});

thread_local! {
    /// This thread's record, once it has one. No destructor, so reading it
    /// is one load from the thread's TLS block.
    static RECORD: Cell<*const Record> = const { Cell::new(ptr::null()) };
    /// Gives the record back when the thread exits.
    static GIVE_BACK: GiveBack = const { GiveBack(Cell::new(ptr::null())) };
}

/// The domain every pin cell uses (set up on first use).
pub(crate) fn domain() -> &'static Domain {
    &DOMAIN
}

/// Pins the current value of `cell` through the calling thread's record
/// (with a strong count instead on a thread that is exiting).
#[inline(always)]
pub(crate) fn pin<T>(cell: &PinCell<T>) -> Pin<'_, T> {
    match this_thread() {
        Some(record) => cell.pin(record),
        None => cell.pin_counted(),
    }
}

/// The calling thread's record; `None` while the thread's thread-locals
/// are being destroyed, when it could not be given back at exit.
#[inline(always)]
fn this_thread() -> Option<&'static Record> {
    let record = RECORD.with(Cell::get);
    if record.is_null() {
        return claim();
    }
    // SAFETY: records are never freed, and this thread claimed this one.
    Some(unsafe { &*record })
}

#[cold]
#[inline(never)]
fn claim() -> Option<&'static Record> {
    let record = domain().claim();
    // Kept only if it can be given back when the thread exits: a thread
    // already tearing its thread-locals down would keep it for good.
    if GIVE_BACK
        .try_with(|give_back| give_back.0.set(record))
        .is_err()
    {
        record.release();
        return None;
    }
    RECORD.with(|cell| cell.set(record));
    Some(record)
}

struct GiveBack(Cell<*const Record>);

impl Drop for GiveBack {
    fn drop(&mut self) {
        let record = self.0.get();
        if record.is_null() {
            return;
        }
        let _ = RECORD.try_with(|cell| cell.set(ptr::null()));
        // SAFETY: records are never freed.
        unsafe { &*record }.release();
    }
}
