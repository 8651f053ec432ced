//! The demo's hot module, version 1. `next/lib.rs` beside this crate is
//! version 2: the demo builds one, then the other, and swaps while serving.

use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    use serde::{Deserialize, Serialize};

    /// Everything the module remembers between calls and across swaps.
    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        pub count: u64,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// Adds `by` to the count and returns the new count.
    pub fn increment(state: &mut State, by: u64) -> u64 {
        state.count += by;
        state.count
    }

    /// The current count.
    pub fn count(state: &State) -> u64 {
        state.count
    }

    /// What the state holds, in words.
    pub fn describe(state: &State) -> String {
        format!("count = {}", state.count)
    }

    /// A greeting; version 2 changes the wording.
    pub fn greet(name: &str) -> String {
        format!("hello, {name}")
    }

    /// Which version is serving.
    pub fn version() -> u32 {
        1
    }
}
