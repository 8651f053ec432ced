use hotswap_runtime::hot_module;

// One module with several mistakes: all of them are reported together.
#[hot_module]
pub mod counter {
    static LIMIT: u32 = 10;

    pub fn first<T>(items: Vec<T>) -> Option<T> {
        items.into_iter().next()
    }

    pub fn keys(map: std::collections::BTreeMap<u32, u32>) -> Vec<u32> {
        map.into_keys().collect()
    }

    pub async fn later() {}
}

fn main() {}
