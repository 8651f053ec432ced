//! `hotswap`: look inside hot module libraries, and tell whether a new
//! build can replace an old one, before a host tries.
//!
//! Every subcommand is a module here with its `Args` (clap) and a `run`
//! that returns a [`Report`] or an error: `main` prints the one and maps
//! both to the exit code. A new subcommand is one more module and one more
//! [`Command`] variant.

mod check;
mod inspect;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit codes of every command, as `--help` shows them; each command
/// lists what they mean for it.
const EXIT_CODES: &str = "\
Exit codes:
  0  ok: the library was read; NEW can replace OLD
  1  incompatible: the reason is printed on stdout
  2  usage error, or a file could not be read, is not a loadable library or
     exports no hot module: the error is printed on stderr";

/// Loading a library runs code; every command that loads one says so.
const LOADING: &str = "\
Each library is copied to a private file and loaded (dlopen, RTLD_NOW |
RTLD_LOCAL) the way the hotswap runtime loads it, so its initializers run:
use this only on libraries you trust. No module is set up and no module
function is called.";

/// Inspect hot module libraries and check whether a new build can replace
/// an old one.
#[derive(Parser)]
#[command(name = "hotswap", version, after_help = format!("{LOADING}\n\n{EXIT_CODES}"))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inspect(inspect::Args),
    Check(check::Args),
}

/// What a command prints on stdout, and how it ends.
pub(crate) struct Report {
    text: String,
    incompatible: bool,
}

fn main() -> ExitCode {
    // Usage errors exit with 2, `--help` and `--version` with 0.
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Inspect(args) => inspect::run(args),
        Command::Check(args) => check::run(args),
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
    ExitCode::from(u8::from(report.incompatible))
}

/// `text`, with every line but the first indented by `by` spaces.
pub(crate) fn indent_rest(text: &str, by: usize) -> String {
    text.replace('\n', &format!("\n{:by$}", ""))
}
