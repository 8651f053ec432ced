//! Building a module crate with cargo, for hosts that compile their
//! modules themselves (the demo, the tests, an edit-save-see loop).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::Error;

/// Builds the `cdylib` of the module crate in `crate_dir` with cargo and
/// returns the path of the built library.
///
/// `target_dir` chooses cargo's target directory (default: the crate's
/// own). Uses the `cargo` that runs the current build if there is one
/// (`$CARGO`), else `cargo` from `PATH`. Compiler diagnostics go to this
/// process's stderr and, on failure, into [`Error::Build`].
pub fn build_module(
    crate_dir: &Path,
    target_dir: Option<&Path>,
    release: bool,
) -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .arg("build")
        .arg("--lib")
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if release {
        command.arg("--release");
    }
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    let failed = |output: String| Error::Build {
        crate_dir: crate_dir.to_owned(),
        output,
    };
    let output = command
        .output()
        .map_err(|error| failed(format!("cannot run cargo: {error}")))?;
    let diagnostics = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(failed(diagnostics));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|kind| kind == "cdylib")))
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .find(|file| file.extension().is_some_and(|extension| extension == std::env::consts::DLL_EXTENSION))
        .ok_or_else(|| failed(format!("cargo built no cdylib; add `crate-type = [\"cdylib\", \"rlib\"]` under `[lib]`\n{diagnostics}")))
}
