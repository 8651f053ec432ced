//! The host services the shop's modules call: defined once, here, as
//! `abi_stable` trait objects, so that the host implements them and every
//! module calls them through the same checked vtable.
//!
//! A module names them in `#[hot_module(services(Storage, Clock))]` and
//! reaches them with `hotswap_runtime::service::<Storage>()`; the host
//! provides one value of each with `Registry::provide`. The methods run in
//! the host, so nothing they return points into a module, and nothing a
//! module holds of them outlives the call.
//!
//! Service methods report failures as values: `abi_stable` aborts the
//! process on a panic that reaches a trait object's method boundary.

// `#[sabi_trait]` (abi_stable 0.11) writes impls inside a const item.
#![allow(non_local_definitions)]

use abi_stable::sabi_trait;
use abi_stable::std_types::{RBox, ROption, RStr, RString};

pub use abi_stable::sabi_trait::TD_Opaque;
pub use abi_stable::std_types;

/// Where orders are kept: a string key-value store owned by the host.
#[sabi_trait]
pub trait Store: Send + Sync {
    /// Stores `value` under `key`, replacing what was there.
    fn put(&self, key: RStr<'_>, value: RString);
    /// The value under `key`.
    fn get(&self, key: RStr<'_>) -> ROption<RString>;
    /// How many keys start with `prefix`.
    #[sabi(last_prefix_field)]
    fn count(&self, prefix: RStr<'_>) -> u64;
}

/// The host's clock.
#[sabi_trait]
pub trait Time: Send + Sync {
    /// Milliseconds since the host started.
    #[sabi(last_prefix_field)]
    fn now_ms(&self) -> u64;
}

/// The storage service, as modules name it.
pub type Storage = Store_TO<'static, RBox<()>>;

/// The clock service, as modules name it.
pub type Clock = Time_TO<'static, RBox<()>>;
