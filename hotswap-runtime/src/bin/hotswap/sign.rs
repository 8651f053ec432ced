//! `hotswap sign LIB --key NAME.key`: the detached signature
//! `Options::trust_keys` checks, written beside the library.

use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hotswap_runtime::trust::{signature_path, SecretKey, Signature};

use crate::{read_library, signed_report, Failure, Report, NOT_LOADING};

const EXIT_CODES: &str = "\
Exit codes:
  0  LIB.sig was written
  2  usage error, LIB or the key file cannot be read, the key file is
     accessible by other users or holds no secret key, or LIB.sig cannot be
     written: the error is printed on stderr";

/// Sign a library: writes LIB.sig, which Options::trust_keys checks
///
/// Signs the library's bytes as they are now with the secret key of
/// `hotswap keygen`, and writes the signature in hex to LIB.sig (LIB with
/// .sig appended): first to a temporary file beside it, then renamed, so a
/// host watching LIB never reads half a signature. An older LIB.sig is
/// replaced. Sign the final file: any later change to LIB, stripping
/// included, makes the signature fail.
///
/// Like ssh with its keys, sign refuses a key file that other users can
/// access.
#[derive(clap::Args)]
#[command(after_help = format!("{NOT_LOADING}\n\n{EXIT_CODES}"))]
pub(crate) struct Args {
    /// The library to sign.
    #[arg(value_name = "LIB")]
    library: PathBuf,
    /// The secret key file (NAME.key of `hotswap keygen NAME`).
    #[arg(long, value_name = "NAME.key")]
    key: PathBuf,
}

pub(crate) fn run(args: &Args) -> Result<Report, Failure> {
    let secret = secret_key(&args.key)?;
    let bytes = read_library(&args.library)?;
    write_signature(&signature_path(&args.library), &secret.sign(&bytes))?;
    Ok(Report {
        text: signed_report(&args.library, "signed", &bytes, &secret.public_key()),
        refused: false,
    })
}

/// The secret key in the file at `path`, if only its owner can access it.
fn secret_key(path: &Path) -> Result<SecretKey, Failure> {
    if path.extension().is_some_and(|extension| extension == "pub") {
        return Err(Failure::from(format!(
            "{} is a public key file: sign takes the secret key file, NAME.key",
            path.display()
        )));
    }
    let read_error = |error| Failure::io("read the key file", path, error);
    let mut file = File::open(path).map_err(read_error)?;
    // The mode of the file opened, not of whatever is at the path by now.
    let mode = file.metadata().map_err(read_error)?.mode();
    if mode & 0o077 != 0 {
        return Err(Failure::from(format!(
            "{} is accessible by other users (mode {:o}): a secret key must be private; \
             make it so with `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        )));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(read_error)?;
    text.parse()
        .map_err(|error| Failure::from(format!("{}: {error}", path.display())))
}

/// Writes `signature` to `path` by renaming a complete file over it.
fn write_signature(path: &Path, signature: &Signature) -> Result<(), Failure> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let write_error = |error| Failure::io("write", path, error);
    let mut file = tempfile::Builder::new()
        .prefix(".hotswap-sign-")
        .permissions(Permissions::from_mode(0o644))
        .tempfile_in(directory)
        .map_err(write_error)?;
    writeln!(file, "{signature}")
        .and_then(|()| file.as_file().sync_all())
        .map_err(write_error)?;
    file.persist(path)
        .map_err(|error| write_error(error.error))?;
    Ok(())
}
