//! Rebuild on save: a thread per `Hot` that watches the module crate's
//! sources and runs `cargo build` when they change.
//!
//! Saves are debounced (a burst of them is one build), a save during a
//! build queues one more, and the build uses the profile, target directory
//! and target triple read off the path of the library the `Hot` opened, so
//! it produces the same kind of library. The built library is swapped in
//! like any other build; a failed build is reported with the compiler's
//! diagnostics and the serving version keeps serving.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::RecursiveMode;

use crate::cargo_build::CargoBuild;
use crate::error::Error;
use crate::events::SwapEvent;
use crate::serve::options::SwapMode;
use crate::ffi::module::ModuleSpec;
use crate::admit::candidate::Candidate;
use crate::serve::swap::{Core, RebuildRun};
use crate::watch::{Message, WatchThread};

/// Default quiet time after the last save before a build starts: editors
/// write a file in several steps, and "save all" writes several files.
/// Measured (see `examples/bench/src/bin/pickup.rs`): a save by rename is one
/// event, a save in place three within 0.5 ms, a vim-style save (backup by
/// rename, write, remove the backup) six within 0.6 ms, three files saved
/// by rename within 1.4 ms. Every rebuild waits this long, and a burst it
/// splits costs a second build (a save during a build queues one more), so
/// it is about ten times the longest burst measured.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(20);

/// A checked rebuild set-up: the crate exists and the build command is
/// known. Made before the module is loaded, so a mistake costs no setup.
pub(crate) struct RebuildPlan {
    crate_dir: PathBuf,
    cargo: CargoBuild,
    debounce: Duration,
}

impl RebuildPlan {
    /// `profile` overrides the one read off the library's path.
    pub(crate) fn new(
        library: &Path,
        crate_dir: &Path,
        profile: Option<&str>,
        debounce: Duration,
    ) -> Result<Self, Error> {
        let unusable = |detail: String| Error::Rebuild {
            crate_dir: crate_dir.to_owned(),
            detail,
        };
        let crate_dir = crate_dir
            .canonicalize()
            .map_err(|error| unusable(format!("cannot open the directory: {error}")))?;
        if !crate_dir.join("Cargo.toml").is_file() {
            return Err(unusable(
                "it has no Cargo.toml; name the module crate's own directory".into(),
            ));
        }
        let cargo = cargo_build_for(library, &crate_dir, profile).map_err(unusable)?;
        Ok(Self {
            crate_dir,
            cargo,
            debounce,
        })
    }
}

/// Starts rebuilding on save; dropping the thread stops it (killing a build
/// in progress).
pub(crate) fn start<M: ModuleSpec>(
    shared: Arc<Core<M>>,
    plan: RebuildPlan,
    mode: SwapMode,
) -> Result<WatchThread, Error> {
    let RebuildPlan {
        crate_dir,
        cargo,
        debounce,
    } = plan;
    let sources = Sources::new(&crate_dir, cargo.target_dir.as_deref());
    tracing::info!(module = M::MODULE, crate_dir = %crate_dir.display(), profile = %cargo.profile, "rebuilding on save");
    WatchThread::spawn(
        format!("hotswap-rebuild-{}", M::MODULE),
        &crate_dir,
        RecursiveMode::Recursive,
        move |receiver| rebuild_loop(&shared, &cargo, &sources, receiver, debounce, mode),
    )
    .map_err(|detail| Error::Rebuild {
        crate_dir,
        detail: format!("cannot watch it: {detail}"),
    })
}

/// The cargo invocation that rebuilds `library`, read off its path:
/// `<target-dir>/[<triple>/]<profile-dir>/[deps/]lib….so`, where cargo
/// marks the target directory with a `CACHEDIR.TAG`.
fn cargo_build_for(
    library: &Path,
    crate_dir: &Path,
    profile: Option<&str>,
) -> Result<CargoBuild, String> {
    let library = library
        .canonicalize()
        .map_err(|error| format!("cannot resolve {}: {error}", library.display()))?;
    let mut profile_dir = library.parent().unwrap_or(Path::new("/"));
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir = profile_dir.parent().unwrap_or(profile_dir);
    }
    let is_target_dir = |dir: &Path| dir.join("CACHEDIR.TAG").is_file();
    let above = profile_dir.parent();
    let (target_dir, triple) = match (above, above.and_then(Path::parent)) {
        (Some(dir), _) if is_target_dir(dir) => (Some(dir), None),
        (Some(triple), Some(dir)) if is_target_dir(dir) => (Some(dir), triple.file_name()),
        _ => (None, None),
    };
    let profile = match (profile, target_dir) {
        (Some(profile), _) => profile.to_owned(),
        (None, Some(_)) => match profile_dir.file_name().and_then(|name| name.to_str()) {
            // Cargo's `dev` profile builds into `debug/`.
            Some("debug") | None => "dev".to_owned(),
            Some(name) => name.to_owned(),
        },
        (None, None) => {
            return Err(format!(
                "{} is not inside a cargo target directory (`<target-dir>/<profile>/`), so the \
                 profile it was built with is unknown; open the library cargo built, or name the \
                 profile with `Options::build_profile`",
                library.display()
            ))
        }
    };
    Ok(CargoBuild {
        crate_dir: crate_dir.to_owned(),
        target_dir: target_dir.map(Path::to_owned),
        profile,
        triple: triple.map(|triple| triple.to_string_lossy().into_owned()),
    })
}

