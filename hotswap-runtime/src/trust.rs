//! Which builds may be loaded: file ownership and permissions, allowed
//! digests, and ed25519 signatures.
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
//! What this cannot protect against: a trusted secret key that leaked (its
//! signatures verify), code already running in the process, and anyone who
//! can act as the current user (they can write the process's memory too).

use std::collections::HashSet;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::swap::Build;

/// What a signature signs: this prefix, then the SHA-256 of the library.
/// The prefix keeps these signatures from meaning anything elsewhere.
const SIGNED_PREFIX: &[u8] = b"hotswap signed module v1\0";

/// The detached signature of `library`: the same path with `.sig` appended
/// (`libcounter.so` → `libcounter.so.sig`).
pub fn signature_path(library: &Path) -> PathBuf {
    let mut path = library.as_os_str().to_owned();
    path.push(".sig");
    PathBuf::from(path)
}

/// A SHA-256 digest, written as 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The digest of the file at `path`.
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        std::fs::read(path).map(|bytes| Self::of(&bytes))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl FromStr for Sha256Digest {
    type Err = KeyFormatError;

    /// 64 hex digits, optionally prefixed `sha256:`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        parse_hex(
            text.strip_prefix("sha256:").unwrap_or(text),
            "SHA-256 digest",
        )
        .map(Self)
    }
}

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

/// A key, digest or signature that is not what it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFormatError(String);

fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], KeyFormatError> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).map_err(|error| {
        KeyFormatError(format!(
            "not an {what} ({} hex digits expected): {error}",
            2 * N
        ))
    })?;
    Ok(bytes)
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
        }
    }
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
    /// Whether this build may be loaded.
    pub fn check(&self, build: &Build) -> Result<(), TrustProblem> {
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
        Ok(())
    }
}

/// The file or directory belongs to the current user or root and only its
/// owner may write it.
fn permissions(path: &Path, metadata: &Metadata) -> Result<(), TrustProblem> {
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
}
