//! The demo's hot module, version 2 (not compiled in place: the demo copies
//! it over version 1 in a scratch copy of this crate, rebuilds, and swaps).

use hotswap_runtime::hot_module;

#[hot_module]
pub mod counter {
    use serde::{Deserialize, Serialize};

    /// Everything the module remembers between calls and across swaps.
    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        pub count: u64,
        /// New in version 2; absent from version 1's handoff, so it starts at 0.
        #[serde(default)]
        pub increments_since_upgrade: u64,
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
        state.increments_since_upgrade += 1;
        state.count
    }

    /// The current count.
    pub fn count(state: &State) -> u64 {
        state.count
    }

    /// What the state holds, in words.
    pub fn describe(state: &State) -> String {
        format!("count = {}, increments served by version 2 = {}", state.count, state.increments_since_upgrade)
    }

    /// A greeting; version 2 changes the wording.
    pub fn greet(name: &str) -> String {
        format!("hello again, {name}! (now from version 2)")
    }

    /// Which version is serving.
    pub fn version() -> u32 {
        2
    }
}