/// Which changed files are the crate's sources: Rust files, manifests and
/// the lock file, outside any target directory.
struct Sources {
    ignored: Vec<PathBuf>,
}

impl Sources {
    fn new(crate_dir: &Path, target_dir: Option<&Path>) -> Self {
        let mut ignored = vec![crate_dir.join("target")];
        // Only a target dir inside the crate is under the watch (a crate may
        // also sit inside some target dir: its sources still count).
        ignored.extend(
            target_dir
                .filter(|dir| dir.starts_with(crate_dir))
                .map(Path::to_owned),
        );
        Self { ignored }
    }

    fn changed_by(&self, event: &notify::Result<notify::Event>) -> bool {
        match event {
            Ok(event) if event.kind.is_access() => false,
            Ok(event) => event.paths.iter().any(|path| self.is_source(path)),
            // Lost events (queue overflow): rebuild to be sure.
            Err(_) => true,
        }
    }

    fn is_source(&self, path: &Path) -> bool {
        let named = |name: &str| path.file_name().is_some_and(|file| file == name);
        let relevant = path.extension().is_some_and(|extension| extension == "rs")
            || named("Cargo.toml")
            || named("Cargo.lock");
        relevant && !self.ignored.iter().any(|dir| path.starts_with(dir))
    }
}

