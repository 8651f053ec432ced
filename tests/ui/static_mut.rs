use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    static mut CALLS: u64 = 0;

    pub fn nothing() {}
}

fn main() {}
