//! The process's one pin domain and each thread's record in it: what
//! `get()` reaches with one thread-local load.

use std::cell::Cell;
use std::ptr;
use std::sync::LazyLock;

use crate::serve::pin::{Domain, Record};
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

/// The calling thread's record.
#[inline(always)]
pub(crate) fn this_thread() -> &'static Record {
    let record = RECORD.with(Cell::get);
    if record.is_null() {
        return claim();
    }
    // SAFETY: records are never freed, and this thread claimed this one.
    unsafe { &*record }
}

#[cold]
#[inline(never)]
fn claim() -> &'static Record {
    let record = domain().claim();
    RECORD.with(|cell| cell.set(record));
    // During thread teardown the record is kept for good instead.
    let _ = GIVE_BACK.try_with(|give_back| give_back.0.set(record));
    record
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
