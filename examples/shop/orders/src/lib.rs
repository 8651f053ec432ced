//! Orders, version 1: an order is quoted by `pricing`, taken out of the
//! `catalog`'s stock, and recorded in the host's `Storage` with the time
//! from the host's `Clock`. Two hot modules and two host services.

use hotswap_runtime::hot_module;

#[hot_module(
    uses(shop_catalog::catalog, shop_pricing::pricing),
    services(Storage, Clock)
)]
pub mod orders {
    use hotswap_runtime::service;
    use serde::{Deserialize, Serialize};
    use shop_api::std_types::RString;
    use shop_api::{Clock, Storage};
    use shop_catalog::catalog;
    use shop_pricing::pricing;

    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        /// Orders placed, by every version: the last order's number.
        pub placed: u64,
        /// What they came to, in cents.
        pub revenue: u64,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// Places an order for `quantity` of `sku`; the reply names the order,
    /// its total and the pricing version that quoted it.
    pub fn place(state: &mut State, sku: &str, quantity: u32) -> Result<String, String> {
        let (total, pricing_version) = pricing::HotLink::get().quote(sku, quantity)?;
        catalog::HotLink::get().reserve(sku, quantity)?;
        state.placed += 1;
        state.revenue += total;
        let id = state.placed;
        let at = service::<Clock>().now_ms();
        service::<Storage>().put(
            format!("order/{id}").as_str().into(),
            RString::from(format!("{quantity} {sku} for {total} at {at} ms")),
        );
        Ok(format!(
            "order {id}: {quantity} {sku} for {total} (pricing v{pricing_version})"
        ))
    }

    /// What order `id` was, as stored.
    pub fn recorded(id: u64) -> Option<String> {
        service::<Storage>()
            .get(format!("order/{id}").as_str().into())
            .map(RString::into_string)
            .into_option()
    }

    /// Orders placed, and their revenue in cents.
    pub fn totals(state: &State) -> (u64, u64) {
        (state.placed, state.revenue)
    }
}
