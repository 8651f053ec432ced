//! criterion benchmarks of the call paths and of a swap.
//! `cargo bench -p hotswap-bench`; the comparison with hot-lib-reloader and
//! the target ratios are printed by `cargo run --release -p hotswap-bench`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bench_module::bench::Hot;
use criterion::{criterion_group, criterion_main, Criterion};
use hotswap_bench::{build, Stage};
use hotswap_runtime::{Options, SwapMode};

fn calls_and_swaps(c: &mut Criterion) {
    let module_lib = build("bench-module", true);
    let baseline_lib = build("bench-dylib", true);
    // SAFETY: our own benchmark library; `add_c` has exactly this signature.
    let raw_library = unsafe { libloading::Library::new(&baseline_lib) }.expect("load baseline");
    let raw: extern "C" fn(u64, u64) -> u64 = *unsafe { raw_library.get(b"add_c") }.expect("add_c");
    let stage = Stage::with(&module_lib);
    let hot =
        Hot::open_with(stage.path(), Options::new().swap_mode(SwapMode::Manual)).expect("open");

    let atomic = AtomicU64::new(0);
    c.bench_function("one atomic RMW (baseline)", |b| {
        b.iter(|| atomic.fetch_add(black_box(1), Ordering::Relaxed))
    });
    let mutex = Mutex::new(0u64);
    c.bench_function("uncontended Mutex + raw call (baseline)", |b| {
        b.iter(|| {
            let mut value = mutex.lock().unwrap();
            *value = raw(*value, black_box(1));
            *value
        })
    });
    c.bench_function("raw extern C call", |b| {
        b.iter(|| raw(black_box(1), black_box(2)))
    });
    let guard = hot.get();
    c.bench_function("held guard, stateless call", |b| {
        b.iter(|| guard.add(black_box(1), black_box(2)))
    });
    c.bench_function("held guard, stateful call", |b| b.iter(|| guard.bump()));
    drop(guard);
    c.bench_function("get() + stateless call", |b| {
        b.iter(|| hot.get().add(black_box(1), black_box(2)))
    });
    c.bench_function("get() + stateful call", |b| b.iter(|| hot.get().bump()));

    let bytes = std::fs::read(&module_lib).expect("read module");
    let mut round = 0u64;
    c.bench_function("swap a small module", |b| {
        b.iter(|| {
            // Different bytes each time, as a new build would be.
            round += 1;
            let mut next = bytes.clone();
            next.extend_from_slice(&round.to_le_bytes());
            stage.put(&next);
            hot.reload().expect("swap");
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = calls_and_swaps
}
criterion_main!(benches);
