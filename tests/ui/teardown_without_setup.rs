use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    pub struct State;

    pub fn teardown(state: State) -> u64 {
        let _ = state;
        0
    }
}

fn main() {}
