use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    thread_local! {
        static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    pub fn nothing() {}
}

fn main() {}
