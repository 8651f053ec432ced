use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State {
        pub count: std::cell::Cell<u64>,
    }

    pub fn setup() -> State {
        State { count: std::cell::Cell::new(0) }
    }

    pub fn count(state: &State) -> u64 {
        state.count.get()
    }
}

fn main() {}
