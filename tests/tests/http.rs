//! The HTTP example under load: keep-alive clients send requests for 5 s
//! while the async handler module is swapped more than fifty times between
//! two versions that answer differently and keep different states. No
//! request fails or is dropped, every response comes from a version that
//! was serving and is right for that version, and the state counted every
//! request. Prints the latency with and without swaps.

use std::sync::Arc;
use std::time::Duration;

use hotswap_http::{build_handlers, load, serve, Hot, Outcome, Swapper, Version};
use hotswap_runtime::{Options, SwapMode};

const CLIENTS: usize = 4;
const SWAPPING: Duration = Duration::from_millis(5_500);
const SWAP_EVERY: Duration = Duration::from_millis(40);

fn summary(outcome: &Outcome) -> String {
    format!(
        "{} requests ({:?} by v1, v2), p50 {:?}, p99 {:?}",
        outcome.answered(),
        outcome.by_version,
        outcome.percentile(50.0),
        outcome.percentile(99.0)
    )
}

#[test]
fn an_http_service_swapped_fifty_times_under_keep_alive_load_fails_no_request() {
    let builds = tempfile::tempdir().unwrap();
    let (v1, v2) = (builds.path().join("v1.so"), builds.path().join("v2.so"));
    build_handlers(Version::V1, &v1).expect("build version 1");
    build_handlers(Version::V2, &v2).expect("build version 2");
    let serving = tempfile::tempdir().unwrap();
    let library = serving.path().join("libhttp_handlers.so");
    std::fs::copy(&v1, &library).unwrap();
    let hot = Arc::new(
        Hot::open_with(&library, Options::new().swap_mode(SwapMode::Manual)).expect("open"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (quiet, swapping, swaps) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(hot.clone(), listener));
        let quiet = load(address, CLIENTS, Duration::from_millis(1_500)).await;
        let swapper = Swapper::start(hot.clone(), &library, [&v1, &v2], SWAP_EVERY).unwrap();
        let swapping = load(address, CLIENTS, SWAPPING).await;
        let swaps = swapper.stop().expect("every swap under load succeeds");
        (quiet, swapping, swaps)
    });
    println!("without swaps: {}", summary(&quiet));
    println!("while swapping ({swaps} swaps): {}", summary(&swapping));

    for outcome in [&quiet, &swapping] {
        assert!(
            outcome.failures.is_empty(),
            "{} failed: {:#?}",
            outcome.failures.len(),
            &outcome.failures[..outcome.failures.len().min(5)]
        );
    }
    assert!(swaps >= 50, "only {swaps} swaps in {SWAPPING:?}");
    assert_eq!(hot.generation(), swaps);
    assert!(
        swapping.by_version[0] > 0 && swapping.by_version[1] > 0,
        "both versions served: {:?}",
        swapping.by_version
    );
    // Every request was counted once, in a state that went through every
    // swap: the numbers the handlers gave out are 1..=N, each once.
    let mut numbers: Vec<u64> = quiet
        .numbers
        .iter()
        .chain(&swapping.numbers)
        .copied()
        .collect();
    numbers.sort_unstable();
    let answered = quiet.answered() + swapping.answered();
    assert_eq!(numbers, (1..=answered).collect::<Vec<_>>());
    assert_eq!(hot.get().requests(), answered);
    // No version is left behind by the calls that were in flight (each
    // unloads as its last call finishes; waited for a bounded while).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hot.mapped_versions() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} versions stay mapped",
            hot.mapped_versions()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
