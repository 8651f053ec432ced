//! The baselines: the same `add` as `bench-module`, exported for a raw
//! `extern "C"` function-pointer call and for hot-lib-reloader.

/// Called through a raw function pointer.
#[no_mangle]
pub extern "C" fn add_c(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}

/// Called through hot-lib-reloader (it reads this file's signatures).
#[no_mangle]
pub fn add(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}
