//! Background change detection: one thread per `Hot`, woken by file-system
//! events (`notify`) on the library's directory.
//!
//! A change is new content (compared byte for byte with the serving
//! build's in-memory file, up to the first difference), so touching or
//! re-copying the same bytes is not one. A build is taken only once its writer has finished:
//! no event for [`QUIET`], the same size and modification time before and
//! after reading it, and a complete ELF image. A build that stays incomplete
//! for [`GRACE`], or is refused for what it is, is reported once and not
//! retried until its content (or its signature, or its permissions)
//! changes, or another build is swapped in.
//!
//! A build that could not be swapped in for a reason that may pass
//! ([`Error::is_transient`]: the file could not be read, its in-memory
//! image could not be made, `dlopen` refused it because a library or a
//! symbol it needs is missing) is tried again as it is, after
//! [`FIRST_RETRY`], then after twice as long each time, up to
//! [`LAST_RETRY`], until it loads, fails for good, or a new build lands.
//! Every failed attempt is reported ([`SwapEvent::Retrying`], the log,
//! `last_error`), saying when the next one is.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::error::Error;
use crate::events::SwapEvent;
use crate::serve::options::SwapMode;
use crate::admit::integrity::check_shared_library;
use crate::ffi::module::ModuleSpec;
use crate::admit::candidate::{Candidate, Identity};
use crate::serve::swap::{Core, RetryPlan};
use crate::admit::trust::signature_path;

/// How long the file must be left alone before it is read: long enough
/// for the events of one write (truncate, write, close: 0.2–1.4 ms apart
/// when measured), no longer, since every pick-up waits for it. Builds that
/// land whole need none: a rename is one event, and cargo's removal and hard
/// link of its output (3–6 ms apart) are each complete (reading after the
/// removal finds no file, at the cost of a failed `open`). A writer slower
/// than this is caught by the checks on what was read (same size and
/// modification time before and after, a complete ELF image).
const QUIET: Duration = Duration::from_millis(2);
/// How long an incomplete build may take to be completed before it is
/// reported as refused.
const GRACE: Duration = Duration::from_secs(2);
/// How long after its first failed attempt a build that failed for a
/// reason that may pass is tried again; the delay doubles with each
/// failed attempt.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest delay between two attempts.
const LAST_RETRY: Duration = Duration::from_secs(5);

pub(crate) enum Message {
    /// A file-system event, and when it arrived.
    FileEvent(notify::Result<notify::Event>, Instant),
    Stop,
}

/// A thread fed with file-system events under one directory; dropping it
/// stops the thread and joins it.
pub(crate) struct WatchThread {
    stop: Sender<Message>,
    thread: Option<JoinHandle<()>>,
    _fs: RecommendedWatcher,
}

impl WatchThread {
    /// Watches `directory` and runs `body` on a thread named `name` with the
    /// events; `body` returns when it receives [`Message::Stop`].
    pub(crate) fn spawn(
        name: String,
        directory: &Path,
        recursive: RecursiveMode,
        body: impl FnOnce(&Receiver<Message>) + Send + 'static,
    ) -> Result<Self, String> {
        let (sender, receiver) = channel();
        let events = sender.clone();
        let mut fs = notify::recommended_watcher(move |event| {
            let _ = events.send(Message::FileEvent(event, Instant::now()));
        })
        .map_err(|error| error.to_string())?;
        fs.watch(directory, recursive)
            .map_err(|error| error.to_string())?;
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || body(&receiver))
            .map_err(|error| error.to_string())?;
        Ok(Self {
            stop: sender,
            thread: Some(thread),
            _fs: fs,
        })
    }
}

