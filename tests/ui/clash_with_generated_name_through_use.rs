use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub use std::string::String as HotGuard;

    pub fn nothing() {}
}

fn main() {}
