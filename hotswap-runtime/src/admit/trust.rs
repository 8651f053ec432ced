//! Which builds may be loaded: file ownership and permissions, allowed
//! digests, ed25519 signatures, and the libraries a build needs.
//!
//! Loading a library runs its code: its initializers run inside `dlopen`,
//! before any check of the module header could. So everything here is
//! decided on the bytes read from disk, **before** they are loaded, and
//! exactly those bytes are loaded, from a sealed in-memory file: replacing
//! the original file after the check changes nothing.
//!
//! - **Permissions** (on by default): the library file and its directory
//!   (and, for a symbolic link, the directory of the file it leads to) must
//!   belong to the current user (or root) and must not be writable by
//!   others, or anyone who can write there could plant code in the process.
//!   Group-writable is refused too, unless the group is the user's private
//!   group (gid equal to the uid, as distributions that default to umask 002
//!   set users up). [`Options::allow_insecure_files`](crate::Options::allow_insecure_files)
//!   turns this off for development.
//! - **Digests**: [`Options::allow_digests`](crate::Options::allow_digests)
//!   pins the exact builds that may load, by SHA-256.
//! - **Signatures**: with [`Options::trust_keys`](crate::Options::trust_keys),
//!   a build loads only if the detached signature beside it
//!   ([`signature_path`]) verifies with one of the keys. The `hotswap`
//!   command line makes keys (`keygen`), signs (`sign`) and checks
//!   (`verify`); [`SecretKey`] does the same from code.
//!
//! - **Dependencies**: `dlopen` loads, and runs the initializers of, every
//!   library the module needs (`DT_NEEDED`, read from the program headers
//!   as `ld.so` reads them) that is not in the process yet. With pinned
//!   digests or keys, a build with a `DT_RUNPATH` or `DT_RPATH`
//!   ([`TrustProblem::LibrarySearchPath`]) or needing a library not
//!   already loaded ([`TrustProblem::DependencyNotLoaded`]) is refused:
//!   link such a library into the host or preload it. "Loaded" means what
//!   `ld.so` reuses: `dlopen(name, RTLD_NOLOAD)` finds it and its
//!   `DT_SONAME` (or path) is the needed name; it is held open until the
//!   module is loaded. Under the default permission checks, a library that
//!   is not loaded is looked for as `ld.so` would (`DT_RPATH` of the
//!   requesting libraries and the executable when there is no `DT_RUNPATH`,
//!   `LD_LIBRARY_PATH` as the process started with it, `DT_RUNPATH`, the
//!   directories `/etc/ld.so.conf` lists, the system directories, each
//!   with its `glibc-hwcaps` subdirectories), and every file found there,
//!   its directory, and what it needs in turn must pass the same
//!   permission checks ([`TrustProblem::InsecureDependency`],
//!   [`TrustProblem::DependencyNotFound`]). A `$ORIGIN` entry of the
//!   module's search path stands for `/proc/self/fd` (the module is loaded
//!   from an in-memory file), not the build's directory, so it finds nothing ([`TrustProblem::OriginNotFound`]).
//!   Not modelled: the ld.so cache file itself (its directories are taken
//!   from `/etc/ld.so.conf`), the legacy hardware-capability
//!   subdirectories of glibc before 2.37, `$LIB` and `$PLATFORM` (refused,
//!   [`TrustProblem::UnknownSearchPath`]), secure-execution mode,
//!   `dlmopen` namespaces, and a host that calls `dlopen` from a shared
//!   library rather than its executable.
//! - **The module**: the build's dynamic symbol table must define the
//!   header symbol of the module the host expects, or it is refused
//!   ([`Error::NotAModule`](crate::Error::NotAModule)) before loading: a
//!   build of another module, even one signed by a trusted key, runs none of
//!   its code. A signature covers the bytes only.
//!
//! What this cannot protect against: a trusted secret key that leaked (its
//! signatures verify), code already running in the process, and anyone who
//! can act as the current user (they can write the process's memory too).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::admit::candidate::Candidate;
use crate::admit::deps::{admit_from_disk, Dynamic};
use crate::ffi::in_process::{pin_loaded, Pin};
use crate::admit::files::permissions;
pub use crate::admit::files::signature_path;
pub use crate::problem::TrustProblem;
use crate::digest::parse_hex;
pub use crate::digest::{KeyFormatError, Sha256Digest};

/// What a signature signs: this prefix, then the SHA-256 of the library.
/// The prefix keeps these signatures from meaning anything elsewhere.
const SIGNED_PREFIX: &[u8] = b"hotswap signed module v1\0";

/// A public key whose signatures are trusted, written as 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Whether `signature` is this key's signature of `library`.
    pub fn verifies(&self, library: &[u8], signature: &Signature) -> bool {
        self.0
            .verify_strict(&signed_message(library), &signature.0)
            .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl FromStr for PublicKey {
    type Err = KeyFormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex(text.trim(), "ed25519 public key")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyFormatError("not a valid ed25519 public key".into()))
    }
}

