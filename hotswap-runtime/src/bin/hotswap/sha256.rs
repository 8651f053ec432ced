//! `hotswap sha256 LIB...`: the digests `Options::allow_digests` pins.

use std::fmt::Write;
use std::path::PathBuf;

use hotswap_runtime::trust::Sha256Digest;

use crate::{read_library, Failure, Report, NOT_LOADING};

const EXIT_CODES: &str = "\
Exit codes:
  0  every digest was printed
  2  usage error, or a LIB cannot be read: the error is printed on stderr";

/// Print the SHA-256 of libraries, for Options::allow_digests
///
/// One line a library: the digest in hex, two spaces, the path (the format
/// of sha256sum). Sha256Digest parses the digest, with or without a
/// `sha256:` prefix.
#[derive(clap::Args)]
#[command(after_help = format!("{NOT_LOADING}\n\n{EXIT_CODES}"))]
pub(crate) struct Args {
    /// The libraries.
    #[arg(value_name = "LIB", required = true)]
    libraries: Vec<PathBuf>,
}

pub(crate) fn run(args: &Args) -> Result<Report, Failure> {
    let mut text = String::new();
    for library in &args.libraries {
        let digest = Sha256Digest::of(&read_library(library)?);
        let _ = writeln!(text, "{digest}  {}", library.display());
    }
    Ok(Report {
        text,
        refused: false,
    })
}
