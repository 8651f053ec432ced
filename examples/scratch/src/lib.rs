//! Scratch module crates: a crate written under `target/` from a source
//! file and a few manifest lines, built into a cdylib with
//! `hotswap_runtime::__test_hooks::build_module`. The demo, the service example and the
//! test suite build their module versions this way, so a crate they edit or
//! swap is never one of the workspace's own.
//!
//! A scratch crate depends on this workspace's `hotswap-runtime` by path,
//! with `default-features = false` (a module compiles only the boundary),
//! is its own workspace, and gets a copy of the workspace's `Cargo.lock`, so
//! its dependencies resolve to the versions the workspace uses and cargo
//! reuses their builds in a shared target dir.

#![warn(missing_docs)]

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a build returns on failure.
pub type BuildError = Box<dyn Error + Send + Sync>;

/// The dependencies a scratch crate gets unless told otherwise: `serde`,
/// for the state a module hands over.
pub const SERDE: &str = r#"serde = { version = "1", features = ["derive"] }"#;

/// The root of this workspace.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("examples/scratch is two levels inside the workspace")
        .to_owned()
}

/// A module crate to write at `dir`: package name, edition, dependencies,
/// `src/lib.rs`, an optional `build.rs` and extra manifest text.
#[derive(Clone, Debug)]
pub struct ScratchCrate {
    dir: PathBuf,
    package: String,
    edition: String,
    dependencies: String,
    source: String,
    manifest_extra: String,
    build_script: Option<String>,
    runtime_features: Vec<String>,
}

impl ScratchCrate {
    /// A crate at `dir` with package name `package`, edition 2024, `serde`
    /// as its one dependency beside `hotswap-runtime`, and an empty
    /// `src/lib.rs`.
    pub fn new(dir: impl Into<PathBuf>, package: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            package: package.into(),
            edition: "2024".to_owned(),
            dependencies: SERDE.to_owned(),
            source: String::new(),
            manifest_extra: String::new(),
            build_script: None,
            runtime_features: Vec::new(),
        }
    }

    /// The Rust edition.
    pub fn edition(mut self, edition: impl Into<String>) -> Self {
        self.edition = edition.into();
        self
    }

    /// The `[dependencies]` lines besides `hotswap-runtime`, which every
    /// scratch crate has (replaces the default, [`SERDE`]).
    pub fn dependencies(mut self, lines: impl Into<String>) -> Self {
        self.dependencies = lines.into();
        self
    }

    /// The contents of `src/lib.rs`.
    pub fn source(mut self, lib_rs: impl Into<String>) -> Self {
        self.source = lib_rs.into();
        self
    }

    /// Text appended to the manifest, after `[workspace]`: profiles, say.
    pub fn manifest_extra(mut self, text: impl Into<String>) -> Self {
        self.manifest_extra = text.into();
        self
    }

    /// Features of `hotswap-runtime` to turn on (none by default: a module
    /// compiles only the boundary). `["host"]` compiles the whole runtime
    /// into the module, which makes a debug build about twice as large.
    pub fn runtime_features(mut self, features: &[&str]) -> Self {
        self.runtime_features = features.iter().map(|&feature| feature.to_owned()).collect();
        self
    }

    /// The crate's `build.rs`, if it has one.
    pub fn build_script(mut self, build_rs: Option<String>) -> Self {
        self.build_script = build_rs;
        self
    }

    /// Where the crate is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest as written.
    pub fn manifest(&self) -> String {
        let runtime = workspace_root().join("hotswap-runtime");
        let features = if self.runtime_features.is_empty() {
            String::new()
        } else {
            format!(", features = {:?}", self.runtime_features)
        };
        format!(
            r#"[package]
name = {package:?}
version = "0.1.0"
edition = {edition:?}
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
# A module compiles only the boundary: no host features.
hotswap-runtime = {{ path = {runtime:?}, default-features = false{features} }}
{dependencies}

# Not a member of the workspace it is written in: its own.
[workspace]
{extra}"#,
            package = self.package,
            edition = self.edition,
            runtime = runtime.display().to_string(),
            dependencies = self.dependencies.trim_end(),
            extra = self.manifest_extra,
        )
    }

    /// Writes the crate (only the files whose contents changed: cargo
    /// fingerprints by modification time) and the workspace's `Cargo.lock`.
    /// Returns its directory.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(self.dir.join("src"))?;
        write_if_changed(&self.dir.join("Cargo.toml"), &self.manifest())?;
        write_if_changed(&self.dir.join("src/lib.rs"), &self.source)?;
        let build_rs = self.dir.join("build.rs");
        match &self.build_script {
            Some(script) => write_if_changed(&build_rs, script)?,
            None if build_rs.exists() => std::fs::remove_file(&build_rs)?,
            None => {}
        }
        copy_lock(&self.dir)?;
        Ok(self.dir.clone())
    }

    /// Writes the crate and builds it into `target_dir` (see
    /// [`build_crate`]): returns the library where cargo put it.
    pub fn build(&self, target_dir: &Path) -> Result<PathBuf, BuildError> {
        self.write()?;
        build_crate(&self.dir, &self.package, target_dir)
    }
}

/// Copies the workspace's `Cargo.lock` into `crate_dir`, a crate that is its
/// own workspace: same dependency versions as the workspace, so cargo reuses
/// their builds. Written only when it changed.
pub fn copy_lock(crate_dir: &Path) -> std::io::Result<()> {
    let lock = std::fs::read_to_string(workspace_root().join("Cargo.lock"))?;
    write_if_changed(&crate_dir.join("Cargo.lock"), &lock)
}

/// Builds the module crate at `crate_dir` (package `package`) into
/// `target_dir`, a debug build, and returns the library.
///
/// Cargo names a cdylib without a hash: every crate of that package built
/// into the same target dir (versions of one module) writes the same file,
/// and cargo could call a build fresh although another overwrote its
/// output. So the package is cleaned first, which rebuilds just this crate,
/// not its dependencies.
pub fn build_crate(
    crate_dir: &Path,
    package: &str,
    target_dir: &Path,
) -> Result<PathBuf, BuildError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cleaned = Command::new(cargo)
        .args(["clean", "--quiet", "--package", package, "--target-dir"])
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(crate_dir.join("Cargo.toml"))
        .status()?;
    if !cleaned.success() {
        return Err(format!("cargo clean -p {package} failed ({cleaned})").into());
    }
    Ok(hotswap_runtime::__test_hooks::build_module(
        crate_dir,
        Some(target_dir),
        false,
    )?)
}

/// Installs the library `built` at `destination` the way a build lands
/// where a `Hot` watches: written beside it, then renamed over it, so a
/// watcher never sees half a file. Makes the directory if needed.
pub fn install(built: &Path, destination: &Path) -> std::io::Result<()> {
    if let Some(parent) = destination.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let partial = destination.with_extension("partial");
    std::fs::copy(built, &partial)?;
    std::fs::rename(partial, destination)
}

/// Rewriting identical bytes would only make cargo rebuild for nothing.
fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() != Some(contents) {
        std::fs::write(path, contents)?;
    }
    Ok(())
}
