//! One process, one machine, one run: the same `add(a, b)` called through a
//! raw `extern "C"` function pointer, through hot-lib-reloader 0.8 and
//! through hotswap; then stateful calls, swaps and the state handoff.
//! Prints every figure and the ratios the project's targets are stated in.
//!
//! `cargo run --release -p hotswap-bench`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use bench_module::bench::Hot;
use bench_module::relay::Hot as Relay;
use hotswap_bench::{build, target_dir, Stage};
use hotswap_runtime::trust::{signature_path, SecretKey};
use hotswap_runtime::{Options, Registry, SwapEvent, SwapMode, SwapTimings};

#[hot_lib_reloader::hot_module(dylib = "bench_dylib", lib_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/hotswap-bench/release"))]
mod hot_lib {
    hot_functions_from_file!("examples/bench-dylib/src/lib.rs");
}

/// Calls per round: fewer in a debug build, which runs them ~10x slower.
const CALLS: u64 = if cfg!(debug_assertions) {
    2_000_000
} else {
    20_000_000
};
const ROUNDS: usize = 7;

/// Nanoseconds per call over [`ROUNDS`] rounds: the spread is printed
/// beside the median, because these figures move with the machine.
#[derive(Clone, Copy)]
struct Figure {
    min: f64,
    median: f64,
    max: f64,
}

impl Figure {
    fn of(mut rounds: Vec<f64>) -> Self {
        rounds.sort_by(f64::total_cmp);
        Self {
            min: rounds[0],
            median: rounds[rounds.len() / 2],
            max: rounds[rounds.len() - 1],
        }
    }
}

/// Nanoseconds per call of `calls` calls of `body`, for each of [`ROUNDS`]
/// rounds.
fn rounds(calls: u64, mut body: impl FnMut(u64) -> u64) -> Vec<f64> {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            let mut acc = 0;
            for _ in 0..calls {
                acc = body(black_box(acc));
            }
            black_box(acc);
            started.elapsed().as_nanos() as f64 / calls as f64
        })
        .collect()
}

fn per_call(calls: u64, body: impl FnMut(u64) -> u64) -> Figure {
    Figure::of(rounds(calls, body))
}

/// Per-call nanoseconds when `threads` threads run `body` at once (each
/// round's figure is the mean over the threads).
fn per_call_threads<F: Fn(u64) -> u64 + Sync>(threads: usize, calls: u64, body: F) -> Figure {
    let barrier = Barrier::new(threads);
    let per_thread: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    rounds(calls, &body)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap())
            .collect()
    });
    Figure::of(
        (0..ROUNDS)
            .map(|round| per_thread.iter().map(|r| r[round]).sum::<f64>() / threads as f64)
            .collect(),
    )
}

/// `get()` + one stateless call, not inlined into the loop: what
/// `objdump -d` shows as the whole cost of a call (see the performance
/// docs).
#[inline(never)]
fn get_and_add(hot: &Hot, acc: u64) -> u64 {
    hot.get().add(acc, 1)
}

/// `get()` + one `&mut State` call, not inlined into the loop.
#[inline(never)]
fn get_and_bump(hot: &Hot) -> u64 {
    hot.get().bump()
}

