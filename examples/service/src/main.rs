//! The service example, unattended: builds version 1 of the handler module,
//! serves it on a loopback port and talks to it; builds version 2 while
//! serving, which the runtime notices and swaps in by itself; then talks to
//! it again over the same connection: the cache and the request count came
//! through the swap.
//!
//! With `--serve`, it keeps serving afterwards: connect with
//! `nc 127.0.0.1 PORT`.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hotswap_runtime::SwapEvent;
use hotswap_service::{Client, Hot, Version, build_handler, serve};

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let keep_serving = std::env::args().skip(1).any(|arg| arg == "--serve");
    // The runtime watches this path; builds are installed here.
    let library = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/hotswap-service/serving/libservice_handler.so");

    println!("building version 1 of the handler ...");
    build_handler(Version::V1, &library)?;
    let hot = Arc::new(Hot::open(&library)?);
    let server = serve(hot.clone())?;
    println!("serving on {}", server.local_addr());
    let mut client = Client::connect(server.local_addr())?;
    client.talk(&[
        "set greeting hello",
        "set colour blue",
        "get greeting",
        "stats",
    ])?;

    println!("building version 2 while serving ...");
    let events = hot.subscribe();
    build_handler(Version::V2, &library)?;
    // Nobody calls reload(): the runtime sees the new build and swaps.
    loop {
        match events.recv_timeout(Duration::from_secs(60))? {
            SwapEvent::Swapped { timings, .. } => {
                println!("swapped in version 2 ({timings:?})");
                break;
            }
            SwapEvent::Refused { error, .. } => return Err(error.into()),
            _ => continue,
        }
    }
    // Same connection, same cache: version 2 answers from version 1's state.
    client.talk(&["get greeting", "del colour", "get colour", "stats"])?;

    if keep_serving {
        println!("serving on {} until stopped", server.local_addr());
        loop {
            std::thread::park();
        }
    }
    client.talk(&["quit"])?;
    Ok(())
}
