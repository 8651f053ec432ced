use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    use std::collections::HashMap;

    pub fn total(scores: HashMap<String, u32>) -> u32 {
        scores.values().sum()
    }
}

fn main() {}