fn rebuild_loop<M: ModuleSpec>(
    shared: &Core<M>,
    cargo: &CargoBuild,
    sources: &Sources,
    receiver: &Receiver<Message>,
    debounce: Duration,
    mode: SwapMode,
) {
    // The first save not built yet, from a save during the last build.
    let mut saved_during_build: Option<Instant> = None;
    loop {
        let saved = match saved_during_build.take() {
            Some(saved) => saved,
            None => match next_save(receiver, sources) {
                Some(saved) => saved,
                None => return,
            },
        };
        // Debounce: build once the sources have been quiet for a while.
        let mut last_save = saved;
        loop {
            match receiver.recv_timeout(debounce.saturating_sub(last_save.elapsed())) {
                Ok(Message::FileEvent(event, at)) if sources.changed_by(&event) => {
                    last_save = at;
                }
                Ok(Message::FileEvent(..)) => {}
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let started = Instant::now();
        shared.rebuild_started(RebuildRun { saved, started });
        tracing::info!(module = M::MODULE, profile = %cargo.profile, "sources changed; rebuilding");
        let outcome = cargo.run_until(|wait| match receiver.recv_timeout(wait) {
            Ok(Message::FileEvent(event, at)) => {
                if sources.changed_by(&event) {
                    saved_during_build.get_or_insert(at);
                }
                false
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        });
        let finished = Instant::now();
        match outcome {
            // Stopped: cargo was killed.
            Ok(None) => return,
            Ok(Some(built)) => {
                let took = finished.saturating_duration_since(started);
                tracing::info!(module = M::MODULE, library = %built.library.display(), ?took, "rebuilt");
                if built.diagnostics.contains("warning:") {
                    tracing::warn!(module = M::MODULE, output = %built.diagnostics, "rebuilt with warnings");
                } else {
                    tracing::debug!(module = M::MODULE, output = %built.diagnostics, "cargo output");
                }
                shared.events.emit(SwapEvent::Built {
                    module: M::MODULE,
                    library: built.library.clone(),
                    took,
                    diagnostics: built.diagnostics,
                });
                swap_in(shared, &built.library, finished, mode);
            }
            Err(error) => {
                tracing::warn!(module = M::MODULE, %error, "rebuild failed; the serving version keeps serving");
                shared.record_error(
                    &error,
                    SwapEvent::BuildFailed {
                        module: M::MODULE,
                        error: error.clone(),
                    },
                );
            }
        }
        shared.rebuild_finished();
    }
}

/// Blocks until a source changes (when its event arrived) or the rebuilder
/// is stopped (`None`).
fn next_save(receiver: &Receiver<Message>, sources: &Sources) -> Option<Instant> {
    loop {
        match receiver.recv() {
            Ok(Message::FileEvent(event, at)) if sources.changed_by(&event) => return Some(at),
            Ok(Message::FileEvent(..)) => continue,
            Ok(Message::Stop) | Err(_) => return None,
        }
    }
}

/// Swaps in the library cargo built, which it finished at `finished` (the
/// library watcher may have swapped it in already: then nothing happens).
fn swap_in<M: ModuleSpec>(shared: &Core<M>, library: &Path, finished: Instant, mode: SwapMode) {
    match Candidate::read(library).map(|build| build.noticed_at(finished)) {
        Ok(build) if mode == SwapMode::OnGet => shared.offer(build),
        // Errors are recorded and reported by the swap itself.
        Ok(build) => drop(shared.swap_if_new(build)),
        Err(error) => shared.record_error(
            &error,
            SwapEvent::Refused {
                module: M::MODULE,
                error: error.clone(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `relative` created (empty) under a fresh directory whose `target/`
    /// is marked as a cargo target directory.
    fn library_at(relative: &str) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("target")).unwrap();
        std::fs::write(root.path().join("target/CACHEDIR.TAG"), "").unwrap();
        let library = root.path().join(relative);
        std::fs::create_dir_all(library.parent().unwrap()).unwrap();
        std::fs::write(&library, "").unwrap();
        (root, library)
    }

    fn inferred(
        relative: &str,
        profile: Option<&str>,
    ) -> Result<(String, Option<String>, bool), String> {
        let (root, library) = library_at(relative);
        let build = cargo_build_for(&library, root.path(), profile)?;
        let target = root.path().join("target").canonicalize().unwrap();
        Ok((
            build.profile,
            build.triple,
            build.target_dir == Some(target),
        ))
    }

    #[test]
    fn the_profile_comes_from_the_library_path() {
        assert_eq!(
            inferred("target/debug/libm.so", None),
            Ok(("dev".into(), None, true))
        );
        assert_eq!(
            inferred("target/debug/deps/libm.so", None),
            Ok(("dev".into(), None, true))
        );
        assert_eq!(
            inferred("target/release/libm.so", None),
            Ok(("release".into(), None, true))
        );
        assert_eq!(
            inferred("target/profiling/libm.so", None),
            Ok(("profiling".into(), None, true))
        );
        assert_eq!(
            inferred("target/x86_64-unknown-linux-gnu/release/libm.so", None),
            Ok((
                "release".into(),
                Some("x86_64-unknown-linux-gnu".into()),
                true
            ))
        );
        assert_eq!(
            inferred("target/debug/libm.so", Some("release")),
            Ok(("release".into(), None, true))
        );
    }

    #[test]
    fn a_library_outside_a_target_dir_needs_a_profile() {
        let error = inferred("elsewhere/libm.so", None).unwrap_err();
        assert!(
            error.contains("not inside a cargo target directory"),
            "{error}"
        );
        assert!(error.contains("Options::build_profile"), "{error}");
        assert_eq!(
            inferred("elsewhere/libm.so", Some("release")),
            Ok(("release".into(), None, false))
        );
    }

    #[test]
    fn only_sources_outside_target_dirs_count() {
        let sources = Sources::new(Path::new("/c"), Some(Path::new("/c/out")));
        assert!(sources.is_source(Path::new("/c/src/lib.rs")));
        assert!(sources.is_source(Path::new("/c/src/nested/mod.rs")));
        assert!(sources.is_source(Path::new("/c/Cargo.toml")));
        assert!(sources.is_source(Path::new("/c/build.rs")));
        assert!(!sources.is_source(Path::new("/c/src/lib.rs.swp")));
        assert!(!sources.is_source(Path::new("/c/README.md")));
        assert!(!sources.is_source(Path::new("/c/target/debug/build/x/out/gen.rs")));
        assert!(!sources.is_source(Path::new("/c/out/debug/gen.rs")));
        // A crate kept inside another target dir still has sources.
        let nested = Sources::new(Path::new("/t/scratch/c"), Some(Path::new("/t")));
        assert!(nested.is_source(Path::new("/t/scratch/c/src/lib.rs")));
    }
}
