//! Building a module crate with cargo, for hosts that compile their
//! modules themselves (the demo, the tests, rebuild on save).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::error::Error;

/// Builds the `cdylib` of the module crate in `crate_dir` with cargo and
/// returns the path of the built library.
///
/// `target_dir` chooses cargo's target directory (default: the crate's
/// own). Uses the `cargo` that runs the current build if there is one
/// (`$CARGO`), else `cargo` from `PATH`. On failure the compiler's
/// diagnostics are in [`Error::Build`].
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn build_module(
    crate_dir: &Path,
    target_dir: Option<&Path>,
    release: bool,
) -> Result<PathBuf, Error> {
    let build = CargoBuild {
        crate_dir: crate_dir.to_owned(),
        target_dir: target_dir.map(Path::to_owned),
        profile: if release { "release" } else { "dev" }.to_owned(),
        triple: None,
    };
    let output = build
        .command()
        .output()
        .map_err(|error| build.cannot_run(&error))?;
    let diagnostics = String::from_utf8_lossy(&output.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    build
        .outcome(output.status, &stdout, diagnostics)
        .map(|built| built.library)
}

/// How often a running build is checked for having exited: what a swap
/// after a rebuild waits for cargo's exit to be seen, at most.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// One `cargo build` of a module crate's library.
#[derive(Clone, Debug)]
pub(crate) struct CargoBuild {
    pub crate_dir: PathBuf,
    pub target_dir: Option<PathBuf>,
    /// A cargo profile name (`dev`, `release`, or a custom one).
    pub profile: String,
    /// `--target`, when the library was cross-built.
    pub triple: Option<String>,
}

/// A successful build.
pub(crate) struct Built {
    pub library: PathBuf,
    /// What cargo and the compiler printed (warnings included).
    pub diagnostics: String,
}

impl CargoBuild {
    fn command(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .arg("build")
            .arg("--lib")
            .arg("--message-format=json-render-diagnostics")
            .arg("--manifest-path")
            .arg(self.crate_dir.join("Cargo.toml"))
            .arg("--profile")
            .arg(&self.profile)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(target_dir) = &self.target_dir {
            command.arg("--target-dir").arg(target_dir);
        }
        if let Some(triple) = &self.triple {
            command.arg("--target").arg(triple);
        }
        command
    }

    /// Runs the build; `stop(wait)` waits up to `wait` and says whether to
    /// give up, in which case cargo is killed and `Ok(None)` returned.
    pub fn run_until(
        &self,
        mut stop: impl FnMut(Duration) -> bool,
    ) -> Result<Option<Built>, Error> {
        let mut command = self.command();
        // Its own process group, so giving up kills the whole build.
        command.process_group(0);
        let mut child = command.spawn().map_err(|error| self.cannot_run(&error))?;
        // Drain both pipes while cargo runs, so it never blocks on a full one.
        let stdout = drain(&mut child.stdout);
        let stderr = drain(&mut child.stderr);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if stop(EXIT_POLL) => {
                    kill(&mut child);
                    return Ok(None);
                }
                Ok(None) => {}
                Err(error) => {
                    kill(&mut child);
                    return Err(self.cannot_run(&error));
                }
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let diagnostics = stderr.join().unwrap_or_default();
        self.outcome(status, &stdout, diagnostics).map(Some)
    }

    fn outcome(
        &self,
        status: ExitStatus,
        stdout: &str,
        diagnostics: String,
    ) -> Result<Built, Error> {
        if !status.success() {
            return Err(self.failed(diagnostics));
        }
        match built_library(stdout, &self.crate_dir.join("Cargo.toml")) {
            Some(library) => Ok(Built {
                library,
                diagnostics,
            }),
            None => Err(self.failed(format!(
                "cargo built no cdylib; add `crate-type = [\"cdylib\", \"rlib\"]` under `[lib]`\n{diagnostics}"
            ))),
        }
    }

    fn failed(&self, output: String) -> Error {
        Error::Build {
            crate_dir: self.crate_dir.clone(),
            output,
        }
    }

    fn cannot_run(&self, error: &std::io::Error) -> Error {
        self.failed(format!("cannot run cargo: {error}"))
    }
}

/// The cdylib of the crate whose manifest is `manifest` among cargo's JSON
/// messages. Cargo builds a dependency's cdylib too (a module crate that
/// uses another module depends on that crate), so the first cdylib is not
/// necessarily this crate's.
fn built_library(stdout: &str, manifest: &Path) -> Option<PathBuf> {
    let manifest = manifest.canonicalize().unwrap_or_else(|_| manifest.to_owned());
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| {
            message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib"))
        })
        .filter(|message| {
            message["manifest_path"]
                .as_str()
                .is_some_and(|path| Path::new(path).canonicalize().is_ok_and(|path| path == manifest))
        })
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| {
            file.extension()
                .is_some_and(|extension| extension == std::env::consts::DLL_EXTENSION)
        })
}

fn drain(pipe: &mut Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    let pipe = pipe.take();
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// Stops cargo and what it started (rustc, the linker, build scripts): it
/// runs in a process group of its own (see `run_until`).
fn kill(child: &mut Child) {
    let group = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    match group {
        Some(group) => {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        None => {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
}
