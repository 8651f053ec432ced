//! `hotswap verify LIB --key NAME.pub`: does the signature beside LIB
//! verify, as `Options::trust_keys` would check it?

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use hotswap_runtime::trust::{self, PublicKey};

use crate::{read_library, signed_report, Failure, Report, NOT_LOADING};

const EXIT_CODES: &str = "\
Exit codes:
  0  the signature verifies with one of the keys
  1  it does not: the signature file is missing, unreadable or not a
     signature, or no key verifies it (the library changed after signing,
     or another key signed it); the reason is printed on stdout
  2  usage error, or LIB or a key file cannot be read or holds no public
     key: the error is printed on stderr";

/// Check the signature beside a library (LIB.sig) against trusted keys
///
/// The same check, with the same messages, as a host opened with
/// Options::trust_keys makes before it loads a build. Only the signature
/// is checked: a host also refuses files that other users can write or
/// that belong to another user, and builds Options::allow_digests does not
/// list.
#[derive(clap::Args)]
#[command(after_help = format!("{NOT_LOADING}\n\n{EXIT_CODES}"))]
pub(crate) struct Args {
    /// The library whose signature to check.
    #[arg(value_name = "LIB")]
    library: PathBuf,
    /// A trusted public key: a key file (NAME.pub of `hotswap keygen
    /// NAME`) or the key itself in hex. Can be given more than once: the
    /// signature must verify with one of them.
    #[arg(long = "key", value_name = "KEY", required = true)]
    keys: Vec<PathBuf>,
}

pub(crate) fn run(args: &Args) -> Result<Report, Failure> {
    let keys = args
        .keys
        .iter()
        .map(|key| public_key(key))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = read_library(&args.library)?;
    Ok(
        match trust::verify_signature(&args.library, &bytes, &keys) {
            Ok(key) => Report {
                text: signed_report(&args.library, "verified", &bytes, &key),
                refused: false,
            },
            Err(problem) => Report {
                text: format!("{}: not verified: {problem}\n", args.library.display()),
                refused: true,
            },
        },
    )
}

/// The public key in the key file `key`, or `key` itself in hex.
fn public_key(key: &Path) -> Result<PublicKey, Failure> {
    if key.extension().is_some_and(|extension| extension == "key") {
        return Err(Failure::from(format!(
            "{} is a secret key file: verify takes the public key, NAME.pub",
            key.display()
        )));
    }
    match std::fs::read_to_string(key) {
        Ok(text) => text
            .parse()
            .map_err(|error| Failure::from(format!("{}: {error}", key.display()))),
        Err(error) if error.kind() == ErrorKind::NotFound => key
            .to_str()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| {
                Failure::from(format!(
                    "--key {}: no such key file, and not a public key in hex either",
                    key.display()
                ))
            }),
        Err(error) => Err(Failure::io("read the key file", key, error)),
    }
}
