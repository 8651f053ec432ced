use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State {
        pub count: u64,
    }

    pub fn setup(prev: Option<u64>) -> State {
        State { count: prev.unwrap_or(0) }
    }

    pub fn teardown(state: State) -> String {
        state.count.to_string()
    }
}

fn main() {}
