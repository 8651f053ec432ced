//! What the admission checks ask of files: who owns them, who may write
//! them, which directories hold them, and where a build's signature is.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::problem::TrustProblem;

/// The detached signature of `library`: the same path with `.sig` appended
/// (`libcounter.so` → `libcounter.so.sig`).
pub fn signature_path(library: &Path) -> PathBuf {
    let mut path = library.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

/// The directory `path` names and, if `resolved` (the file it leads to)
/// lies elsewhere, that one too, canonical, with their metadata.
pub(crate) fn containing_directories(
    path: &Path,
    resolved: &Path,
) -> std::io::Result<Vec<(PathBuf, Metadata)>> {
    let mut directories: Vec<(PathBuf, Metadata)> = Vec::with_capacity(2);
    for of in [path, resolved] {
        let directory = match of.parent() {
            Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
            Some(parent) => parent,
            None => Path::new("/"),
        };
        let directory = directory.canonicalize()?;
        if directories.iter().all(|(seen, _)| *seen != directory) {
            let metadata = std::fs::metadata(&directory)?;
            directories.push((directory, metadata));
        }
    }
    Ok(directories)
}

/// The file or directory belongs to the current user or root and only its
/// owner may write it.
pub(crate) fn permissions(path: &Path, metadata: &Metadata) -> Result<(), TrustProblem> {
    let (user, group) = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    let owner = metadata.uid();
    if owner != user && owner != 0 {
        return Err(TrustProblem::OwnedByOtherUser {
            path: path.to_owned(),
            owner,
        });
    }
    let mode = metadata.mode();
    // A group-writable file is fine when the group is the user's private
    // group (named after the user, gid = uid: the convention of the
    // distributions whose users build with umask 002).
    let private_group = metadata.gid() == group && group == user;
    let writable_by_group = mode & 0o020 != 0 && !private_group;
    if writable_by_group || mode & 0o002 != 0 {
        return Err(TrustProblem::WritableByOthers {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

