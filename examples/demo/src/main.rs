//! hotswap's main demo, unattended: builds version 1 of the counter module,
//! serves calls from several threads, and saves version 2's source (new
//! greeting, a state field version 1 did not have) over it while serving.
//! The runtime notices the save, rebuilds the crate, swaps the new build in
//! by itself, and every update made before, during and after the swap is in
//! the state.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use counter_module::counter;
use hotswap_runtime::{Options, Registry, SwapEvent};
use hotswap_scratch::ScratchCrate;

const SERVING_THREADS: usize = 4;

fn main() -> Result<(), Box<dyn Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()?;
    let scratch = scratch_crate(&root)?;
    let target_dir = root.join("target/hotswap-modules");

    println!("building version 1 of the counter module ...");
    let library = scratch
        .build(&target_dir)
        .map_err(|error| error as Box<dyn Error>)?;
    let scratch = scratch.dir();
    // One registry holds the process's hot modules (here, one), for code
    // that calls them and for tooling that lists them. Rebuild on save: the
    // runtime runs cargo when the crate's sources change.
    let modules = Registry::new();
    let hot = modules.open::<counter::Hot>(&library, Options::new().rebuild_on_save(scratch))?;
    let before = snapshot(&hot);
    println!("serving version {}: {:?}", before.version, before.greeting);

    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let servers: Vec<_> = (0..SERVING_THREADS)
        .map(|_| {
            let (hot, stop, calls) = (hot.clone(), stop.clone(), calls.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    hot.get().increment(1);
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let events = hot.subscribe();
    println!(
        "{SERVING_THREADS} threads are incrementing; saving version 2's source over version 1 ..."
    );
    // Let version 1 serve a while first, so updates from before the save count.
    while calls.load(Ordering::Relaxed) < 100_000 {
        thread::sleep(Duration::from_millis(10));
    }
    let next = root.join("examples/counter-module/next/lib.rs");
    std::fs::copy(next, scratch.join("src/lib.rs"))?;
    let saved = Instant::now();
    let calls_at_save = calls.load(Ordering::Relaxed);

    // Nobody runs cargo or calls reload(): the runtime watches the sources.
    let (mut build_took, mut timings) = (None, None);
    while build_took.is_none() || timings.is_none() {
        match events.recv_timeout(Duration::from_secs(300))? {
            SwapEvent::Built { took, .. } => build_took = Some(took),
            SwapEvent::Swapped { timings: swap, .. } => timings = Some(swap),
            SwapEvent::BuildFailed { error, .. } | SwapEvent::Refused { error, .. } => {
                return Err(error.into());
            }
            _ => continue,
        }
    }
    let (build_took, timings) = (build_took.unwrap_or_default(), timings.unwrap_or_default());
    let noticed = saved.elapsed();

    thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    for server in servers {
        server.join().expect("serving thread");
    }
    let after = snapshot(&hot);
    let total = calls.load(Ordering::Relaxed);

    println!();
    println!(
        "rebuilt and swapped version {} -> {} by itself (generation {}), {noticed:?} after the save",
        before.version,
        after.version,
        hot.generation()
    );
    println!("  cargo build (run by the runtime): {build_took:?}");
    // Save to serving, phase by phase: debounce + build + detect + read +
    // admit + load + check + critical section (callers held) = total.
    println!("  save -> serving: {timings}");
    println!("  greeting: {:?} -> {:?}", before.greeting, after.greeting);
    println!("  state:    {:?}", after.description);
    println!(
        "  {total} increments were made ({calls_at_save} before the save); the count is {}: {}",
        after.count,
        if after.count == total {
            "nothing was lost"
        } else {
            "UPDATES WERE LOST"
        }
    );
    println!("  loaded in this process (Registry::list):");
    for module in modules.list() {
        println!("    {module}");
    }
    if after.count != total || after.version != 2 {
        return Err("the swap did not carry the state over".into());
    }
    Ok(())
}

struct Snapshot {
    version: u32,
    greeting: String,
    description: String,
    count: u64,
}

fn snapshot(hot: &counter::Hot) -> Snapshot {
    let module = hot.get();
    Snapshot {
        version: module.version(),
        greeting: module.greet("demo"),
        description: module.describe(),
        count: module.count(),
    }
}

/// A scratch copy of `examples/counter-module` (as version 1) that the demo
/// edits and rebuilds, leaving the real crate untouched.
fn scratch_crate(root: &Path) -> Result<ScratchCrate, Box<dyn Error>> {
    let source = std::fs::read_to_string(root.join("examples/counter-module/src/lib.rs"))?;
    Ok(ScratchCrate::new(
        root.join("target/hotswap-demo/counter-module"),
        "counter-module",
    )
    .source(source))
}