impl Drop for WatchThread {
    fn drop(&mut self) {
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts watching the library of `shared` for new builds.
pub(crate) fn start<M: ModuleSpec>(
    shared: Arc<Core<M>>,
    mode: SwapMode,
) -> Result<WatchThread, Error> {
    // Watch the directory: a build replaced by rename or hard link is a
    // new file, which a watch on the old file would not see.
    let directory = match shared.source.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let path = shared.source.clone();
    WatchThread::spawn(
        format!("hotswap-watch-{}", M::MODULE),
        &directory,
        RecursiveMode::NonRecursive,
        move |receiver| watch(&shared, receiver, mode),
    )
    .map_err(|detail| Error::Watch { path, detail })
}

/// What to do after waiting.
enum Wake {
    /// An event about the file arrived, at this instant.
    Changed(Instant),
    TimedOut,
    Stop,
}

/// A build that failed for a reason that may pass, waiting for its next
/// attempt.
struct Retry {
    /// [`Candidate::identity`] of the build; `None` when the file could not be
    /// read at all.
    identity: Option<Identity>,
    /// How many attempts failed so far.
    failed: u32,
    /// When the next attempt is due.
    due: Instant,
}

impl Retry {
    /// The plan for the next attempt at `identity`: its number, and the
    /// delay after it should it fail too.
    fn plan(retry: Option<&Self>, identity: Option<&Identity>) -> RetryPlan {
        let attempt = match retry {
            Some(retry) if retry.identity.as_ref() == identity => retry.failed + 1,
            _ => 1,
        };
        let doubled = FIRST_RETRY.saturating_mul(1 << (attempt - 1).min(16));
        RetryPlan {
            attempt,
            retry_in: doubled.min(LAST_RETRY),
        }
    }

    /// After the attempt `plan` failed.
    fn after(plan: RetryPlan, identity: Option<Identity>) -> Self {
        Self {
            identity,
            failed: plan.attempt,
            due: Instant::now() + plan.retry_in,
        }
    }
}

fn watch<M: ModuleSpec>(shared: &Core<M>, receiver: &Receiver<Message>, mode: SwapMode) {
    let path = shared.source.as_path();
    // The last build refused for what it is, and the generation then.
    let mut reported: Option<(Identity, u64)> = None;
    let mut incomplete_since: Option<Instant> = None;
    let mut retry: Option<Retry> = None;
    // The first event about the build not yet taken: where its timings
    // start.
    let mut noticed: Option<Instant> = None;
    loop {
        // Wait for our file to change, or until the grace period of an
        // incomplete build runs out, or a retry is due.
        let deadline = [
            incomplete_since.map(|since| since + GRACE),
            retry.as_ref().map(|retry| retry.due),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        let grace_over = match wait(receiver, path, timeout) {
            Wake::Stop => return,
            Wake::TimedOut => incomplete_since.is_some_and(|since| since.elapsed() >= GRACE),
            Wake::Changed(at) => {
                noticed.get_or_insert(at);
                if let Wake::Stop = settle(receiver, path) {
                    return;
                }
                false
            }
        };
        let retry_due = retry
            .as_ref()
            .is_some_and(|retry| retry.due <= Instant::now());
        let build = match read_finished(path) {
            Ok(Some(build)) => match noticed.take() {
                Some(at) => build.noticed_at(at),
                None => build,
            },
            // Being written, or gone for now: an event follows.
            Ok(None) => continue,
            Err(error) => {
                let waiting = retry.as_ref().is_some_and(|retry| retry.identity.is_none());
                if mode != SwapMode::OnGet && (retry_due || !waiting) {
                    let plan = Retry::plan(retry.as_ref(), None);
                    shared.report_retry(&error, plan);
                    retry = Some(Retry::after(plan, None));
                }
                continue;
            }
        };
        let identity = build.identity();
        // A refusal is remembered until the next swap: after one, the same
        // bytes are judged again (against what serves then).
        let generation = shared.generation();
        let known_bad = reported
            .as_ref()
            .is_some_and(|(bad, at)| *bad == identity && *at == generation);
        if known_bad || shared.serves_settled(&build) {
            if !known_bad && mode == SwapMode::OnGet {
                // The file went back to what serves: an offer of another
                // build is stale now.
                shared.withdraw_offer();
            }
            incomplete_since = None;
            retry = None;
            continue;
        }
        // A build that failed for now is tried again when its time comes,
        // not on every event.
        if retry
            .as_ref()
            .is_some_and(|retry| retry.identity.as_ref() == Some(&identity))
            && !retry_due
        {
            continue;
        }
        if let Err(detail) = check_shared_library(&build.bytes) {
            if !grace_over {
                // Most likely still being written: give the writer time,
                // timing it from the first event still.
                noticed.get_or_insert(build.noticed);
                incomplete_since.get_or_insert_with(Instant::now);
                continue;
            }
            incomplete_since = None;
            retry = None;
            reported = Some((identity, generation));
            let error = Error::Malformed {
                path: path.to_owned(),
                detail,
            };
            tracing::warn!(module = M::MODULE, %error, "new build refused; the serving version keeps serving");
            shared.events.emit(SwapEvent::Refused {
                module: M::MODULE,
                error,
            });
            continue;
        }
        incomplete_since = None;
        match mode {
            SwapMode::OnGet => {
                retry = None;
                shared.offer(build);
            }
            _ => {
                let plan = Retry::plan(retry.as_ref(), Some(&identity));
                retry = None;
                match shared.swap_or_retry(build, plan) {
                    Ok(()) => {}
                    Err(error) if error.is_transient() => {
                        retry = Some(Retry::after(plan, Some(identity)));
                    }
                    Err(error) if error.condemns_the_build() => {
                        reported = Some((identity, shared.generation()));
                    }
                    // Failed for the old version's sake: tried again when
                    // the file next changes.
                    Err(_) => {}
                }
            }
        }
    }
}

/// Blocks until an event concerns `path` (or `timeout` passes).
fn wait(receiver: &Receiver<Message>, path: &Path, timeout: Option<Duration>) -> Wake {
    loop {
        let message = match timeout {
            None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(timeout) => receiver.recv_timeout(timeout),
        };
        match message {
            Ok(Message::FileEvent(event, at)) if concerns(&event, path) => {
                return Wake::Changed(at)
            }
            Ok(Message::FileEvent(..)) => continue,
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return Wake::Stop,
            Err(RecvTimeoutError::Timeout) => return Wake::TimedOut,
        }
    }
}

/// Waits until `path` has had no event for [`QUIET`].
fn settle(receiver: &Receiver<Message>, path: &Path) -> Wake {
    loop {
        match wait(receiver, path, Some(QUIET)) {
            Wake::Changed(_) => continue,
            other => return other,
        }
    }
}

/// Whether `event` is about the library at `path`, its signature, or the
/// directory itself (its permissions decide whether the library loads).
fn concerns(event: &notify::Result<notify::Event>, path: &Path) -> bool {
    let signature = signature_path(path);
    match event {
        Ok(event) => {
            !event.kind.is_access()
                && event.paths.iter().any(|changed| {
                    changed.file_name() == path.file_name()
                        || changed.file_name() == signature.file_name()
                        || Some(changed.as_path()) == path.parent()
                })
        }
        // Lost events (queue overflow): look at the file to be sure.
        Err(_) => true,
    }
}

/// Reads the file if nobody wrote to it while it was read: `Ok(None)` if
/// somebody did, or if there is no file (a build replaced by removing the
/// old one first, as cargo does, is followed by another event).
fn read_finished(path: &Path) -> Result<Option<Candidate>, Error> {
    // The build records the opened file's metadata from before it was read.
    let build = match Candidate::read(path) {
        Ok(build) => build,
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(error) => return Err(error),
    };
    let after = std::fs::metadata(path).ok();
    let (Some(before), Some(after)) = (stamp(&build.file), after.as_ref().and_then(stamp)) else {
        return Ok(None);
    };
    Ok((before == after && after.0 == build.bytes.len() as u64).then_some(build))
}

fn stamp(metadata: &std::fs::Metadata) -> Option<(u64, SystemTime)> {
    Some((metadata.len(), metadata.modified().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_100_ms_doubling_to_5_s() {
        let build = Identity::of_bytes(b"one build");
        // Another build, with the same length.
        let other = Identity::of_bytes(b"one other");
        let mut retry: Option<Retry> = None;
        let mut delays = Vec::new();
        for expected_attempt in 1..=8 {
            let plan = Retry::plan(retry.as_ref(), Some(&build));
            assert_eq!(plan.attempt, expected_attempt);
            delays.push(plan.retry_in.as_millis());
            // The same bytes read again: not the same buffer.
            retry = Some(Retry::after(plan, Some(Identity::of_bytes(b"one build"))));
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another build, or an unreadable file, starts over.
        assert_eq!(Retry::plan(retry.as_ref(), Some(&other)).attempt, 1);
        assert_eq!(Retry::plan(retry.as_ref(), None).retry_in, FIRST_RETRY);
        // And the delay never overflows, however long it goes on.
        let long = Retry {
            identity: Some(build.clone()),
            failed: u32::MAX - 1,
            due: Instant::now(),
        };
        assert_eq!(Retry::plan(Some(&long), Some(&build)).retry_in, LAST_RETRY);
    }
}
