//! `hotswap keygen NAME`: a new signing key pair, `NAME.key` and `NAME.pub`.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use hotswap_runtime::trust::SecretKey;

use crate::{with_suffix, Failure, Report};

const EXIT_CODES: &str = "\
Exit codes:
  0  NAME.key and NAME.pub were written
  2  usage error, NAME.key or NAME.pub exists already, or a file could not
     be written: the error is printed on stderr";

/// Make a key pair for signing builds: NAME.key (secret) and NAME.pub
///
/// NAME.key holds the secret key in hex, in a file created readable and
/// writable by you only (mode 600): whoever can read it can sign builds
/// your hosts will load, so keep it off those hosts. NAME.pub holds the
/// public key in hex, for Options::trust_keys and `hotswap verify --key`.
/// An existing file is never overwritten.
#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("where").required(true)),
    after_help = EXIT_CODES
)]
pub(crate) struct Args {
    /// Where to write the keys: NAME.key and NAME.pub (NAME may include a
    /// directory).
    #[arg(value_name = "NAME", group = "where")]
    name: Option<PathBuf>,
    /// The same as NAME.
    #[arg(long, value_name = "NAME", group = "where")]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: &Args) -> Result<Report, Failure> {
    let name = args
        .name
        .as_ref()
        .or(args.out.as_ref())
        .expect("clap requires NAME or --out");
    // `keygen release.key` means the pair `release.key` + `release.pub`.
    let name = match name.extension().and_then(|extension| extension.to_str()) {
        Some("key" | "pub") => name.with_extension(""),
        _ => name.clone(),
    };
    let name = &name;
    let (secret_path, public_path) = (with_suffix(name, ".key"), with_suffix(name, ".pub"));
    let secret = SecretKey::generate()
        .map_err(|error| Failure::from(format!("cannot make a secret key: {error}")))?;
    let public = secret.public_key();
    create(&secret_path, 0o600, &secret.to_hex())?;
    if let Err(failure) = create(&public_path, 0o644, &public.to_string()) {
        // Created just above, with create_new: nobody else's file.
        let _ = std::fs::remove_file(&secret_path);
        return Err(failure);
    }
    Ok(Report {
        text: format!(
            "new key pair\n  secret key  {} (mode 600: whoever can read it can sign builds)\n  public key  {}: {public}\n",
            secret_path.display(),
            public_path.display(),
        ),
        refused: false,
    })
}

/// Writes `text` and a newline to a new file at `path`, created with
/// `mode` (less the umask) so it is never more open than that, not even
/// for a moment. Never replaces a file.
fn create(path: &Path, mode: u32, text: &str) -> Result<(), Failure> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| match error.kind() {
            ErrorKind::AlreadyExists => Failure::from(format!(
                "{} exists already: refusing to overwrite it; choose another NAME",
                path.display()
            )),
            _ => Failure::io("create", path, error),
        })?;
    if let Err(error) = writeln!(file, "{text}").and_then(|()| file.sync_all()) {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Failure::io("write", path, error));
    }
    Ok(())
}
