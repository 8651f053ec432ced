use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    use std::sync::atomic::{AtomicU64, Ordering};

    static CALLS: AtomicU64 = AtomicU64::new(0);

    pub fn calls() -> u64 {
        CALLS.fetch_add(1, Ordering::Relaxed)
    }
}

fn main() {}
