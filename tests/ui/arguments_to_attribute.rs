use hotswap_runtime::hot_module;

#[hot_module(name = "other")]
pub mod counter {
    pub fn nothing() {}
}

fn main() {}
