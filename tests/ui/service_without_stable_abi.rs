use hotswap_runtime::hot_module;

pub struct Clock {
    pub started: std::time::Instant,
}

#[hot_module(services(crate::Clock))]
pub mod timed {
    pub fn now() -> u64 {
        0
    }
}

fn main() {}
