//! The service example under load: clients on persistent connections keep
//! sending requests while the handler module is swapped between its two
//! versions twenty times, and no request goes unanswered or is lost from
//! the handler's state.

use std::sync::Arc;
use std::thread;

use hotswap_runtime::{Options, SwapMode};
use hotswap_service::{build_handler, serve, Client, Hot, Server, Version};
use hotswap_tests::{AbortOnPanic, Progress, Stage};

const CLIENTS: u64 = 4;
const SWAPS: u64 = 20;
/// Requests each client sends after the last swap.
const TAIL: u64 = 50;
/// Sends requests on one connection until the last swap is done and `TAIL`
/// more after it, alternately `set clientN J` and `get clientN` (which must
/// find the J just set, so a cache lost in a swap fails here), checks each
/// reply, and returns how many replies came from version 1 and version 2.
fn client(id: u64, server: &Server, progress: &Progress) -> [u64; 2] {
    let _abort = AbortOnPanic(progress);
    let mut connection = Client::connect(server.local_addr()).expect("connect");
    let mut by_version = [0; 2];
    let mut after_last_swap = 0;
    for request in 0_u64.. {
        if after_last_swap == TAIL {
            break;
        }
        let (line, expected) = if request % 2 == 0 {
            (format!("set client{id} {request}"), "ok".to_owned())
        } else {
            (format!("get client{id}"), format!("found {}", request - 1))
        };
        let reply = connection
            .request(&line)
            .unwrap_or_else(|error| panic!("client {id}: request {line:?} failed: {error}"));
        let (version, body) = match reply.split_once(' ') {
            Some(("v1", body)) => (0, body),
            Some(("v2", body)) => (1, body),
            _ => panic!("client {id}: {reply:?} (to {line:?}) is from no known version"),
        };
        assert_eq!(body, expected, "client {id}: the reply to {line:?}");
        by_version[version] += 1;
        let (swapped_all, aborted) = progress.update(|counts| {
            counts.replies += 1;
            (counts.swaps == SWAPS, counts.aborted)
        });
        assert!(!aborted, "client {id}: stopping, another thread panicked");
        after_last_swap += u64::from(swapped_all);
    }
    let unasked = connection.finish().expect("close the connection");
    assert_eq!(unasked, "", "client {id}: replies nobody asked for");
    by_version
}

#[test]
fn a_service_swapped_twenty_times_under_load_answers_every_request() {
    let builds = tempfile::tempdir().unwrap();
    let (v1, v2) = (builds.path().join("v1.so"), builds.path().join("v2.so"));
    build_handler(Version::V1, &v1).expect("build version 1");
    build_handler(Version::V2, &v2).expect("build version 2");
    let stage = Stage::with_file(&v1);
    let hot = Arc::new(
        Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual))
            .expect("open version 1"),
    );
    let server = serve(hot.clone()).expect("start the server");
    let progress = Progress::default();

    let by_version = thread::scope(|scope| {
        let (server, progress) = (&server, &progress);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| scope.spawn(move || client(id, server, progress)))
            .collect();
        // Each swap waits until more than CLIENTS replies arrived after the
        // previous one returned. A client has at most one request in flight,
        // so at least one of those replies was computed after that swap and
        // before this one: every version swapped in serves some requests.
        let _abort = AbortOnPanic(progress);
        let mut replies_after_last_swap = 0;
        for swap in 1..=SWAPS {
            progress.wait_until("replies from the version last swapped in", |counts| {
                counts.replies > replies_after_last_swap + CLIENTS
            });
            stage.put_file(if swap % 2 == 1 { &v2 } else { &v1 });
            hot.reload().expect("swap under load");
            replies_after_last_swap = progress.update(|counts| {
                counts.swaps = swap;
                counts.replies
            });
        }
        clients
            .into_iter()
            .map(|client| client.join().expect("client"))
            .fold([0; 2], |[v1, v2], [c1, c2]| [v1 + c1, v2 + c2])
    });

    let replies = by_version[0] + by_version[1];
    assert_eq!(hot.generation(), SWAPS);
    assert!(
        by_version[0] > 0 && by_version[1] > 0,
        "both versions served: {by_version:?}"
    );
    assert_eq!(
        hot.get().requests(),
        replies,
        "the handler counted every request across {SWAPS} swaps"
    );
    println!("{replies} requests, {by_version:?} served by version 1 and 2");
}
