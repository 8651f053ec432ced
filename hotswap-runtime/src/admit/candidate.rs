//! A build read from disk: the bytes every check and the load use, and what
//! the trust checks need to know about where they came from.
//!
//! Builds are told apart by their bytes, compared with `==` (the C
//! library's `memcmp`, as fast in an unoptimised host as in a release one),
//! not by a digest of the whole file: a hash compiled without optimisation
//! (what `cargo run` builds) took 160 ms of a 24 MB debug build, most of the
//! time the swap took. A comparison with the serving build only reads as
//! far as the first difference, and builds of different sizes are not
//! compared at all.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admit::files::{containing_directories, signature_path};
use crate::error::Error;

/// A build read from disk, and what the trust checks need to know about
/// where it came from.
pub(crate) struct Candidate {
    pub path: PathBuf,
    /// Shared with the [`Identity`] of a build that is remembered as
    /// refused, not copied.
    pub bytes: Arc<Vec<u8>>,
    /// Metadata of the file that was read (`fstat` of the open file, so it
    /// describes these bytes even if the path is replaced meanwhile).
    pub file: Metadata,
    /// The directory the path names, and, if the path is a symbolic link,
    /// the directory of the file it leads to; with their metadata.
    pub directories: Vec<(PathBuf, Metadata)>,
    /// The detached signature beside the library, as found.
    pub signature: std::io::Result<Vec<u8>>,
    /// When the build was first noticed: the first file event about it, or
    /// when reading it began for a build nobody announced (`reload()`).
    pub noticed: Instant,
    /// When reading it began.
    pub read_at: Instant,
    /// How long reading it (file, metadata, signature) took.
    pub read: Duration,
}

impl Candidate {
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
        let read_at = Instant::now();
        let failed = |error| Error::Read {
            path: path.to_owned(),
            source: Arc::new(error),
        };
        // The file a symbolic link leads to is the one read: its directory
        // is checked too, not only the link's.
        let resolved = std::fs::canonicalize(path).map_err(failed)?;
        let mut file = File::open(&resolved).map_err(failed)?;
        let metadata = file.metadata().map_err(failed)?;
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        file.read_to_end(&mut bytes).map_err(failed)?;
        let directories = containing_directories(path, &resolved).map_err(failed)?;
        let signature = std::fs::read(signature_path(path));
        Ok(Self {
            path: path.to_owned(),
            bytes: Arc::new(bytes),
            file: metadata,
            directories,
            signature,
            noticed: read_at,
            read_at,
            read: read_at.elapsed(),
        })
    }

    /// The same build, first noticed at `noticed` (a file event, or cargo
    /// finishing), if that was before it was read.
    pub(crate) fn noticed_at(mut self, noticed: Instant) -> Self {
        self.noticed = noticed.min(self.read_at);
        self
    }

    /// Tells refused builds apart: a build refused for its signature or its
    /// permissions is worth another look once they change, and so is one
    /// whose bytes changed.
    pub(crate) fn identity(&self) -> Identity {
        use std::os::unix::fs::MetadataExt;
        let mut facts = Vec::with_capacity(128);
        match &self.signature {
            Ok(signature) => {
                facts.push(1);
                facts.extend_from_slice(&(signature.len() as u64).to_le_bytes());
                facts.extend_from_slice(signature);
            }
            Err(_) => facts.push(0),
        }
        let directories = self.directories.iter().map(|(_, metadata)| metadata);
        for metadata in std::iter::once(&self.file).chain(directories) {
            facts.extend_from_slice(&metadata.mode().to_le_bytes());
            facts.extend_from_slice(&metadata.uid().to_le_bytes());
        }
        Identity {
            bytes: self.bytes.clone(),
            facts,
        }
    }
}

/// What a build is recognised by once it was refused (or failed for now):
/// its bytes, its signature, and the modes and owners of the file and its
/// directories. Keeps the build's bytes (shared, not copied) for as long as
/// it is remembered, so that telling it apart from a later build is one
/// exact comparison.
#[derive(Clone)]
pub(crate) struct Identity {
    bytes: Arc<Vec<u8>>,
    /// Signature, modes and owners, as bytes.
    facts: Vec<u8>,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        // Slice `==` on bytes is `memcmp`, and stops at the first
        // difference; the lengths are compared first.
        self.facts == other.facts
            && (Arc::ptr_eq(&self.bytes, &other.bytes) || self.bytes == other.bytes)
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("bytes", &self.bytes.len())
            .field("facts", &self.facts.len())
            .finish()
    }
}

#[cfg(test)]
impl Identity {
    /// An identity for bytes without any file facts.
    pub(crate) fn of_bytes(bytes: &[u8]) -> Self {
        Self {
            bytes: Arc::new(bytes.to_vec()),
            facts: Vec::new(),
        }
    }
}
