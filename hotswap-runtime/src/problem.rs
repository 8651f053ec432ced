//! Why a build is refused before it is loaded: [`TrustProblem`], the data
//! the admission checks report (in `trust.rs`, `deps.rs` and `files.rs`).

use std::fmt;
use std::path::PathBuf;

use crate::digest::Sha256Digest;

/// Whether a search path entry names `$ORIGIN`.
pub(crate) fn names_origin(entry: &str) -> bool {
    entry.contains("$ORIGIN") || entry.contains("${ORIGIN}")
}

/// Why a build is not trusted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TrustProblem {
    /// The file or directory is writable by users other than its owner.
    WritableByOthers {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file or directory belongs to another user (not root either).
    OwnedByOtherUser {
        /// The file or directory.
        path: PathBuf,
        /// Its owner's user id.
        owner: u32,
    },
    /// The build's SHA-256 is not one of [`Options::allow_digests`](crate::Options::allow_digests).
    DigestNotAllowed {
        /// The build's digest.
        sha256: Sha256Digest,
    },
    /// Keys are trusted but the build has no signature beside it.
    SignatureMissing {
        /// Where the signature was looked for.
        signature: PathBuf,
    },
    /// The signature file is unreadable or not a signature.
    SignatureUnreadable {
        /// The signature file.
        signature: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The signature does not verify with any trusted key: the build was
    /// changed after signing, or signed by another key.
    SignatureInvalid {
        /// The signature file.
        signature: PathBuf,
    },
    /// Digests or keys are pinned, and the build names directories to load
    /// its dependencies from (`DT_RUNPATH` or `DT_RPATH`): whatever is found
    /// there would load unchecked.
    LibrarySearchPath {
        /// `DT_RUNPATH` or `DT_RPATH`.
        tag: &'static str,
        /// The entry.
        entry: String,
    },
    /// Digests or keys are pinned, and the build needs a library
    /// (`DT_NEEDED`) that is not loaded in the process yet: it would load
    /// from disk unchecked.
    DependencyNotLoaded {
        /// The needed library, as the build names it.
        library: String,
    },
    /// A needed library is not loaded and is found nowhere the dynamic
    /// loader would look.
    DependencyNotFound {
        /// The needed library, as its requester names it.
        library: String,
        /// The dependency that needs it; `None` for the module itself.
        needed_by: Option<PathBuf>,
    },
    /// A library the module needs is not loaded and is found nowhere the
    /// dynamic loader would look, and the module's search path has a
    /// `$ORIGIN` entry: it cannot help, since the module is loaded from an
    /// in-memory file, whose `$ORIGIN` is `/proc/self/fd`, not the build's
    /// directory.
    OriginNotFound {
        /// The needed library.
        library: String,
        /// The `$ORIGIN` entry.
        entry: String,
    },
    /// A needed library the dynamic loader would load fails the checks the
    /// module passes (ownership and permissions).
    InsecureDependency {
        /// The needed library, as its requester names it.
        library: String,
        /// The dependency that needs it; `None` for the module itself.
        needed_by: Option<PathBuf>,
        /// What is wrong with it or its directory.
        problem: Box<TrustProblem>,
    },
    /// A needed library's file cannot be read well enough to check what it
    /// needs in turn.
    DependencyUnreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A search path entry uses a dynamic string token other than
    /// `$ORIGIN` (`$LIB`, `$PLATFORM`): where it leads is not checked.
    UnknownSearchPath {
        /// The entry.
        entry: String,
    },
}

/// " (needed by PATH)" for a dependency of a dependency.
fn needed_by_text(needed_by: &Option<PathBuf>) -> String {
    needed_by
        .as_ref()
        .map(|path| format!(" (needed by {})", path.display()))
        .unwrap_or_default()
}

impl fmt::Display for TrustProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WritableByOthers { path, mode } => write!(
                f,
                "{} is writable by other users (mode {:o}); make it writable by its owner only \
                 (chmod go-w), or allow it for development with Options::allow_insecure_files",
                path.display(),
                mode & 0o7777
            ),
            Self::OwnedByOtherUser { path, owner } => write!(
                f,
                "{} belongs to another user (uid {owner}); only files of the current user or \
                 root are loaded, unless Options::allow_insecure_files allows it for development",
                path.display()
            ),
            Self::DigestNotAllowed { sha256 } => {
                write!(f, "its SHA-256 {sha256} is not one of the allowed digests")
            }
            Self::SignatureMissing { signature } => write!(
                f,
                "it is not signed: no signature at {} (sign it with `hotswap sign`)",
                signature.display()
            ),
            Self::SignatureUnreadable { signature, detail } => {
                write!(
                    f,
                    "its signature {} is unreadable: {detail}",
                    signature.display()
                )
            }
            Self::SignatureInvalid { signature } => write!(
                f,
                "its signature {} does not verify with any trusted key: the library changed \
                 after it was signed, or another key signed it",
                signature.display()
            ),
            Self::LibrarySearchPath { tag, entry } if names_origin(entry) => write!(
                f,
                "its {tag} entry `{entry}` cannot work: `$ORIGIN` would be `/proc/self/fd` (the \
                 module is loaded from an in-memory file), not the build's directory, and with pinned digests or keys no \
                 dependency is loaded from disk; link the dependency into the host or preload it \
                 (LD_PRELOAD), and build the module without {tag}"
            ),
            Self::LibrarySearchPath { tag, entry } => write!(
                f,
                "it has a {tag} entry `{entry}`: with pinned digests or keys, dependencies are not \
                 loaded from disk, where nothing checks them; link the dependency into the host or \
                 preload it (LD_PRELOAD), and build the module without {tag}"
            ),
            Self::DependencyNotLoaded { library } => write!(
                f,
                "it needs `{library}`, which is not loaded in this process: with pinned digests or \
                 keys, dependencies are not loaded from disk, where nothing checks them; link \
                 `{library}` into the host or preload it (LD_PRELOAD)"
            ),
            Self::DependencyNotFound { library, needed_by } => write!(
                f,
                "its dependency `{library}`{} is not loaded and is not found where the dynamic \
                 loader looks (RPATH, LD_LIBRARY_PATH, RUNPATH, /etc/ld.so.conf, system \
                 directories); install it there or link it into the host",
                needed_by_text(needed_by)
            ),
            Self::OriginNotFound { library, entry } => write!(
                f,
                "its dependency `{library}` is not loaded and is not found where the dynamic \
                 loader looks, and its search path entry `{entry}` cannot help: `$ORIGIN` would \
                 be `/proc/self/fd` (the module is loaded from an in-memory file), not the build's \
                 directory; put \
                 `{library}` in a system or absolute RUNPATH directory, or link it into the host"
            ),
            Self::InsecureDependency {
                library,
                needed_by,
                problem,
            } => write!(
                f,
                "its dependency `{library}`{} would be loaded unchecked: {problem}",
                needed_by_text(needed_by)
            ),
            Self::DependencyUnreadable { path, detail } => write!(
                f,
                "its dependency {} cannot be checked: {detail}",
                path.display()
            ),
            Self::UnknownSearchPath { entry } => write!(
                f,
                "the library search path entry `{entry}` uses a token other than `$ORIGIN`, so \
                 where dependencies would load from is not checked; use absolute directories"
            ),
        }
    }
}