/// A signing key, written as 64 hex digits. Keep it out of the process
/// that loads modules: that one only needs [`PublicKey`]s.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> std::io::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key that verifies this key's signatures.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs the library `library` (its whole content).
    pub fn sign(&self, library: &[u8]) -> Signature {
        Signature(self.0.sign(&signed_message(library)))
    }

    /// The key as 64 hex digits, for a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretKey")
            .field(&self.public_key())
            .finish()
    }
}

impl FromStr for SecretKey {
    type Err = KeyFormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_hex(text.trim(), "ed25519 secret key")
            .map(|bytes| Self(SigningKey::from_bytes(&bytes)))
    }
}

/// A detached signature, written as 128 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.to_bytes()))
    }
}

impl FromStr for Signature {
    type Err = KeyFormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_hex::<64>(text.trim(), "ed25519 signature")
            .map(|bytes| Self(ed25519_dalek::Signature::from_bytes(&bytes)))
    }
}


fn signed_message(library: &[u8]) -> Vec<u8> {
    let mut message = SIGNED_PREFIX.to_vec();
    message.extend_from_slice(&Sha256::digest(library));
    message
}

/// Whether the detached signature beside a library ([`signature_path`])
/// verifies with one of `keys`: the check [`Options::trust_keys`](crate::Options::trust_keys)
/// makes before a build is loaded, with the same [`TrustProblem`]s. Returns
/// the key that verifies it; with no keys, nothing does.
///
/// `library` is the library's path, `bytes` its content as read: the
/// signature is checked against these bytes, not against the file as it may
/// be by now. Nothing is loaded.
pub fn verify_signature(
    library: &Path,
    bytes: &[u8],
    keys: &[PublicKey],
) -> Result<PublicKey, TrustProblem> {
    check_signature(
        library,
        bytes,
        &std::fs::read(signature_path(library)),
        keys,
    )
}

/// [`verify_signature`] on a signature file already read: `signature` is
/// what reading [`signature_path`]`(library)` gave.
fn check_signature(
    library: &Path,
    bytes: &[u8],
    signature: &std::io::Result<Vec<u8>>,
    keys: &[PublicKey],
) -> Result<PublicKey, TrustProblem> {
    let path = signature_path(library);
    let text = match signature {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(TrustProblem::SignatureMissing { signature: path })
        }
        Err(error) => {
            return Err(TrustProblem::SignatureUnreadable {
                signature: path,
                detail: error.to_string(),
            })
        }
    };
    let signature = std::str::from_utf8(text)
        .map_err(|error| error.to_string())
        .and_then(|text| text.parse::<Signature>().map_err(|error| error.to_string()))
        .map_err(|detail| TrustProblem::SignatureUnreadable {
            signature: path.clone(),
            detail,
        })?;
    // Hashed once, whatever the number of keys.
    let message = signed_message(bytes);
    keys.iter()
        .find(|key| key.0.verify_strict(&message, &signature.0).is_ok())
        .copied()
        .ok_or(TrustProblem::SignatureInvalid { signature: path })
}

/// What a `Hot` requires of a build before it is loaded.
#[derive(Clone, Debug)]
pub(crate) struct TrustPolicy {
    pub check_permissions: bool,
    pub allowed_digests: Option<HashSet<Sha256Digest>>,
    pub keys: Vec<PublicKey>,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            check_permissions: true,
            allowed_digests: None,
            keys: Vec::new(),
        }
    }
}

impl TrustPolicy {
    /// Whether this build may be loaded, with `dynamic` its dynamic
    /// section. Returns the libraries it needs that are already loaded,
    /// held until the build is loaded.
    pub fn check(&self, build: &Candidate, dynamic: &Dynamic) -> Result<Vec<Pin>, TrustProblem> {
        if self.check_permissions {
            permissions(&build.path, &build.file)?;
            for (directory, metadata) in &build.directories {
                permissions(directory, metadata)?;
            }
        }
        if let Some(allowed) = &self.allowed_digests {
            let sha256 = Sha256Digest::of(&build.bytes);
            if !allowed.contains(&sha256) {
                return Err(TrustProblem::DigestNotAllowed { sha256 });
            }
        }
        if !self.keys.is_empty() {
            check_signature(&build.path, &build.bytes, &build.signature, &self.keys)?;
        }
        self.check_dependencies(dynamic)
    }

