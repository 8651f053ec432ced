//! `async fn` in a hot module: awaited by the host on its tokio runtime,
//! with the module's timers and tasks on that runtime too; an in-flight
//! call finishes on the version it started on, which stays loaded until
//! then; a cancelled call and a retired version's tasks let it go. What
//! could crash on an unloaded version runs in a child process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hotswap_runtime::{Options, SwapMode};
use hotswap_tests::{build_variant, in_child, panic_text, Stage};
use waiter::waiter::Hot;

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

fn build(name: &str, edit: Option<(&str, &str)>) -> PathBuf {
    build_variant("waiter", "waiter", name, edit, hotswap_scratch::SERDE)
}

fn v1() -> &'static Path {
    static V1: OnceLock<PathBuf> = OnceLock::new();
    V1.get_or_init(|| build("v1", None))
}

fn v2() -> &'static Path {
    static V2: OnceLock<PathBuf> = OnceLock::new();
    V2.get_or_init(|| {
        build(
            "v2",
            Some(("format!(\"v1: {question}\")", "format!(\"v2: {question}\")")),
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn open(stage: &Stage) -> Hot {
    Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).expect("open")
}

/// Waits (a bounded while) until `done` holds.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn async_functions_run_on_the_hosts_runtime() {
    let stage = Stage::with_file(v1());
    let hot = open(&stage);
    runtime().block_on(async {
        // Module timers are the host's: no "no reactor running".
        let started = Instant::now();
        assert_eq!(hot.get().answer(30, "hello".to_owned()).await, "v1: hello");
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(hot.get().yields(5).await, 5);
        // Many at once, on two worker threads.
        let calls: Vec<_> = (0..200)
            .map(|i| tokio::spawn(hot.get().answer(i % 7, format!("q{i}"))))
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.expect("no panic"), format!("v1: q{i}"));
        }
        // A panic after an await comes back as a panic, with its message.
        let failed = tokio::spawn(hot.get().fails(5))
            .await
            .expect_err("it panics");
        assert_eq!(panic_text(failed.into_panic()), "failed after 5 ms");
    });
    // The module and its state stay usable.
    assert_eq!(hot.get().count(), 1);
}

#[test]
fn module_code_does_tcp_io_on_the_hosts_runtime() {
    let stage = Stage::with_file(v1());
    let hot = open(&stage);
    runtime().block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A peer that answers one request in upper case, then closes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let peer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 64];
            let read = socket.read(&mut request).await.unwrap();
            let reply = String::from_utf8_lossy(&request[..read]).to_uppercase();
            socket.write_all(reply.as_bytes()).await.unwrap();
        });
        let reply = hot
            .get()
            .exchange(address.clone(), "ping from v1".to_owned())
            .await;
        assert_eq!(reply, Ok("PING FROM V1".to_owned()));
        peer.await.unwrap();
        // The peer is gone: the module gets the host's error as a value.
        let refused = hot
            .get()
            .exchange(address.clone(), "again".to_owned())
            .await;
        let error = refused.expect_err("nobody listens any more");
        assert!(error.contains(&format!("connect to {address}")), "{error}");
    });
}

#[test]
fn an_in_flight_call_finishes_on_the_version_it_started_on() {
    let name = "an_in_flight_call_finishes_on_the_version_it_started_on";
    let (v1, v2) = (v1(), v2());
    let Some(child) = in_child(name, &[], CHILD_TIMEOUT) else {
        let stage = Stage::with_file(v1);
        let hot = open(&stage);
        hot.get().count();
        runtime().block_on(async {
            let first = hot.serving_image();
            let slow = tokio::spawn(hot.get().answer(300, "slow".to_owned()));
            tokio::time::sleep(Duration::from_millis(50)).await;
            stage.put_file(v2);
            hot.reload().expect("swap while a call is in flight");
            // New calls go to the new version; the state came through.
            assert_eq!(hot.get().answer(0, "fast".to_owned()).await, "v2: fast");
            assert_eq!(hot.get().count(), 2);
            // The old version stays loaded for the call in flight...
            assert_eq!(hot.mapped_versions(), 2);
            assert!(first.is_mapped());
            // ...which finishes on it.
            assert_eq!(slow.await.expect("no panic"), "v1: slow");
            eventually("the old version unloading", || hot.mapped_versions() == 1);
            assert!(!first.is_mapped());
        });
        println!("FINISHED ON ITS VERSION");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(
        child.output.contains("FINISHED ON ITS VERSION"),
        "{}",
        child.output
    );
}

#[test]
fn cancelled_calls_and_a_retired_versions_tasks_let_it_unload() {
    let name = "cancelled_calls_and_a_retired_versions_tasks_let_it_unload";
    let (v1, v2) = (v1(), v2());
    let Some(child) = in_child(name, &[], CHILD_TIMEOUT) else {
        let stage = Stage::with_file(v1);
        let hot = open(&stage);
        runtime().block_on(async {
            let first = hot.serving_image();
            // A call waiting on a module timer, dropped where it waits.
            let waiting = tokio::spawn(hot.get().answer(60_000, "never".to_owned()));
            // A task of version 1 that never ends by itself, and one whose
            // drop (when it is cancelled) spawns another such task.
            hot.get().start_ticker(1);
            hot.get().start_respawning_ticker(1);
            // Calls whose module future polls the host's timer with a waker
            // the module made: the timer holds it, counted, and gives it
            // back; none is left held once they are done.
            let own_wakers: Vec<_> = (0..20)
                .map(|i| tokio::spawn(hot.get().sleep_with_own_waker(i % 5)))
                .collect();
            for (i, call) in own_wakers.into_iter().enumerate() {
                assert_eq!(call.await.expect("no panic"), (i % 5) as u64);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            waiting.abort();
            assert!(waiting.await.expect_err("aborted").is_cancelled());
            stage.put_file(v2);
            hot.reload().expect("swap");
            // Retiring version 1 cancels its ticker; once the ticker's
            // future (module code) is dropped, version 1 unloads.
            // (The count of mapped versions goes down just after the
            // image leaves the address space: both are waited for.)
            eventually("version 1 unloading", || {
                !first.is_mapped() && hot.mapped_versions() == 1
            });
            // Swapped under many calls in flight, each answered by one of
            // the versions, and none left running afterwards.
            let calls: Vec<_> = (0..100)
                .map(|i| tokio::spawn(hot.get().answer(i % 20, format!("q{i}"))))
                .collect();
            for round in 0..6 {
                stage.put_file(if round % 2 == 0 { v1 } else { v2 });
                hot.reload().expect("swap under calls");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            for (i, call) in calls.into_iter().enumerate() {
                let answer = call.await.expect("no panic");
                assert!(
                    answer == format!("v1: q{i}") || answer == format!("v2: q{i}"),
                    "{answer}"
                );
            }
            eventually("the retired versions unloading", || {
                hot.mapped_versions() == 1
            });
        });
        println!("ALL UNLOADED");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(child.output.contains("ALL UNLOADED"), "{}", child.output);
}
