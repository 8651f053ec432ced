use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    use abi_stable::std_types::RString;

    pub fn name() -> RString {
        RString::from("module memory")
    }
}

fn main() {}
