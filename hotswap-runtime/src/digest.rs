//! The SHA-256 digest of a build, and reading hex-written keys and digests.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

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

/// A key, digest or signature that is not what it should be.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFormatError(pub(crate) String);

pub(crate) fn parse_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], KeyFormatError> {
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).map_err(|error| {
        KeyFormatError(format!(
            "not an {what} ({} hex digits expected): {error}",
            2 * N
        ))
    })?;
    Ok(bytes)
}
