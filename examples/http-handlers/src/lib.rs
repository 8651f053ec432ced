//! The HTTP example's request handlers, version 1. The handler is an
//! `async fn` on the host's runtime; the request count is the state,
//! changed in a synchronous function the host calls first.

use hotswap_runtime::hot_module;

#[hot_module]
pub mod handlers {
    use std::time::Duration;

    use hotswap_runtime::rt;
    use serde::{Deserialize, Serialize};

    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        /// Requests counted, by every version.
        pub requests: u64,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// Counts a request and returns its number.
    pub fn record(state: &mut State) -> u64 {
        state.requests += 1;
        state.requests
    }

    /// How many requests were counted.
    pub fn requests(state: &State) -> u64 {
        state.requests
    }

    /// Answers `GET path`, request number `number`: status and body, the
    /// body tagged with this version.
    pub async fn handle(path: String, number: u64) -> (u16, String) {
        rt::yield_now().await;
        if path == "/" {
            (200, format!("v1 #{number}: hello"))
        } else if let Some(text) = path.strip_prefix("/echo/") {
            (200, format!("v1 #{number}: {text}"))
        } else if path == "/slow" {
            rt::sleep(Duration::from_millis(2)).await;
            (200, format!("v1 #{number}: slow"))
        } else {
            (404, format!("v1 #{number}: no route for {path}"))
        }
    }
}
