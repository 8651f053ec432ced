//! Shared by the comparison binary and the criterion benches: builds the
//! benchmark libraries and opens them.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Where the benchmark libraries are built; hot-lib-reloader's `lib_dir`
/// points at its `release` folder.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target/hotswap-bench")
}

/// Builds `examples/<name>` (in release mode if `release`) and returns its
/// library.
pub fn build(name: &str, release: bool) -> PathBuf {
    hotswap_runtime::__test_hooks::build_module(
        &workspace_root().join("examples").join(name),
        Some(&target_dir()),
        release,
    )
    .unwrap_or_else(|error| panic!("building {name}: {error}"))
}

/// A private directory holding a copy of `library`, which a `Hot` watches
/// and benchmarks replace.
pub struct Stage {
    pub dir: tempfile::TempDir,
}

impl Stage {
    pub fn with(library: &Path) -> Self {
        let stage = Self {
            dir: tempfile::tempdir().expect("stage dir"),
        };
        stage.put(&std::fs::read(library).expect("read library"));
        stage
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("libbench_module.so")
    }

    /// Replaces the library atomically (write beside, rename over).
    pub fn put(&self, bytes: &[u8]) {
        let next = self.dir.path().join("next.so");
        std::fs::write(&next, bytes).expect("write");
        std::fs::rename(&next, self.path()).expect("rename");
    }
}
