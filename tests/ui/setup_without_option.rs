use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State;

    pub fn setup(prev: State) -> State {
        prev
    }
}

fn main() {}
