use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    #[allow(unused_macros)]
    macro_rules! Hot {
        () => {};
    }

    pub fn nothing() {}
}

fn main() {}
