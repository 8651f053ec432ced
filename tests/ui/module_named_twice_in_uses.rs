use hotswap_runtime::hot_module;

#[hot_module]
pub mod catalog {
    pub fn price() -> u64 {
        50
    }
}

#[hot_module(uses(crate::catalog, crate::catalog))]
pub mod pricing {
    pub fn quote() -> u64 {
        super::catalog::HotLink::get().price()
    }
}

fn main() {}
