use hotswap_runtime::hot_module;

// Stands in for the `lazy_static` crate: the macro refuses it by name.
macro_rules! lazy_static {
    ($($tokens:tt)*) => {};
}

#[hot_module]
pub mod counter {
    lazy_static! {
        static ref NAMES: Vec<String> = Vec::new();
    }

    pub fn nothing() {}
}

fn main() {}
