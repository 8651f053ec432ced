use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct __HotModule;

    pub fn nothing() {}
}

fn main() {}
