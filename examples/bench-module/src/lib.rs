//! The module the benchmarks call and swap: one stateless function, one
//! stateful one, and a state that can be made large to time the handoff.

use hotswap_runtime::hot_module;

#[hot_module]
pub mod bench {
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        pub counter: u64,
        pub data: Vec<u64>,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// The same work as the raw and hot-lib-reloader baselines.
    pub fn add(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    /// `add` as an `async fn`: what awaiting a module's future costs.
    pub async fn add_async(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }

    pub fn bump(state: &mut State) -> u64 {
        state.counter += 1;
        state.counter
    }

    /// Makes the state `bytes` large (as `u64`s), for the handoff benchmark.
    pub fn fill(state: &mut State, bytes: u64) {
        state.data = (0..bytes / 8).collect();
    }

    pub fn data_len(state: &State) -> u64 {
        state.data.len() as u64
    }
}

/// A second module that calls the first through its `HotLink`: what a call
/// from one hot module into another costs.
#[hot_module(uses(crate::bench))]
pub mod relay {
    use super::bench;

    /// `bench::add`, through a link.
    pub fn add_linked(a: u64, b: u64) -> u64 {
        bench::HotLink::get().add(a, b)
    }

    /// `bench::bump` (`&mut State`), through a link.
    pub fn bump_linked() -> u64 {
        bench::HotLink::get().bump()
    }

    /// The same work as `bench::add`, here: the baseline a link adds to.
    pub fn add_here(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}