/// The host's own `async fn` doing what `add_async` does: the baseline an
/// async call through the boundary is measured against.
#[inline(never)]
async fn add_direct(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// Nanoseconds per call of `calls` awaited calls of `body`, for each of
/// [`ROUNDS`] rounds, on a current-thread tokio runtime.
fn async_per_call<F: std::future::Future<Output = u64>>(
    calls: u64,
    mut body: impl FnMut(u64) -> F,
) -> Figure {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    Figure::of(runtime.block_on(async {
        let mut rounds = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let mut acc = 0;
            for _ in 0..calls {
                acc = body(black_box(acc)).await;
            }
            black_box(acc);
            rounds.push(started.elapsed().as_nanos() as f64 / calls as f64);
        }
        rounds
    }))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    // The module is built in the host's profile: a debug host with a
    // debug module is what `cargo run` gives users. hot-lib-reloader's
    // library is always the release build (its `lib_dir` is fixed at
    // compile time); its per-call cost is the host-side lock and lookup.
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("building the benchmark libraries ({profile} host, {profile} module) ...");
    let module_lib = build("bench-module", !cfg!(debug_assertions));
    let baseline_lib = build("bench-dylib", true);
    assert_eq!(
        baseline_lib.parent(),
        Some(target_dir().join("release").as_path())
    );

    // SAFETY: our own benchmark library; `add_c` has exactly this signature.
    let raw_library = unsafe { libloading::Library::new(&baseline_lib) }.expect("load baseline");
    let raw: extern "C" fn(u64, u64) -> u64 = *unsafe { raw_library.get(b"add_c") }.expect("add_c");

    let stage = Stage::with(&module_lib);
    let hot =
        Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).expect("open");

    if std::env::var_os("HOTSWAP_BENCH_PROFILE_GET").is_some() {
        // Only `get()` + call, for `perf record`.
        let figure = per_call(CALLS * 5, |acc| get_and_add(&hot, acc));
        println!("get() + call: {:.2} ns", figure.median);
        let figure = per_call(CALLS * 5, |acc| {
            drop(black_box(hot.get()));
            acc + 1
        });
        println!("get() and drop, no call: {:.2} ns", figure.median);
        return;
    }
    println!("\ncalls ({CALLS} per round, {ROUNDS} rounds: min / median / max ns per call):");
    // What a locked read-modify-write costs here: the unit the targets'
    // ratios hide, so they can be read on another machine.
    let atomic = AtomicU64::new(0);
    let rmw = per_call(CALLS, |acc| atomic.fetch_add(acc & 1, Ordering::Relaxed));
    let raw_ns = per_call(CALLS, |acc| raw(acc, 1));
    let guard = hot.get();
    let held_ns = per_call(CALLS, |acc| guard.add(acc, 1));
    drop(guard);
    let get_ns = per_call(CALLS, |acc| get_and_add(&hot, acc));
    let hlr_ns = per_call(CALLS / 10, |acc| hot_lib::add(acc, 1));
    let get_2t = per_call_threads(2, CALLS, |acc| hot.get().add(acc, 1));
    let hlr_2t = per_call_threads(2, CALLS / 10, |acc| hot_lib::add(acc, 1));
    let mutex = Mutex::new(0u64);
    let mutex_ns = per_call(CALLS, |acc| {
        let mut value = mutex.lock().unwrap();
        *value = raw(*value, 1);
        acc ^ *value
    });
    // A module's state lives behind a pointer its `setup` returned: this
    // baseline pays the same extra dependent load.
    let boxed = Mutex::new(Box::new(0u64));
    let boxed_ns = per_call(CALLS, |acc| {
        let mut value = boxed.lock().unwrap();
        **value = raw(**value, 1);
        acc ^ **value
    });
    let guard = hot.get();
    let held_stateful_ns = per_call(CALLS, |acc| acc ^ guard.bump());
    drop(guard);
    let stateful_ns = per_call(CALLS, |acc| acc ^ get_and_bump(&hot));
    let direct_async_ns = async_per_call(CALLS / 10, |acc| add_direct(acc, 1));
    let async_ns = async_per_call(CALLS / 10, |acc| hot.get().add_async(acc, 1));

    // One module calling another: `relay` calls `bench` through its link,
    // both opened in one registry.
    let modules = Registry::new();
    let manual = || Options::new().swap_mode(SwapMode::Manual);
    modules
        .open::<Hot>(stage.path(), manual())
        .expect("open bench in a registry");
    let relay = modules
        .open::<Relay>(stage.path(), manual())
        .expect("open relay");
    let here_ns = per_call(CALLS, |acc| relay.get().add_here(acc, 1));
    let linked_ns = per_call(CALLS, |acc| relay.get().add_linked(acc, 1));
    let linked_stateful_ns = per_call(CALLS, |acc| acc ^ relay.get().bump_linked());
    let row = |name: &str, figure: Figure| {
        println!(
            "  {name:<46} {:>7.2} / {:>7.2} / {:>7.2}",
            figure.min, figure.median, figure.max
        )
    };
    row("one atomic read-modify-write (fetch_add)", rmw);
    row("uncontended Mutex + raw call", mutex_ns);
    row("uncontended Mutex<Box<u64>> + raw call", boxed_ns);
    row("raw extern \"C\" fn pointer", raw_ns);
    row("hotswap, held guard", held_ns);
    row("hotswap, get() + call", get_ns);
    row("hot-lib-reloader 0.8", hlr_ns);
    row("hotswap, get() + call, 2 threads (per call)", get_2t);
    row("hot-lib-reloader 0.8, 2 threads (per call)", hlr_2t);
    row("hotswap, held guard, stateful call", held_stateful_ns);
    row("hotswap, get() + stateful call", stateful_ns);
    row("direct .await of a host async fn", direct_async_ns);
    row("hotswap, get() + async fn call .await", async_ns);
    row("relay: get() + call, add in relay", here_ns);
    row("relay: get() + call, add through a HotLink", linked_ns);
    row(
        "relay: get() + call, bump through a HotLink",
        linked_stateful_ns,
    );

    println!(
        "\nswaps of a small module ({} KiB):",
        std::fs::metadata(&module_lib).unwrap().len() / 1024
    );
    let events = hot.subscribe();
    let bytes = std::fs::read(&module_lib).unwrap();
    let mut returned = Vec::new();
    let mut timings = Vec::new();
    for round in 0..51u8 {
        // Different bytes each time (a trailing byte the loader ignores),
        // written and renamed like a build; `reload` takes it from there.
        let mut build = bytes.clone();
        build.push(round);
        stage.put(&build);
        let started = Instant::now();
        hot.reload().expect("swap");
        returned.push(started.elapsed());
        if let Some(SwapEvent::Swapped { timings: swap, .. }) = events
            .try_iter()
            .find(|e| matches!(e, SwapEvent::Swapped { .. }))
        {
            timings.push(swap);
        }
    }
    let phase = |pick: fn(&SwapTimings) -> Duration| median(timings.iter().map(pick).collect());
    let (swap, held) = (phase(|t| t.total), phase(|t| t.critical_section));
    println!("  file ready to new version serving           {swap:>10.2?} (median of 51)");
    println!(
        "    read {:.2?} + admit {:.2?} + load {:.2?} + check {:.2?} + critical section {:.2?}",
        phase(|t| t.read),
        phase(|t| t.admit),
        phase(|t| t.load),
        phase(|t| t.check),
        held
    );
    println!("  of which callers were held                   {held:>10.2?}");
    println!(
        "  reload() returned (old version unloaded too) {:>10.2?}",
        median(returned)
    );

    // The same, with a signature to verify (SHA-256 of the build + ed25519).
    let key = SecretKey::generate().expect("a key");
    let put_signed = |build: &[u8]| {
        std::fs::write(signature_path(&stage.path()), key.sign(build).to_string()).unwrap();
        stage.put(build);
    };
    put_signed(&bytes);
    let signed = Hot::open_with(
        stage.path(),
        Options::new()
            .swap_mode(SwapMode::Manual)
            .trust_keys([key.public_key()]),
    )
    .expect("open signed");
    let mut signed_totals = Vec::new();
    for round in 0..51u8 {
        let mut build = bytes.clone();
        build.extend_from_slice(&[0x5A, round]);
        put_signed(&build);
        let started = Instant::now();
        signed.reload().expect("signed swap");
        signed_totals.push(started.elapsed());
    }
    drop(signed);
    std::fs::remove_file(signature_path(&stage.path())).unwrap();
    let signed_swap = median(signed_totals);
    println!("  reload() of a signed build, signature checked {signed_swap:>9.2?} (median of 51)");

    let watched = Hot::open(stage.path()).expect("open watched");
    let watched_events = watched.subscribe();
    let mut noticed = Vec::new();
    for round in 0..21u8 {
        let mut build = bytes.clone();
        build.extend_from_slice(&[0xAA, round]);
        let started = Instant::now();
        stage.put(&build);
        loop {
            match watched_events
                .recv_timeout(Duration::from_secs(10))
                .expect("a swap")
            {
                SwapEvent::Swapped { .. } => break,
                SwapEvent::Refused { error, .. } => panic!("{error}"),
                _ => {}
            }
        }
        noticed.push(started.elapsed());
    }
    let picked_up = median(noticed);
    println!("  renamed build to serving, background watcher {picked_up:>10.2?} (median of 21)");
    drop(watched);

    println!("\nstate handoff (teardown -> MessagePack -> setup, inside the critical section):");
    for megabytes in [1u64, 100] {
        hot.get().fill(megabytes << 20);
        let mut build = bytes.clone();
        build.extend_from_slice(b"handoff");
        build.push(megabytes as u8);
        stage.put(&build);
        let _ = events.try_iter().count();
        hot.reload().expect("swap with a large state");
        assert_eq!(hot.get().data_len(), (megabytes << 20) / 8);
        let held = events
            .try_iter()
            .find_map(|event| match event {
                SwapEvent::Swapped { timings, .. } => Some(timings.critical_section),
                _ => None,
            })
            .expect("swapped");
        let throughput = megabytes as f64 / held.as_secs_f64();
        println!("  {megabytes:>3} MiB state: {held:>10.2?}  ({throughput:.0} MiB/s)");
    }

    println!("\nratios of medians (targets in parentheses; baselines above):");
    let ratio =
        |name: &str, value: f64, target: &str| println!("  {name:<44} {value:>6.2}x  ({target})");
    ratio(
        "held guard / raw pointer",
        held_ns.median / raw_ns.median,
        "<= 1.5x",
    );
    ratio(
        "get()+call / raw pointer",
        get_ns.median / raw_ns.median,
        "<= 3x",
    );
    ratio(
        "hot-lib-reloader / get()+call",
        hlr_ns.median / get_ns.median,
        ">= 20x",
    );
    ratio(
        "get()+call: 2 threads / 1 thread",
        get_2t.median / get_ns.median,
        "<= 1.1x",
    );
    ratio(
        "get()+stateful call / (mutex + raw call)",
        stateful_ns.median / mutex_ns.median,
        "<= 1.2x",
    );
    ratio(
        "get()+stateful call / (mutex on a Box + raw)",
        stateful_ns.median / boxed_ns.median,
        "state behind a pointer",
    );
    ratio(
        "get()+call / one atomic RMW",
        get_ns.median / rmw.median,
        "no RMW in get()",
    );
    println!(
        "  an async call adds (hotswap - direct .await) {:>7.2} ns  (lease, FFI future, waker crossing)",
        async_ns.median - direct_async_ns.median
    );
    println!(
        "  a HotLink call adds (linked - here)        {:>7.2} ns  (stateless; one module calling another)",
        linked_ns.median - here_ns.median
    );
    ratio(
        "HotLink stateless call / get()+call",
        (linked_ns.median - here_ns.median) / get_ns.median,
        "a call the host makes",
    );
    ratio(
        "HotLink stateful call / get()+stateful call",
        (linked_stateful_ns.median - here_ns.median) / stateful_ns.median,
        "a stateful call the host makes",
    );
    println!("  swap median                               {swap:>9.2?}  (< 1 ms)");
    println!("  signed swap median                        {signed_swap:>9.2?}  (SHA-256 + ed25519 added)");
    println!(
        "  callers held / swap                       {:>6.2}%",
        100.0 * held.as_secs_f64() / swap.as_secs_f64()
    );
}
