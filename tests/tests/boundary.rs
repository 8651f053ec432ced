//! The boundary holds in every case a module author will try: values that
//! would outlive their version, threads left running, teardowns that fail,
//! `panic = "abort"`, panicking panic payloads, and calls back into the
//! host. What could crash or hang the process runs in a child process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::counter::{Callback, Hot};
use hotswap_runtime::{Error, Options, SwapEvent, SwapMode};
use hotswap_tests::{in_child, library, panic_text, Fixture, Stage};

const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

fn open(stage: &Stage) -> Hot {
    Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).expect("open")
}

#[test]
fn a_returned_value_holding_module_memory_is_refused_at_open() {
    let error = greeter::leaky::Hot::open_with(
        library(Fixture::Greeter),
        Options::new().swap_mode(SwapMode::Manual),
    )
    .expect_err("`Reply` holds an `RString`");
    match &error {
        Error::Escapes {
            module: "leaky",
            function: "reply",
            problem,
        } => assert!(problem.contains("Reply.text"), "{problem}"),
        other => panic!("{other:?}"),
    }
    assert!(
        error.to_string().contains("return owned plain data"),
        "{error}"
    );
    // The other modules of the same library are plain data and open.
    let greeting = greeter::greeting::Hot::open_with(
        library(Fixture::Greeter),
        Options::new().swap_mode(SwapMode::Manual),
    )
    .unwrap();
    assert_eq!(greeting.get().greet("x"), "greetings, x");
}

#[test]
fn returned_strings_stay_valid_after_their_version_unloads() {
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage);
    let events = hot.subscribe();
    let (greeting, words) = {
        let guard = hot.get();
        (guard.greet("world"), guard.words("a b c".to_owned()))
    };
    stage.put(Fixture::V2);
    hot.reload().unwrap();
    loop {
        match events.recv_timeout(Duration::from_secs(10)) {
            Ok(SwapEvent::Unloaded { generation: 0, .. }) => break,
            Ok(_) => continue,
            Err(_) => panic!("version 1 was not unloaded"),
        }
    }
    // Copied into the host's memory at the call: still readable and
    // droppable with the library that made them gone.
    assert_eq!(greeting, "hello, world");
    assert_eq!(words, ["a", "b", "c"]);
}

#[test]
fn a_teardown_whose_state_cannot_be_encoded_keeps_the_state() {
    let stage = Stage::with(Fixture::EncodeFails);
    let hot = open(&stage);
    assert_eq!(hot.get().increment(41), 41);
    stage.put(Fixture::V2);
    let error = hot.reload().expect_err("41 cannot be encoded");
    assert!(
        matches!(
            error,
            Error::Teardown {
                panicked: false,
                state_kept: true,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("41 cannot be encoded"),
        "{error}"
    );
    assert!(
        error.to_string().contains("keeps serving with its state"),
        "{error}"
    );
    assert_eq!(
        hot.last_error().map(|e| e.to_string()),
        Some(error.to_string())
    );
    // Not reset: the same version serves the same count.
    assert_eq!((hot.generation(), hot.get().version()), (0, 1));
    assert_eq!(hot.get().count(), 41);
    assert_eq!(hot.get().increment(1), 42);
    hot.reload().expect("42 encodes");
    assert_eq!((hot.generation(), hot.get().version()), (1, 2));
    assert_eq!(hot.get().count(), 42);
}

#[test]
fn a_build_without_setup_is_refused_rather_than_dropping_the_state() {
    let stage = Stage::with(Fixture::Greeter);
    let hot =
        greeter::shelf::Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual))
            .unwrap();
    stage.put(Fixture::GreeterShelfWithoutSetup);
    let error = hot
        .reload()
        .expect_err("the shelf's state would be dropped");
    assert!(
        matches!(&error, Error::Incompatible { detail, .. } if detail.contains("no `setup`")),
        "{error:?}"
    );
    assert_eq!(hot.generation(), 0);
    assert_eq!(hot.get().label(), "shelf");
}

