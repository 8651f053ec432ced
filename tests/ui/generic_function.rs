use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub fn largest<T: PartialOrd + Copy>(a: T, b: T) -> T {
        if a > b { a } else { b }
    }
}

fn main() {}
