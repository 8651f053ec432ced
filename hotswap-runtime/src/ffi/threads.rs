//! The host side of thread tracking (the module side is `interpose.rs`):
//! which threads run a version's code, and its thread-local destructors.
//!
//! Each loaded version has a [`Tracker`]. Threads the version's code starts
//! run [`module_thread_start`], which counts them; a version is unloaded
//! only once its count is zero. Thread-local destructors the version's code
//! registers go to a list of the registering thread (a host thread-local)
//! instead of glibc's: at that thread's exit they run if their version is
//! still loaded, and once it is retired they are dropped without running
//! (their code is gone; what they would have freed stays allocated, a few
//! bytes per thread and version). So glibc never keeps a library mapped for
//! a thread-local destructor of its own.
//!
//! The rule for module authors that follows: a thread a version starts must
//! be finished (joined, or at least returned) by the end of its `teardown`;
//! one that is still running then keeps that version mapped, and is
//! reported, until it ends.

use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::abi::{ThreadHooks, WakerHold};
use crate::ffi::tasks::{
    sleep_hook, spawn_hook, tcp_close_hook, tcp_connect_hook, tcp_read_hook, tcp_write_hook,
    Tasks,
};
use hotswap_boundary::interpose::glibc_pthread_create;

/// The threads and thread-local destructors of one loaded version.
pub(crate) struct Tracker {
    /// What of the version's code can still run behind the host's back:
    /// threads it started that have not finished, its async tasks not yet
    /// dropped, and its wakers the host holds. One counter, so that the
    /// unload check reads all of them at once (a task that starts a
    /// thread and ends is never seen as neither).
    live: Arc<AtomicUsize>,
    /// Set once the version is retired: its destructors must not run.
    retired: AtomicBool,
    /// Held while one of its destructors runs, and while retiring, so
    /// retiring waits for a running destructor and none starts after.
    gate: Mutex<()>,
    /// The thread-specific keys the version created, with the slot of
    /// the destructor trampoline standing in for each key's destructor.
    keys: Mutex<Vec<(u32, Option<usize>)>>,
    /// What the version's code calls; `ctx` points at this tracker.
    hooks: ThreadHooks,
    /// The tasks it spawned on the host's async runtime.
    tasks: Tasks,
}

impl Tracker {
    pub(crate) fn new() -> Arc<Self> {
        let live = Arc::new(AtomicUsize::new(0));
        Arc::new_cyclic(|this: &std::sync::Weak<Self>| Self {
            live: live.clone(),
            retired: AtomicBool::new(false),
            gate: Mutex::new(()),
            keys: Mutex::new(Vec::new()),
            hooks: ThreadHooks {
                // The hooks live inside the tracker, which outlives every
                // use of them (see `hooks`).
                ctx: this.as_ptr().cast(),
                create: create_hook,
                thread_atexit: thread_atexit_hook,
                key_create: key_create_hook,
                sleep: sleep_hook,
                spawn: spawn_hook,
                tcp_connect: tcp_connect_hook,
                tcp_read: tcp_read_hook,
                tcp_write: tcp_write_hook,
                tcp_close: tcp_close_hook,
                waker_hold: WakerHold {
                    ctx: this.as_ptr().cast(),
                    acquire: waker_acquire_hook,
                    release: waker_release_hook,
                },
            },
            tasks: Tasks::new(live),
        })
    }

    /// The hooks to install into the version's library. Valid while the
    /// tracker is alive: the version keeps it alive for as long as its
    /// library is mapped.
    pub(crate) fn hooks(&self) -> *const ThreadHooks {
        &self.hooks
    }

    /// Threads, async tasks and held wakers of the version that can still
    /// run its code: the version unloads once this is zero.
    pub(crate) fn busy(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The async tasks the version spawned.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.tasks
    }