#[test]
fn a_module_built_with_panic_abort_is_refused() {
    let abort = library(Fixture::PanicAbort);
    let stage = Stage::with(Fixture::V1);
    let hot = open(&stage);
    hot.get().increment(3);
    stage.put_file(&abort);
    let error = hot.reload().expect_err("panic = abort");
    assert!(
        error.to_string().contains("panic = \"abort\""),
        "names the setting: {error}"
    );
    assert_eq!((hot.generation(), hot.get().count()), (0, 3));
    let opened = Hot::open_with(&abort, Options::new().swap_mode(SwapMode::Manual));
    assert!(
        matches!(opened, Err(Error::Incompatible { .. })),
        "{opened:?}"
    );
}

#[test]
fn a_panic_payload_whose_drop_panics_does_not_abort_the_host() {
    let name = "a_panic_payload_whose_drop_panics_does_not_abort_the_host";
    let Some(child) = in_child(name, &[Fixture::PayloadDropPanics], CHILD_TIMEOUT) else {
        let stage = Stage::with(Fixture::PayloadDropPanics);
        let hot = open(&stage);
        hot.get().increment(2);
        let payload =
            catch_unwind(AssertUnwindSafe(|| hot.get().fail("boom"))).expect_err("fail panics");
        assert_eq!(
            panic_text(payload),
            "module panicked with a non-string payload"
        );
        assert_eq!(hot.get().increment(1), 3, "module and state still usable");
        println!("HOST SURVIVED");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(child.output.contains("HOST SURVIVED"), "{}", child.output);
}

/// The `Hot` a callback reaches, through its context.
fn hot_of(ctx: usize) -> &'static Hot {
    // SAFETY: the tests pass a pointer to an `Arc<Hot>` that outlives the
    // call the callback runs in.
    unsafe { &*(ctx as *const Hot) }
}

extern "C" fn nested_calls(ctx: usize) -> u64 {
    let hot = hot_of(ctx);
    // Another thread asks for a swap, which waits for this call's read
    // lock: a nested `&State` call must not queue behind it.
    // SAFETY: as in `hot_of`; the Arc is alive until after the join below.
    let shared = unsafe { Arc::from_raw(ctx as *const Hot) };
    let for_swap = shared.clone();
    std::mem::forget(shared);
    let swapper = std::thread::spawn(move || for_swap.reload());
    // Long enough for it to load the build and queue for the state lock.
    std::thread::sleep(Duration::from_secs(1));
    let reentrant = hot.reload().expect_err("a swap from inside a call");
    assert!(
        matches!(reentrant, Error::Reentrant { module: "counter" }),
        "{reentrant:?}"
    );
    let count = hot.get().count();
    SWAPPER.with(|slot| *slot.borrow_mut() = Some(swapper));
    count
}

thread_local! {
    static SWAPPER: std::cell::RefCell<Option<std::thread::JoinHandle<Result<(), Error>>>> =
        const { std::cell::RefCell::new(None) };
}

#[test]
fn a_callback_into_the_host_is_served_while_a_swap_waits() {
    let name = "a_callback_into_the_host_is_served_while_a_swap_waits";
    let Some(child) = in_child(name, &[Fixture::V1, Fixture::V2], CHILD_TIMEOUT) else {
        let stage = Stage::with(Fixture::V1);
        let hot = Arc::new(open(&stage));
        hot.get().increment(5);
        stage.put(Fixture::V2);
        let ctx = Arc::as_ptr(&hot) as usize;
        let seen = hot.get().visit(Callback {
            call: nested_calls,
            ctx,
        });
        assert_eq!(seen, 10, "the nested call saw the count of 5");
        let swapper = SWAPPER
            .with(|slot| slot.borrow_mut().take())
            .expect("swapper");
        swapper
            .join()
            .unwrap()
            .expect("the waiting swap went through");
        assert_eq!(
            (hot.generation(), hot.get().version(), hot.get().count()),
            (1, 2, 5)
        );
        println!("SERVED");
        return;
    };
    assert!(child.status.is_some(), "hung: {}", child.output);
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(child.output.contains("SERVED"), "{}", child.output);
}

extern "C" fn exclusive_call(ctx: usize) -> u64 {
    hot_of(ctx).get().increment(1)
}

