//! A build read from disk: the bytes every check and the load use, and what
//! the trust checks need to know about where they came from.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::admit::files::{containing_directories, signature_path};

/// A build read from disk, with its content digest and what the trust
/// checks need to know about where it came from.
pub(crate) struct Candidate {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// XXH3-128 of the bytes: tells builds apart, fast enough (several GB/s)
    /// to stay a small part of a swap. Not a security measure.
    pub digest: u128,
    /// Metadata of the file that was read (`fstat` of the open file, so it
    /// describes these bytes even if the path is replaced meanwhile).
    pub file: Metadata,
    /// The directory the path names, and, if the path is a symbolic link,
    /// the directory of the file it leads to; with their metadata.
    pub directories: Vec<(PathBuf, Metadata)>,
    /// The detached signature beside the library, as found.
    pub signature: std::io::Result<Vec<u8>>,
}

impl Candidate {
    pub(crate) fn read(path: &Path) -> Result<Self, Error> {
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
        Ok(Self {
            path: path.to_owned(),
            digest: twox_hash::XxHash3_128::oneshot(&bytes),
            bytes,
            file: metadata,
            directories,
            signature: std::fs::read(signature_path(path)),
        })
    }

    /// Tells refused builds apart: a build refused for its signature or its
    /// permissions is worth another look once they change.
    pub(crate) fn identity(&self) -> u128 {
        use std::os::unix::fs::MetadataExt;
        let mut facts = Vec::with_capacity(32);
        if let Ok(signature) = &self.signature {
            facts.extend_from_slice(signature);
        }
        let directories = self.directories.iter().map(|(_, metadata)| metadata);
        for metadata in std::iter::once(&self.file).chain(directories) {
            facts.extend_from_slice(&metadata.mode().to_le_bytes());
            facts.extend_from_slice(&metadata.uid().to_le_bytes());
        }
        self.digest ^ twox_hash::XxHash3_128::oneshot(&facts)
    }
}

