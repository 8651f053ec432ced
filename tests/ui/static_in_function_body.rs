use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub fn calls() -> u64 {
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

fn main() {}