#[test]
fn an_exclusive_call_from_inside_a_call_panics_saying_why() {
    let name = "an_exclusive_call_from_inside_a_call_panics_saying_why";
    let Some(child) = in_child(name, &[Fixture::V1, Fixture::V2], CHILD_TIMEOUT) else {
        let stage = Stage::with(Fixture::V1);
        let hot = Arc::new(open(&stage));
        let ctx = Arc::as_ptr(&hot) as usize;
        // The panic starts in an `extern "C"` callback, which cannot unwind:
        // the process aborts with the message, rather than hanging.
        hot.get().visit(Callback {
            call: exclusive_call,
            ctx,
        });
        println!("NOT REACHED");
        return;
    };
    assert!(child.status.is_some(), "hung: {}", child.output);
    assert_eq!(child.signal(), Some(6), "aborted: {child:?}");
    assert!(
        child
            .output
            .contains("re-entrant call of `increment` (needs `&mut State`) on module `counter`"),
        "{}",
        child.output
    );
}

/// std treats key 0 as "no key yet": given 0, it makes a second key and
/// deletes 0 itself, which the runtime, deleting a retired version's keys,
/// would then delete again, possibly from under another version (std then
/// aborts, `key as usize != KEY_SENTVAL`). So no module is handed key 0. In
/// a child: a fresh process, where key 0 is free.
#[test]
fn no_module_is_handed_thread_key_zero() {
    let name = "no_module_is_handed_thread_key_zero";
    let Some(child) = in_child(name, &[Fixture::V1], CHILD_TIMEOUT) else {
        let stage = Stage::with(Fixture::V1);
        let hot = open(&stage);
        let keys: Vec<u32> = (0..4).map(|_| hot.get().new_thread_key()).collect();
        println!("keys {keys:?}");
        assert!(!keys.contains(&0), "a module was handed key 0: {keys:?}");
        return;
    };
    assert_eq!(
        child.status.and_then(|status| status.code()),
        Some(0),
        "{}",
        child.output
    );
    assert!(child.output.contains("keys ["), "{}", child.output);
}

#[test]
fn a_thread_left_running_keeps_its_version_mapped_and_is_reported() {
    let name = "a_thread_left_running_keeps_its_version_mapped_and_is_reported";
    let Some(child) = in_child(name, &[Fixture::V1, Fixture::V2], CHILD_TIMEOUT) else {
        let stage = Stage::with(Fixture::V1);
        let hot = open(&stage);
        let events = hot.subscribe();
        hot.get().increment(7);
        let started = Instant::now();
        // Started with pthread_create, as C code would; runs version 1's
        // code for 1.5 s, well past the swap.
        hot.get().start_unjoined_thread(1500);
        stage.put(Fixture::V2);
        hot.reload().unwrap();
        assert_eq!((hot.get().version(), hot.get().count()), (2, 7));
        let mut reported = false;
        loop {
            match events.recv_timeout(Duration::from_secs(10)) {
                Ok(SwapEvent::ThreadsOutlived {
                    generation: 0,
                    threads,
                    ..
                }) => {
                    assert_eq!(threads, 1);
                    assert!(matches!(
                        hot.last_error(),
                        Some(Error::ThreadsOutlived { generation: 0, .. })
                    ));
                    reported = true;
                }
                Ok(SwapEvent::Unloaded { generation: 0, .. }) => {
                    assert!(reported, "reported before it was unloaded");
                    assert!(
                        started.elapsed() >= Duration::from_millis(1400),
                        "unloaded only once its thread had finished"
                    );
                    break;
                }
                Ok(_) => continue,
                Err(_) => panic!("version 1 was never unloaded"),
            }
        }
        // Still serving, with a thread of its own, across another swap.
        hot.get().start_unjoined_thread(10);
        stage.put(Fixture::V1);
        hot.reload().unwrap();
        assert_eq!(hot.get().count(), 7);
        println!("KEPT AND REPORTED");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(
        child.output.contains("KEPT AND REPORTED"),
        "{}",
        child.output
    );
}
