use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub fn name() -> &'static str {
        "counter"
    }
}

fn main() {}
