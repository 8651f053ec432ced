//! The catalog, version 2: the same items and interface; it also counts
//! the reservations it made (a state field version 1 did not have, which
//! starts at zero when version 1 hands over).

use hotswap_runtime::hot_module;

#[hot_module]
pub mod catalog {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    /// Every item the shop starts with: SKU, unit price in cents, stock.
    pub const ITEMS: [(&str, u64, u64); 3] = [
        ("apple", 50, 1_000_000),
        ("pear", 80, 1_000_000),
        ("plum", 30, 1_000_000),
    ];

    #[derive(Serialize, Deserialize)]
    pub struct State {
        /// SKU -> (unit price in cents, stock).
        pub items: BTreeMap<String, (u64, u64)>,
        /// Reservations made by version 2.
        #[serde(default)]
        pub reservations: u64,
    }

    pub fn setup(prev: Option<State>) -> State {
        prev.unwrap_or_else(|| State {
            items: ITEMS
                .iter()
                .map(|&(sku, price, stock)| (sku.to_owned(), (price, stock)))
                .collect(),
            reservations: 0,
        })
    }

    pub fn teardown(state: State) -> State {
        state
    }

    /// The unit price of `sku` in cents.
    pub fn price(state: &State, sku: &str) -> Option<u64> {
        state.items.get(sku).map(|&(price, _)| price)
    }

    /// Takes `quantity` of `sku` out of stock; returns what is left.
    pub fn reserve(state: &mut State, sku: &str, quantity: u32) -> Result<u64, String> {
        let (_, stock) = state
            .items
            .get_mut(sku)
            .ok_or_else(|| format!("no such item: {sku}"))?;
        *stock = stock
            .checked_sub(u64::from(quantity))
            .ok_or_else(|| format!("only {stock} {sku} left"))?;
        state.reservations += 1;
        Ok(*stock)
    }

    /// How many of `sku` are left (0 for an unknown item), and which
    /// catalog version answered.
    pub fn stock(state: &State, sku: &str) -> (u64, u32) {
        (state.items.get(sku).map_or(0, |&(_, stock)| stock), 2)
    }
}
