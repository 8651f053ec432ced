//! Pricing, version 2: ten or more of an item cost 10% less.

use hotswap_runtime::hot_module;

#[hot_module(uses(shop_catalog::catalog))]
pub mod pricing {
    use serde::{Deserialize, Serialize};
    use shop_catalog::catalog;

    #[derive(Default, Serialize, Deserialize)]
    pub struct State {
        /// Quotes made, by every version.
        pub quotes: u64,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_default()
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// The price of `quantity` of `sku` in cents, and which pricing
    /// version quoted it.
    pub fn quote(state: &mut State, sku: &str, quantity: u32) -> Result<(u64, u32), String> {
        let unit = catalog::HotLink::get()
            .price(sku)
            .ok_or_else(|| format!("no such item: {sku}"))?;
        state.quotes += 1;
        let full = unit * u64::from(quantity);
        let total = if quantity >= 10 { full * 9 / 10 } else { full };
        Ok((total, 2))
    }

    /// How many quotes were made.
    pub fn quotes(state: &State) -> u64 {
        state.quotes
    }
}
