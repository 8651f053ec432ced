use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    pub fn origin() -> Point {
        Point { x: 0, y: 0 }
    }
}

fn main() {}
