use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct Hot;

    pub fn nothing() {}
}

fn main() {}
