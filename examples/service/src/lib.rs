//! A small line-protocol service on loopback whose request handling is a hot
//! module (`examples/service-module`): the server owns the sockets and
//! threads, the module owns every reply and the state behind them (a
//! request count and a key-value cache), and a new build of the module is
//! swapped in while connections stay open.
//!
//! [`serve`] starts a [`Server`] (`hotswap-line-server`) on loopback whose
//! every request line goes to the serving handler version
//! (`hot.get().handle(line)`). [`build_handler`] builds either version of
//! the module from source and installs it where a [`Hot`] watches.

#![warn(missing_docs)]

use std::error::Error;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use hotswap_scratch::ScratchCrate;

pub use hotswap_line_server::{Client, Server};

/// The handler module as the host sees it: open its library with
/// `Hot::open`, share it with [`serve`].
pub use service_handler::service::Hot;

/// Serves the line protocol on an ephemeral loopback port until the server
/// is dropped: each request line is passed to the handler version serving
/// at that moment and its reply written back. A panic in the handler
/// becomes an `error: ...` reply; the handler's state stays usable.
pub fn serve(hot: Arc<Hot>) -> io::Result<Server> {
    Server::start(move |line: &str| hot.get().handle(line))
}

/// A version of the handler module's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `examples/service-module/src/lib.rs`, what the host is compiled against.
    V1,
    /// `examples/service-module/next/lib.rs`: new reply tag, a new request,
    /// a new state field.
    V2,
}

/// Builds `version` of the handler module with cargo and installs the
/// library at `destination` atomically (written beside it, then renamed
/// over it), the way a [`Hot`] watching that path expects a new build.
///
/// The build runs in a scratch copy of `examples/service-module` (under
/// `target/hotswap-service`) with the chosen source as its `src/lib.rs`,
/// into `target/hotswap-modules`, whose dependency builds it shares with
/// the test suite's module builds. Calls in one process take turns.
pub fn build_handler(
    version: Version,
    destination: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let root = hotswap_scratch::workspace_root();
    let source = root.join("examples/service-module").join(match version {
        Version::V1 => "src/lib.rs",
        Version::V2 => "next/lib.rs",
    });
    let built = ScratchCrate::new(
        root.join("target/hotswap-service/service-handler"),
        "service-handler",
    )
    .source(std::fs::read_to_string(source)?)
    // A tenth of the size: quicker to copy, hash and load on each swap.
    .manifest_extra("\n[profile.dev.package.service-handler]\nstrip = \"debuginfo\"\n")
    .build(&root.join("target/hotswap-modules"))?;
    hotswap_scratch::install(&built, destination)?;
    Ok(())
}
