use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State {
        pub count: u64,
    }

    pub async fn setup() -> State {
        State { count: 0 }
    }
}

fn main() {}
