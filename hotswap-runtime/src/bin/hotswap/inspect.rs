//! `hotswap inspect LIB`: what a library's hot modules export.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use hotswap_runtime::inspect::{ModuleInfo, ModuleLibrary, UnreadableModule};
use hotswap_runtime::Error;
use serde::Serialize;

use crate::{indent_rest, Report, LOADING};

const EXIT_CODES: &str = "\
Exit codes:
  0  every module of LIB was read
  1  LIB has a module this hotswap cannot read (built by a hotswap-runtime
     with another module header version or abi_stable ABI); the reason is
     printed on stdout
  2  usage error, or LIB cannot be read, is not a loadable library or
     exports no hot module: the error is printed on stderr";

/// Show the hot modules of a library: functions, signatures, state, ABI
///
/// For every hot module LIB exports: its name, crate and version, every
/// exported function with its Rust signature and receiver (stateless,
/// &State or &mut State), whether it has setup and teardown entry points
/// (every module with state has both), the abi_stable ABI it was built
/// with and how it hands its state to the next version.
#[derive(clap::Args)]
#[command(after_help = format!("{LOADING}\n\n{EXIT_CODES}"))]
pub(crate) struct Args {
    /// The module library (a cdylib built from a `#[hot_module]` crate).
    #[arg(value_name = "LIB")]
    library: PathBuf,
    /// Print JSON instead of text: {"path", "modules": [...]}, each module
    /// with the fields of the text output, or {"symbol", "error"} for one
    /// that cannot be read.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &Args) -> Result<Report, Error> {
    let library = ModuleLibrary::open(&args.library)?;
    let text = if args.json {
        json(&library)
    } else {
        text(&library)
    };
    Ok(Report {
        text,
        refused: library.modules().iter().any(Result::is_err),
    })
}

fn text(library: &ModuleLibrary) -> String {
    let modules = library.modules();
    let mut out = format!(
        "{}: {} hot module{}\n",
        library.path().display(),
        modules.len(),
        if modules.len() == 1 { "" } else { "s" }
    );
    for module in modules {
        out.push('\n');
        match module {
            Ok(info) => describe(&mut out, info),
            Err(UnreadableModule { symbol, error, .. }) => {
                let _ = writeln!(
                    out,
                    "symbol {symbol}: cannot be read by this hotswap:\n  {}",
                    indent_rest(&error.to_string(), 2)
                );
            }
        }
    }
    out
}

fn describe(out: &mut String, info: &ModuleInfo) {
    let yes_no = |present| if present { "yes" } else { "no" };
    let _ = writeln!(
        out,
        "module `{}` (crate {} {})",
        info.module, info.crate_name, info.crate_version
    );
    let mut fields = vec![
        ("symbol", info.symbol.clone()),
        ("abi_stable", format!("ABI {}", info.abi_stable)),
        ("state handoff", info.handoff_format.clone()),
        ("setup", yes_no(info.setup).to_owned()),
        ("teardown", yes_no(info.teardown).to_owned()),
    ];
    if !info.uses.is_empty() {
        fields.push(("uses", info.uses.join(", ")));
    }
    if !info.services.is_empty() {
        fields.push(("services", info.services.join(", ")));
    }
    fields.push(("functions", info.functions.len().to_string()));
    for (name, value) in fields {
        let _ = writeln!(out, "  {name:<14} {value}");
    }
    for function in &info.functions {
        let _ = writeln!(
            out,
            "    {:<11} {}",
            function.receiver.to_string(),
            function.signature
        );
    }
}

/// One module in the JSON output.
#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Read(&'a ModuleInfo),
    Unreadable { symbol: &'a str, error: String },
}

fn json(library: &ModuleLibrary) -> String {
    #[derive(Serialize)]
    struct Document<'a> {
        path: &'a Path,
        modules: Vec<Entry<'a>>,
    }
    let modules = library
        .modules()
        .iter()
        .map(|module| match module {
            Ok(info) => Entry::Read(info),
            Err(UnreadableModule { symbol, error, .. }) => Entry::Unreadable {
                symbol,
                error: error.to_string(),
            },
        })
        .collect();
    let document = Document {
        path: library.path(),
        modules,
    };
    let mut text = serde_json::to_string_pretty(&document).expect("plain data serializes");
    text.push('\n');
    text
}
