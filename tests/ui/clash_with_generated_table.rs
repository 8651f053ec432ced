use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub type __HotTable = u32;

    pub fn nothing() {}
}

fn main() {}
