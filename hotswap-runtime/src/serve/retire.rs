//! Retiring a version: unloading it once none of its code can run, or
//! keeping it mapped, and saying so, while threads it started still run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::events::{EventHub, SwapEvent};
use crate::ffi::loader::Library;
use crate::ffi::threads::Tracker;

/// How long a retired version's threads may take to finish before the
/// version is reported ([`SwapEvent::ThreadsOutlived`]). It stays loaded
/// after that too, until they finish.
pub(crate) const THREAD_GRACE: Duration = Duration::from_millis(500);

/// How often lingering versions are looked at while one is in its grace
/// period (threads usually finish within milliseconds)...
const POLL: Duration = Duration::from_millis(5);
/// ...and once every one has been reported (a thread that outlived its
/// version may run for as long as the process).
const SLOW_POLL: Duration = Duration::from_millis(100);

/// A version that no guard or call uses any more.
pub(crate) struct Retiring {
    pub library: Library,
    pub tracker: Arc<Tracker>,
    pub module: &'static str,
    pub generation: u64,
    pub events: EventHub,
    pub last_error: Arc<Mutex<Option<Error>>>,
    /// The module's count of mapped versions.
    pub mapped: Arc<AtomicUsize>,
}

impl Retiring {
    /// Unloads the version now if none of its threads or tasks runs,
    /// otherwise leaves it to the reaper thread, which unloads it once they
    /// finish.
    pub(crate) fn retire(self) {
        // Its async tasks are cancelled now; their futures are dropped on
        // the runtime's threads, and it unloads once they are.
        self.tracker.tasks().cancel();
        if self.tracker.busy() == 0 {
            self.unload();
        } else {
            Reaper::get().adopt(self);
        }
    }

    fn unload(self) {
        // No destructor the version registered on any thread runs from
        // here on (they are dropped unrun), and none is running.
        self.tracker.retire();
        let Self {
            library,
            module,
            generation,
            events,
            mapped,
            ..
        } = self;
        let image = library.image();
        if library.close() {
            tracing::warn!(module, generation, %image, "retired version stayed resident after dlclose; its in-memory file stays open");
            events.emit(SwapEvent::StayedResident {
                module,
                generation,
                image,
            });
        } else {
            mapped.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(module, generation, "retired version unloaded");
            events.emit(SwapEvent::Unloaded { module, generation });
        }
    }

    fn report_threads(&self) {
        let threads = self.tracker.busy();
        let error = Error::ThreadsOutlived {
            module: self.module,
            generation: self.generation,
            threads,
        };
        tracing::warn!(
            module = self.module,
            generation = self.generation,
            threads,
            "{error}"
        );
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error);
        self.events.emit(SwapEvent::ThreadsOutlived {
            module: self.module,
            generation: self.generation,
            threads,
        });
    }
}

/// One process-wide thread that watches versions whose threads still run.
struct Reaper {
    lingering: Mutex<Vec<Lingering>>,
    wake: Condvar,
}

struct Lingering {
    retiring: Retiring,
    since: Instant,
    reported: bool,
}

impl Reaper {
    fn get() -> &'static Self {
        static REAPER: std::sync::OnceLock<&'static Reaper> = std::sync::OnceLock::new();
        REAPER.get_or_init(|| {
            let reaper: &'static Self = Box::leak(Box::new(Self {
                lingering: Mutex::new(Vec::new()),
                wake: Condvar::new(),
            }));
            std::thread::Builder::new()
                .name("hotswap-reaper".to_owned())
                .spawn(move || reaper.run())
                .expect("start the hotswap reaper thread");
            reaper
        })
    }

    fn adopt(&self, retiring: Retiring) {
        tracing::debug!(
            module = retiring.module,
            generation = retiring.generation,
            threads = retiring.tracker.busy(),
            "retired version waits for its threads"
        );
        self.lock().push(Lingering {
            retiring,
            since: Instant::now(),
            reported: false,
        });
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Lingering>> {
        self.lingering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self) {
        let mut lingering = self.lock();
        loop {
            while lingering.is_empty() {
                lingering = self
                    .wake
                    .wait(lingering)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *lingering)
                .into_iter()
                .partition(|entry| entry.retiring.tracker.busy() == 0);
            *lingering = waiting;
            for entry in &mut *lingering {
                if !entry.reported && entry.since.elapsed() >= THREAD_GRACE {
                    entry.reported = true;
                    entry.retiring.report_threads();
                }
            }
            let all_reported = lingering.iter().all(|entry| entry.reported);
            drop(lingering);
            for entry in done {
                entry.retiring.unload();
            }
            std::thread::sleep(if all_reported { SLOW_POLL } else { POLL });
            lingering = self.lock();
        }
    }
}
