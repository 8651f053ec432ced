//! The service example's hot module, version 2 (not compiled in place: the
//! service builds it in a scratch copy of this crate and swaps it in).
//!
//! Changes from version 1: replies start with `v2`, `del KEY` is a new
//! request, and the state gains a field, `hits`, which version 1's handoff
//! does not carry (it starts at 0) and version 1 drops again.
//!
//! | request           | reply                                      |
//! |-------------------|--------------------------------------------|
//! | `set KEY VALUE`   | `v2 ok`                                    |
//! | `get KEY`         | `v2 found VALUE` or `v2 missing`           |
//! | `del KEY`         | `v2 ok` or `v2 missing`                    |
//! | `stats`           | `v2 requests=N entries=N hits=N`           |
//! | `quit`            | `v2 bye`, then the connection closes       |

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
        /// New in version 2: `get`s that found their key since version 2
        /// took over.
        #[serde(default)]
        pub hits: u64,
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
                    Some((_, value)) => {
                        state.hits += 1;
                        format!("found {value}")
                    }
                    None => "missing".to_owned(),
                }
            }
            (Some("del"), Some(key), None, None) => {
                let before = state.entries.len();
                state.entries.retain(|(cached, _)| cached != key);
                if state.entries.len() < before { "ok" } else { "missing" }.to_owned()
            }
            (Some("stats"), None, None, None) => format!(
                "requests={} entries={} hits={}",
                state.requests,
                state.entries.len(),
                state.hits
            ),
            (Some("quit"), None, None, None) => return ("v2 bye".to_owned(), false),
            _ => format!("error: not a request: {line:?}"),
        };
        (format!("v2 {reply}"), true)
    }

    /// How many requests were handled since the service started.
    pub fn requests(state: &State) -> u64 {
        state.requests
    }
}
