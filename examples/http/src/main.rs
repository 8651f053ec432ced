//! The HTTP example, unattended: builds both versions of the handler
//! module, serves version 1 with hyper on a loopback port, drives it from
//! keep-alive clients for 2 s without swaps and 5 s while the module is
//! swapped every 50 ms, checks every response, and prints the latency of
//! both phases.
//!
//! With `--serve`, it keeps serving afterwards: `curl
//! http://127.0.0.1:PORT/echo/hello`.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use hotswap_http::{Hot, Outcome, Swapper, Version, build_handlers, load, serve};
use hotswap_runtime::{Options, SwapMode};

const CLIENTS: usize = 4;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let keep_serving = std::env::args().skip(1).any(|arg| arg == "--serve");
    let dir = hotswap_scratch::workspace_root().join("target/hotswap-http");
    let (library, v1, v2) = (
        dir.join("serving/libhttp_handlers.so"),
        dir.join("builds/v1.so"),
        dir.join("builds/v2.so"),
    );
    println!("building both versions of the handlers ...");
    build_handlers(Version::V1, &v1)?;
    build_handlers(Version::V2, &v2)?;
    std::fs::create_dir_all(library.parent().expect("a parent"))?;
    std::fs::copy(&v1, &library)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Swapped by the swapper below, not by a watcher.
    let hot = Arc::new(Hot::open_with(
        &library,
        Options::new().swap_mode(SwapMode::Manual),
    )?);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(serve(hot.clone(), listener));
        println!("serving on http://{address}");

        let quiet = load(address, CLIENTS, Duration::from_secs(2)).await;
        report("without swaps", &quiet, None);
        let swapper = Swapper::start(hot.clone(), &library, [&v1, &v2], Duration::from_millis(50))?;
        let swapping = load(address, CLIENTS, Duration::from_secs(5)).await;
        let swaps = swapper.stop()?;
        report("while swapping", &swapping, Some(swaps));

        let failures: Vec<_> = quiet.failures.iter().chain(&swapping.failures).collect();
        if !failures.is_empty() {
            return Err(format!("{} requests failed, first: {}", failures.len(), failures[0]).into());
        }
        let answered = quiet.answered() + swapping.answered();
        println!(
            "{answered} requests answered, the module counted {} in its state, {} swaps, {} version(s) mapped",
            hot.get().requests(),
            hot.generation(),
            hot.mapped_versions()
        );
        if keep_serving {
            println!("serving on http://{address} until stopped");
            std::future::pending::<()>().await;
        }
        Ok::<_, Box<dyn Error + Send + Sync>>(())
    })
}

fn report(phase: &str, outcome: &Outcome, swaps: Option<u64>) {
    let swaps = swaps.map_or_else(String::new, |swaps| format!(", {swaps} swaps"));
    println!(
        "  {phase}: {} requests ({} by v1, {} by v2{swaps}), {} failed; latency p50 {:?}, p99 {:?}",
        outcome.answered(),
        outcome.by_version[0],
        outcome.by_version[1],
        outcome.failures.len(),
        outcome.percentile(50.0),
        outcome.percentile(99.0)
    );
}