    /// Whether what a build with `dynamic` needs may be loaded with it:
    /// with pinned digests or keys, only what is already loaded; otherwise,
    /// unless permission checks are off, what passes them where `ld.so`
    /// would find it. Returns the needed libraries already loaded, pinned.
    fn check_dependencies(&self, dynamic: &Dynamic) -> Result<Vec<Pin>, TrustProblem> {
        if self.allowed_digests.is_some() || !self.keys.is_empty() {
            // Only the module's bytes are pinned: nothing may come from disk.
            if let Some((tag, entry)) = dynamic.search_path().next() {
                return Err(TrustProblem::LibrarySearchPath {
                    tag,
                    entry: entry.to_owned(),
                });
            }
            dynamic
                .needed
                .iter()
                .map(|library| {
                    pin_loaded(library).ok_or_else(|| TrustProblem::DependencyNotLoaded {
                        library: library.clone(),
                    })
                })
                .collect()
        } else if self.check_permissions {
            admit_from_disk(dynamic)
        } else {
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_digests_and_signatures_round_trip_as_hex() {
        let secret = SecretKey::generate().unwrap();
        let again: SecretKey = secret.to_hex().parse().unwrap();
        assert_eq!(again.public_key(), secret.public_key());
        let public: PublicKey = secret.public_key().to_string().parse().unwrap();
        let signature = secret.sign(b"library");
        let parsed: Signature = format!("{signature}\n").parse().unwrap();
        assert!(public.verifies(b"library", &parsed));
        assert!(!public.verifies(b"librarz", &parsed));
        let digest = Sha256Digest::of(b"abc");
        assert_eq!(
            digest.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            format!("sha256:{digest}").parse::<Sha256Digest>(),
            Ok(digest)
        );
        let error = "abc".parse::<PublicKey>().unwrap_err();
        assert!(
            error.to_string().contains("64 hex digits expected"),
            "{error}"
        );
    }

    #[test]
    fn another_key_does_not_verify() {
        let signer = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let signature = signer.sign(b"library");
        assert!(!other.public_key().verifies(b"library", &signature));
    }

    #[test]
    fn verify_signature_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let library = dir.path().join("libmodule.so");
        let signer = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let keys = [other.public_key(), signer.public_key()];
        let verify = |bytes: &[u8]| verify_signature(&library, bytes, &keys);

        let problem = verify(b"build").unwrap_err();
        assert!(
            matches!(&problem, TrustProblem::SignatureMissing { signature } if *signature == signature_path(&library)),
            "{problem:?}"
        );
        std::fs::write(signature_path(&library), "not hex\n").unwrap();
        let problem = verify(b"build").unwrap_err();
        assert!(
            matches!(&problem, TrustProblem::SignatureUnreadable { detail, .. } if detail.contains("128 hex digits expected")),
            "{problem:?}"
        );
        std::fs::write(
            signature_path(&library),
            format!("{}\n", signer.sign(b"build")),
        )
        .unwrap();
        assert_eq!(verify(b"build").unwrap(), signer.public_key());
        let problem = verify(b"builds").unwrap_err();
        assert!(
            matches!(problem, TrustProblem::SignatureInvalid { .. }),
            "{problem:?}"
        );
        let problem = verify_signature(&library, b"build", &[]).unwrap_err();
        assert!(
            matches!(problem, TrustProblem::SignatureInvalid { .. }),
            "{problem:?}"
        );
    }

    #[test]
    fn pinned_builds_need_only_loaded_libraries_and_no_search_path() {
        let pinned = TrustPolicy {
            keys: vec![SecretKey::generate().unwrap().public_key()],
            ..TrustPolicy::default()
        };
        let needs = |needed: &[&str]| Dynamic {
            needed: needed.iter().map(|name| (*name).to_owned()).collect(),
            ..Dynamic::default()
        };
        // This test binary links libc: loaded, and pinned while admitted.
        let pins = pinned.check_dependencies(&needs(&["libc.so.6"])).unwrap();
        assert_eq!(pins.len(), 1);
        let problem = pinned
            .check_dependencies(&needs(&["libc.so.6", "libhotswap-nowhere.so.1"]))
            .unwrap_err();
        assert!(
            matches!(&problem, TrustProblem::DependencyNotLoaded { library } if library == "libhotswap-nowhere.so.1"),
            "{problem:?}"
        );
        assert!(problem.to_string().contains("preload it"), "{problem}");
        let with_rpath = Dynamic {
            rpath: vec!["/opt/lib".to_owned()],
            ..needs(&["libc.so.6"])
        };
        let problem = pinned.check_dependencies(&with_rpath).unwrap_err();
        assert!(
            matches!(&problem, TrustProblem::LibrarySearchPath { tag: "DT_RPATH", entry } if entry == "/opt/lib"),
            "{problem:?}"
        );
        // Without pinning or permission checks, nothing is looked at.
        let relaxed = TrustPolicy {
            check_permissions: false,
            ..TrustPolicy::default()
        };
        assert!(relaxed.check_dependencies(&with_rpath).is_ok());
        let problem = TrustPolicy::default()
            .check_dependencies(&needs(&["libhotswap-nowhere.so.1"]))
            .unwrap_err();
        assert!(
            matches!(
                &problem,
                TrustProblem::DependencyNotFound {
                    needed_by: None,
                    ..
                }
            ),
            "{problem:?}"
        );
    }
}
