//! Where private copies of loaded libraries live: one directory per process
//! (per base directory), mode 0700, and in it one directory per `Hot`.
//!
//! The directories are created with `mkdir`'s exclusive semantics under
//! random names (`tempfile`), so nobody else can have made them first, and
//! only the current user can read or write them. The process directory is
//! removed when the last `Hot` using it drops.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// The private directory of one `Hot`.
pub(crate) struct CopyDir {
    // First: removed before the process directory it is in.
    own: tempfile::TempDir,
    _process: Arc<tempfile::TempDir>,
}

impl CopyDir {
    /// A new directory for one `Hot`, in this process's directory under
    /// `base`.
    pub fn create(base: &Path) -> std::io::Result<Self> {
        let process = process_dir(base)?;
        let own = private_dir_builder("hot-").tempdir_in(process.path())?;
        Ok(Self {
            own,
            _process: process,
        })
    }

    pub fn path(&self) -> &Path {
        self.own.path()
    }
}

/// This process's directory under `base`, made on first use and shared
/// while any `Hot` uses it.
fn process_dir(base: &Path) -> std::io::Result<Arc<tempfile::TempDir>> {
    static DIRS: Mutex<Option<HashMap<PathBuf, Weak<tempfile::TempDir>>>> = Mutex::new(None);
    let mut dirs = DIRS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dirs = dirs.get_or_insert_with(HashMap::new);
    if let Some(dir) = dirs.get(base).and_then(Weak::upgrade) {
        return Ok(dir);
    }
    let prefix = format!("hotswap-{}-", std::process::id());
    let dir = Arc::new(private_dir_builder(&prefix).tempdir_in(base)?);
    dirs.retain(|_, dir| dir.strong_count() > 0);
    dirs.insert(base.to_owned(), Arc::downgrade(&dir));
    Ok(dir)
}

/// Directories only their owner can enter: tempfile's default is the
/// umask's (often 0755).
fn private_dir_builder(prefix: &str) -> tempfile::Builder<'_, 'static> {
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700));
    builder
}