    /// From now on no destructor of the version runs; waits for one that is
    /// running. Deletes the thread-specific keys it created, so glibc never
    /// calls their destructors. Call before unloading.
    pub(crate) fn retire(&self) {
        {
            let _gate = lock(&self.gate);
            self.retired.store(true, Ordering::Release);
        }
        // Its tasks are dropped where they wait; it unloads once they are.
        self.tasks.cancel();
        for (key, slot) in lock(&self.keys).drain(..) {
            // SAFETY: a key this version created and nobody deletes but
            // here; deleting it runs nothing and leaves the values, which
            // no code will look at again, allocated.
            unsafe { libc::pthread_key_delete(key) };
            if let Some(slot) = slot {
                *lock(&KEY_SLOTS[slot]) = None;
            }
        }
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Runs `destructor` unless the version is retired, holding the gate
    /// so that retiring waits for it.
    fn run_unless_retired(&self, destructor: impl FnOnce()) {
        let _gate = lock(&self.gate);
        if !self.is_retired() {
            destructor();
        }
    }
}

// SAFETY: `hooks.ctx` only ever points at the tracker itself, whose other
// fields are thread-safe; the hook functions may be called from any thread.
unsafe impl Send for Tracker {}
// SAFETY: as above.
unsafe impl Sync for Tracker {}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A thread-local destructor a version registered.
struct Destructor {
    tracker: Arc<Tracker>,
    dtor: unsafe extern "C" fn(*mut c_void),
    obj: *mut c_void,
}

/// What this thread owes loaded versions when it exits.
#[derive(Default)]
struct ThisThread {
    /// Set on threads a version started: counted in its tracker until this
    /// record drops, after the destructors below ran.
    started_by: Option<Arc<Tracker>>,
    /// In registration order; run in reverse, as glibc would.
    destructors: Vec<Destructor>,
}

impl Drop for ThisThread {
    fn drop(&mut self) {
        while let Some(Destructor { tracker, dtor, obj }) = self.destructors.pop() {
            // SAFETY: the version is loaded (not retired, and retiring
            // waits for the gate), `dtor`/`obj` are what its code registered
            // on this very thread, and this is that thread's exit, where
            // glibc would have run it.
            tracker.run_unless_retired(|| unsafe { dtor(obj) });
        }
        if let Some(tracker) = self.started_by.take() {
            // Last: from here on this thread runs no code of the version.
            tracker.live.fetch_sub(1, Ordering::Release);
        }
    }
}

thread_local! {
    static THIS_THREAD: RefCell<ThisThread> = RefCell::default();
}

/// What a version's thread runs: the version's start routine, counted.
struct Start {
    routine: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
    tracker: Arc<Tracker>,
}

unsafe extern "C" fn module_thread_start(start: *mut c_void) -> *mut c_void {
    // SAFETY: `create_hook` passed a leaked `Box<Start>` to this thread only.
    let Start {
        routine,
        arg,
        tracker,
    } = *unsafe { Box::from_raw(start.cast::<Start>()) };
    // The count drops when this record does, at thread exit, after the
    // destructors the routine registered: whether it returns or the thread
    // exits from inside it.
    let registered = THIS_THREAD.try_with(|this| this.borrow_mut().started_by = Some(tracker));
    debug_assert!(registered.is_ok(), "a new thread has its thread-locals");
    // SAFETY: the routine and argument the version's code passed to
    // `pthread_create`; the version stays loaded while this thread counts.
    unsafe { routine(arg) }
}

unsafe extern "C" fn create_hook(
    ctx: *const c_void,
    thread: *mut c_void,
    attr: *const c_void,
    routine: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: `ctx` is the tracker the hooks live in, alive while the
    // version's code runs (which is calling this).
    let tracker = unsafe { tracker_of(ctx) };
    tracker.live.fetch_add(1, Ordering::AcqRel);
    let start = Box::into_raw(Box::new(Start {
        routine,
        arg,
        tracker: tracker.clone(),
    }));
    // SAFETY: glibc's pthread_create with the caller's thread and
    // attributes, and a start routine that takes ownership of `start`.
    let status = unsafe { glibc_pthread_create()(thread, attr, module_thread_start, start.cast()) };
    if status != 0 {
        // SAFETY: no thread was started, so `start` is still ours.
        drop(unsafe { Box::from_raw(start) });
        tracker.live.fetch_sub(1, Ordering::Release);
    }
    status
}

unsafe extern "C" fn thread_atexit_hook(
    ctx: *const c_void,
    dtor: unsafe extern "C" fn(*mut c_void),
    obj: *mut c_void,
    _dso: *mut c_void,
) -> c_int {
    // SAFETY: as in `create_hook`.
    let tracker = unsafe { tracker_of(ctx) };
    let registered = THIS_THREAD.try_with(|this| {
        let mut this = this.borrow_mut();
        // Destructors of retired versions will never run: forget them.
        this.destructors.retain(|entry| !entry.tracker.is_retired());
        this.destructors.push(Destructor { tracker, dtor, obj });
    });
    // Registered while this thread's list is being destroyed: the
    // destructor is dropped unrun, as for a retired version.
    let _ = registered;
    0
}

/// A key destructor of a loaded version, standing behind a trampoline.
type KeySlot = Mutex<Option<(Arc<Tracker>, unsafe extern "C" fn(*mut c_void))>>;

/// How many keys with destructors the loaded versions may have at once
/// (std creates one per version); past that a key's destructor is module
/// code glibc may call after the version is retired, which is logged.
const KEY_SLOT_COUNT: usize = 64;

static KEY_SLOTS: [KeySlot; KEY_SLOT_COUNT] = [const { Mutex::new(None) }; KEY_SLOT_COUNT];

/// What glibc calls for a key of slot `SLOT`: host code, which runs the
/// version's destructor only while the version is loaded.
unsafe extern "C" fn key_destructor<const SLOT: usize>(value: *mut c_void) {
    let Some((tracker, dtor)) = lock(&KEY_SLOTS[SLOT]).clone() else {
        return;
    };
    // SAFETY: the version is loaded (not retired; retiring waits for the
    // gate), and this is glibc running the key's destructor on the value of
    // an exiting thread, as the version asked.
    tracker.run_unless_retired(|| unsafe { dtor(value) });
}

macro_rules! key_destructors {
    ($($slot:literal)*) => {
        [$(key_destructor::<$slot> as unsafe extern "C" fn(*mut c_void)),*]
    };
}

static KEY_DESTRUCTORS: [unsafe extern "C" fn(*mut c_void); KEY_SLOT_COUNT] = key_destructors!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
);

