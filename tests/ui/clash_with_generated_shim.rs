use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub fn tick() {}

    fn __hotswap_shim_tick() {}
}

fn main() {}
