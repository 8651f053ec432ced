//! `hotswap`: look inside hot module libraries, tell whether a new build
//! can replace an old one before a host tries, and make the keys and
//! signatures `Options::trust_keys` checks.
//!
//! Every subcommand is a module here with its `Args` (clap) and a `run`
//! that returns a [`Report`] or an error: `main` prints the one and maps
//! both to the exit code. A new subcommand is one more module and one more
//! [`Command`] variant.

mod check;
mod inspect;
mod keygen;
mod sha256;
mod sign;
mod verify;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hotswap_runtime::trust::{signature_path, PublicKey, Sha256Digest};

/// The exit codes of every command, as `--help` shows them; each command
/// lists what they mean for it.
const EXIT_CODES: &str = "\
Exit codes:
  0  ok: every module was read (inspect), NEW can replace OLD (check), the
     files were written (keygen, sign), the signature verifies (verify),
     the digests were printed (sha256)
  1  the answer is no: a module cannot be read (inspect), a host would
     refuse NEW (check), the signature is missing, malformed or does not
     verify (verify); the reason is printed on stdout
  2  usage error, or a file could not be read or written, or (inspect,
     check) is not a loadable library or exports no hot module, or (keygen)
     a key file exists already, or (sign) the secret key file is accessible
     by other users: the error is printed on stderr";

/// Loading a library runs code; every command that loads one says so.
const LOADING: &str = "\
Each library is read into a sealed in-memory file and loaded from there
(dlopen, RTLD_NOW | RTLD_LOCAL; nothing is written to disk) the way the
hotswap runtime loads it, so its initializers run: use this only on
libraries you trust. No module is set up and no module function is
called.";

/// The commands that only read a library's bytes say so too.
const NOT_LOADING: &str = "\
The library is only read, never loaded (no dlopen): none of its code runs.";

/// Inspect hot module libraries, check whether a new build can replace an
/// old one, and sign builds for Options::trust_keys.
#[derive(Parser)]
#[command(name = "hotswap", version, after_help = format!("\
inspect and check read each library into a sealed in-memory file and load
it from there (dlopen, RTLD_NOW | RTLD_LOCAL; nothing is written to disk)
the way the hotswap runtime loads it, so its initializers run: use them
only on libraries you trust. No module is set up and no module function is
called.

keygen, sign, verify and sha256 only read files: they never load a library
(no dlopen), so none of its code runs.

{EXIT_CODES}"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Check(check::Args),
    Keygen(keygen::Args),
    Sign(sign::Args),
    Verify(verify::Args),
    Sha256(sha256::Args),
}

/// What a command prints on stdout, and how it ends.
pub(crate) struct Report {
    text: String,
    /// Exit with 1: the command's answer is no (see [`EXIT_CODES`]).
    refused: bool,
}

/// Why a command could not do its work: printed on stderr, exit code 2.
#[derive(Debug)]
pub(crate) struct Failure(String);

impl Failure {
    /// `path` could not be `done` (read, written, ...) for `error`.
    pub(crate) fn io(done: &str, path: &Path, error: std::io::Error) -> Self {
        Self(format!("cannot {done} {}: {error}", path.display()))
    }
}

impl From<hotswap_runtime::Error> for Failure {
    fn from(error: hotswap_runtime::Error) -> Self {
        Self(error.to_string())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 2, `--help` and `--version` with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args).map_err(Failure::from),
        Command::Check(args) => check::run(args).map_err(Failure::from),
        Command::Keygen(args) => keygen::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Sha256(args) => sha256::run(args),
    };
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("hotswap: error: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = std::io::stdout().lock().write_all(report.text.as_bytes()) {
        eprintln!("hotswap: error: cannot write the output: {error}");
        return ExitCode::from(2);
    }
    ExitCode::from(u8::from(report.refused))
}

/// The bytes of the library at `path`, read, not loaded.
pub(crate) fn read_library(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|error| Failure::io("read", path, error))
}

/// What `sign` and `verify` say of a signed library: `verdict`, then the
/// signature file, the library's digest and the key that verifies it.
pub(crate) fn signed_report(
    library: &Path,
    verdict: &str,
    bytes: &[u8],
    key: &PublicKey,
) -> String {
    format!(
        "{}: {verdict}\n  signature   {}\n  sha256      {}\n  public key  {key}\n",
        library.display(),
        signature_path(library).display(),
        Sha256Digest::of(bytes),
    )
}

/// `path` with `suffix` appended to its file name (`release` → `release.key`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut path = path.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// `text`, with every line but the first indented by `by` spaces.
pub(crate) fn indent_rest(text: &str, by: usize) -> String {
    text.replace('\n', &format!("\n{:by$}", ""))
}
