//! The service example's hot module, version 1: handles one line of the
//! service's protocol at a time and remembers a small key-value cache and
//! how many requests it served. `next/lib.rs` beside this crate is version 2.
//!
//! The protocol, one request per line, one reply line per request:
//!
//! | request           | reply                                 |
//! |-------------------|---------------------------------------|
//! | `set KEY VALUE`   | `v1 ok`                               |
//! | `get KEY`         | `v1 found VALUE` or `v1 missing`      |
//! | `stats`           | `v1 requests=N entries=N`             |
//! | `quit`            | `v1 bye`, then the connection closes  |
//!
//! Every reply starts with the version that produced it.

use hotswap_runtime::hot_module;

#[hot_module]
pub mod service {
    use serde::{Deserialize, Serialize};

    /// At most this many keys are cached; setting another evicts the one set longest ago.
    const CAPACITY: usize = 64;

    /// Everything the handler remembers between requests and across swaps.
    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        /// Requests handled, by every version.
        pub requests: u64,
        /// The cache, least recently set first.
        pub entries: Vec<(String, String)>,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// Handles one request line: returns the reply line and whether the
    /// connection stays open.
    pub fn handle(state: &mut State, line: &str) -> (String, bool) {
        state.requests += 1;
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value), None) => {
                state.entries.retain(|(cached, _)| cached != key);
                if state.entries.len() == CAPACITY {
                    state.entries.remove(0);
                }
                state.entries.push((key.to_owned(), value.to_owned()));
                "ok".to_owned()
            }
            (Some("get"), Some(key), None, None) => {
                match state.entries.iter().find(|(cached, _)| cached == key) {
                    Some((_, value)) => format!("found {value}"),
                    None => "missing".to_owned(),
                }
            }
            (Some("stats"), None, None, None) => {
                format!(
                    "requests={} entries={}",
                    state.requests,
                    state.entries.len()
                )
            }
            (Some("quit"), None, None, None) => return ("v1 bye".to_owned(), false),
            _ => format!("error: not a request: {line:?}"),
        };
        (format!("v1 {reply}"), true)
    }

    /// How many requests were handled since the service started.
    pub fn requests(state: &State) -> u64 {
        state.requests
    }
}
