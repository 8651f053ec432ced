use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    mod cache {
        pub static NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    }

    pub fn nothing() {}
}

fn main() {}
