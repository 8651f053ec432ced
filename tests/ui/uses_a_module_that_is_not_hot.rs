use hotswap_runtime::hot_module;

pub mod plain {
    pub fn price() -> u64 {
        50
    }
}

#[hot_module(uses(crate::plain))]
pub mod pricing {
    pub fn quote() -> u64 {
        super::plain::price()
    }
}

fn main() {}
