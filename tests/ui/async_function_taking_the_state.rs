use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State {
        pub count: u64,
    }

    pub fn setup() -> State {
        State { count: 0 }
    }

    pub async fn bump(state: &mut State) -> u64 {
        state.count += 1;
        state.count
    }
}

fn main() {}
