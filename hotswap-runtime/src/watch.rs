//! Background change detection: one thread per `Hot`, woken by file-system
//! events (`notify`) on the library's directory.
//!
//! A change is a new content digest, so touching or re-copying the same
//! bytes is not one. A build is taken only once its writer has finished:
//! no event for [`QUIET`], the same size and modification time before and
//! after reading it, and a complete ELF image. A build that stays incomplete
//! for [`GRACE`], or is refused, is reported once and not retried until its
//! content (or its signature) changes.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};

use crate::error::Error;
use crate::events::SwapEvent;
use crate::hot::SwapMode;
use crate::integrity::check_shared_library;
use crate::module::HotModule;
use crate::swap::{Build, Shared};
use crate::trust::signature_path;

/// How long the file must be left alone before it is read.
const QUIET: Duration = Duration::from_millis(10);
/// How long an incomplete build may take to be completed before it is
/// reported as refused.
const GRACE: Duration = Duration::from_secs(2);

pub(crate) enum Message {
    FileEvent(notify::Result<notify::Event>),
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
            let _ = events.send(Message::FileEvent(event));
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
pub(crate) fn start<M: HotModule>(
    shared: Arc<Shared<M>>,
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
    Changed,
    TimedOut,
    Stop,
}

fn watch<M: HotModule>(shared: &Shared<M>, receiver: &Receiver<Message>, mode: SwapMode) {
    let path = shared.source.as_path();
    let mut reported: Option<u128> = None;
    let mut incomplete_since: Option<std::time::Instant> = None;
    loop {
        // Wait for our file to change (or, with an incomplete build pending,
        // for the grace period to run out).
        let wake = match incomplete_since {
            None => wait(receiver, path, None),
            Some(since) => wait(receiver, path, Some(GRACE.saturating_sub(since.elapsed()))),
        };
        let grace_over = match wake {
            Wake::Stop => return,
            Wake::TimedOut => true,
            Wake::Changed => {
                if let Wake::Stop = settle(receiver, path) {
                    return;
                }
                false
            }
        };
        let Some(build) = read_finished(path) else {
            continue;
        };
        if build.digest == shared.serving_digest() || reported == Some(build.identity()) {
            incomplete_since = None;
            continue;
        }
        if let Err(detail) = check_shared_library(&build.bytes) {
            if !grace_over {
                // Most likely still being written: give the writer time.
                incomplete_since.get_or_insert_with(std::time::Instant::now);
                continue;
            }
            incomplete_since = None;
            reported = Some(build.identity());
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
        let identity = build.identity();
        match mode {
            SwapMode::OnGet => shared.offer(build),
            _ => {
                if shared.swap_if_new(build).is_err() {
                    reported = Some(identity);
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
            Ok(Message::FileEvent(event)) if concerns(&event, path) => return Wake::Changed,
            Ok(Message::FileEvent(_)) => continue,
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return Wake::Stop,
            Err(RecvTimeoutError::Timeout) => return Wake::TimedOut,
        }
    }
}

/// Waits until `path` has had no event for [`QUIET`].
fn settle(receiver: &Receiver<Message>, path: &Path) -> Wake {
    loop {
        match wait(receiver, path, Some(QUIET)) {
            Wake::Changed => continue,
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

/// Reads the file if nobody wrote to it while it was read.
fn read_finished(path: &Path) -> Option<Build> {
    // The build records the opened file's metadata from before it was read.
    let build = Build::read(path).ok()?;
    let before = stamp(&build.file)?;
    let after = stamp(&std::fs::metadata(path).ok()?)?;
    (before == after && after.0 == build.bytes.len() as u64).then_some(build)
}

fn stamp(metadata: &std::fs::Metadata) -> Option<(u64, SystemTime)> {
    Some((metadata.len(), metadata.modified().ok()?))
}
