use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub async fn fetch() -> u32 {
        1
    }
}

fn main() {}