unsafe extern "C" fn key_create_hook(
    ctx: *const c_void,
    key: *mut u32,
    dtor: Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int {
    // SAFETY: as in `create_hook`.
    let tracker = unsafe { tracker_of(ctx) };
    let slot = dtor.and_then(|dtor| {
        KEY_SLOTS.iter().position(|slot| {
            let mut slot = lock(slot);
            let free = slot.is_none();
            if free {
                *slot = Some((tracker.clone(), dtor));
            }
            free
        })
    });
    let standing_in = match (slot, dtor) {
        (Some(slot), _) => Some(KEY_DESTRUCTORS[slot]),
        (None, Some(dtor)) => {
            tracing::warn!("more than {KEY_SLOT_COUNT} thread-specific keys with destructors in loaded module versions: this one's destructor may run after its version is unloaded");
            Some(dtor)
        }
        (None, None) => None,
    };
    // SAFETY: glibc's pthread_key_create with the caller's out-slot.
    let mut status =
        unsafe { hotswap_boundary::interpose::glibc_pthread_key_create()(key, standing_in) };
    // SAFETY: glibc wrote the new key if it succeeded.
    if status == 0 && unsafe { *key } == 0 {
        // Key 0 is never handed to a module: std takes 0 as "no key yet",
        // so given 0 it makes a second key and deletes the first itself,
        // behind the tracker's back; the tracker would then delete key 0
        // again at retire, when it may be another version's, which then
        // gets 0 twice (std aborts: `key as usize != KEY_SENTVAL`). Key 0
        // stays allocated, unused, for the life of the process.
        // SAFETY: as above, for a second key.
        status =
            unsafe { hotswap_boundary::interpose::glibc_pthread_key_create()(key, standing_in) };
    }
    if status == 0 {
        // SAFETY: glibc wrote the new key.
        lock(&tracker.keys).push((unsafe { *key }, slot));
    } else if let Some(slot) = slot {
        *lock(&KEY_SLOTS[slot]) = None;
    }
    status
}

/// A new strong reference to the tracker behind `ctx`.
///
/// # Safety
/// `ctx` is the `ctx` of a live tracker's hooks.
unsafe fn tracker_of(ctx: *const c_void) -> Arc<Tracker> {
    let tracker = ctx.cast::<Tracker>();
    // SAFETY: `ctx` came from `Arc::new_cyclic` of a tracker that is alive
    // (the caller guarantees it), so adding a strong count is sound.
    unsafe {
        Arc::increment_strong_count(tracker);
        Arc::from_raw(tracker)
    }
}

/// `WakerHold::acquire`: the host now holds one more waker of the
/// version, whose code waking or dropping it runs.
unsafe extern "C" fn waker_acquire_hook(ctx: *const c_void) {
    // SAFETY: `ctx` is the tracker the hooks live in; the waker being
    // cloned is counted already, or lent during a poll, so it is loaded.
    unsafe { tracker_of(ctx) }.live.fetch_add(1, Ordering::AcqRel);
}

/// `WakerHold::release`: a waker of the version the host held was woken
/// or dropped, and its code has returned.
unsafe extern "C" fn waker_release_hook(ctx: *const c_void) {
    // SAFETY: as above: the count this releases kept the tracker alive.
    unsafe { tracker_of(ctx) }.live.fetch_sub(1, Ordering::Release);
}
