//! `hotswap check OLD NEW`: would a host built against OLD accept NEW?

use std::fmt::Write;
use std::path::PathBuf;

use hotswap_runtime::inspect::{self, ModuleLibrary};
use hotswap_runtime::Error;

use crate::{indent_rest, Report, LOADING};

const EXIT_CODES: &str = "\
Exit codes:
  0  a host built against OLD accepts NEW
  1  it would refuse NEW; the reason, as reload() words it, is printed on
     stdout
  2  usage error, or OLD or NEW cannot be read, is not a loadable library or
     exports no hot module, or a module of OLD cannot be read by this
     hotswap: the error is printed on stderr";

/// Tell whether a host built against OLD would accept NEW in its place
///
/// Runs the checks `reload()` runs, with the same messages, taking OLD's
/// exports for what the host was compiled against. For every module of
/// OLD: NEW exports it, with the same module header version, a compatible
/// abi_stable ABI and the same state handoff format, and every function of
/// OLD is in NEW, needs no more access to the state, and has argument and
/// return types whose abi_stable layouts match. Functions and modules only
/// NEW has are fine.
///
/// What only a real reload can tell: whether NEW's setup takes the state
/// OLD's teardown hands over (check runs neither).
#[derive(clap::Args)]
#[command(after_help = format!("{LOADING}\n\n{EXIT_CODES}"))]
pub(crate) struct Args {
    /// The library the host was built against (or is serving).
    #[arg(value_name = "OLD")]
    old: PathBuf,
    /// The new build.
    #[arg(value_name = "NEW")]
    new: PathBuf,
}

pub(crate) fn run(args: &Args) -> Result<Report, Error> {
    let old = ModuleLibrary::open(&args.old)?;
    let new = ModuleLibrary::open(&args.new)?;
    let checks = inspect::check(&old, &new)?;
    let mut text = format!(
        "OLD {}\nNEW {}\n\n",
        old.path().display(),
        new.path().display()
    );
    for check in &checks {
        let _ = write!(
            text,
            "module `{}` (crate {}): ",
            check.module, check.crate_name
        );
        let _ = match &check.result {
            Ok(compatible) => {
                let checked = match compatible.checked {
                    1 => "1 function checked".to_owned(),
                    count => format!("{count} functions checked"),
                };
                let added = if compatible.added.is_empty() {
                    String::new()
                } else {
                    format!("; added: {}", compatible.added.join(", "))
                };
                writeln!(text, "compatible ({checked}{added})")
            }
            Err(error) => writeln!(
                text,
                "incompatible\n  {}",
                indent_rest(&error.to_string(), 2)
            ),
        };
    }
    let old_symbols: Vec<&str> = old
        .modules()
        .iter()
        .filter_map(|module| module.as_ref().ok())
        .map(|info| info.symbol.as_str())
        .collect();
    for info in new
        .modules()
        .iter()
        .filter_map(|module| module.as_ref().ok())
    {
        if !old_symbols.contains(&info.symbol.as_str()) {
            let _ = writeln!(
                text,
                "module `{}` (crate {}): only in NEW",
                info.module, info.crate_name
            );
        }
    }
    let incompatible = checks.iter().any(|check| check.result.is_err());
    text.push_str(if incompatible {
        "\nincompatible: a host built against OLD would refuse NEW\n"
    } else {
        "\ncompatible: a host built against OLD accepts NEW\n"
    });
    Ok(Report {
        text,
        refused: incompatible,
    })
}
