//! An order service made of three hot modules that call each other and two
//! services of the host, on loopback.
//!
//! - `catalog` (`examples/shop/catalog`) knows the items, their prices and
//!   stock;
//! - `pricing` quotes a price, asking the catalog for unit prices
//!   (`#[hot_module(uses(shop_catalog::catalog))]`);
//! - `orders` places orders: it asks `pricing` for the total, takes the
//!   stock from `catalog`, and records the order in the host's [`Storage`]
//!   with the time from the host's [`Clock`].
//!
//! The host ([`Shop`]) owns one [`Registry`] with the three modules and
//! the two services, and [`serve`] answers one line per request:
//!
//! | request | reply |
//! |---|---|
//! | `price SKU N` | `price TOTAL (pricing vV)` |
//! | `order SKU N` | what `orders` says: `order ID: ...` (v1) or `order #ID: ...` (v2) |
//! | `stock SKU` | `stock N (catalog vV)` |
//! | `status` | the registry's listing: each module, its generation, library, versions mapped, what it uses |
//! | `quit` | `bye`, and the connection closes |
//!
//! Every module can be swapped on its own ([`build_module`] builds either
//! version of each), while the others keep calling it.

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::error::Error;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hotswap_runtime::{Options, Registry};
use hotswap_scratch::ScratchCrate;
use shop_api::std_types::{ROption, RStr, RString};
use shop_api::{Clock, Storage, Store, Store_TO, TD_Opaque, Time, Time_TO};

pub use hotswap_line_server::{Client, Server};
pub use shop_catalog::catalog::Hot as Catalog;
pub use shop_orders::orders::Hot as Orders;
pub use shop_pricing::pricing::Hot as Pricing;

/// The three modules, by the name their crate gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Module {
    /// `shop-catalog`.
    Catalog,
    /// `shop-pricing`, which calls the catalog.
    Pricing,
    /// `shop-orders`, which calls the catalog, pricing and the host.
    Orders,
}

impl Module {
    /// Every module, callees before their callers: the order they open in.
    pub const ALL: [Self; 3] = [Self::Catalog, Self::Pricing, Self::Orders];

    /// The package name.
    pub fn package(self) -> &'static str {
        match self {
            Self::Catalog => "shop-catalog",
            Self::Pricing => "shop-pricing",
            Self::Orders => "shop-orders",
        }
    }

    /// Its directory under `examples/shop`.
    fn directory(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::Pricing => "pricing",
            Self::Orders => "orders",
        }
    }

    /// The library file cargo names for it.
    pub fn library_name(self) -> String {
        format!("lib{}.so", self.package().replace('-', "_"))
    }

    /// The `[dependencies]` of its crate besides `hotswap-runtime`: the
    /// modules it calls and the interface crate, by path (their interfaces
    /// are the same in both versions).
    fn dependencies(self) -> String {
        let shop = hotswap_scratch::workspace_root().join("examples/shop");
        let path = |name: &str| shop.join(name).display().to_string();
        let mut lines = vec![hotswap_scratch::SERDE.to_owned()];
        if self != Self::Catalog {
            lines.push(format!("shop-catalog = {{ path = {:?} }}", path("catalog")));
        }
        if self == Self::Orders {
            lines.push(format!("shop-pricing = {{ path = {:?} }}", path("pricing")));
            lines.push(format!("shop-api = {{ path = {:?} }}", path("api")));
        }
        lines.join("\n")
    }
}

/// A version of a module's source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `src/lib.rs`, what the host is compiled against.
    V1,
    /// `next/lib.rs`: catalog counts reservations, pricing gives 10% off
    /// ten or more, orders replies in another format.
    V2,
}

/// Builds `version` of `module` with cargo and installs the library at
/// `destination` atomically (written beside it, then renamed over it).
///
/// The build runs in a scratch crate under `target/hotswap-shop` with the
/// chosen source as its `src/lib.rs`, into `target/hotswap-modules`, whose
/// dependency builds it shares with the test suite's module builds. Calls
/// in one process take turns.
pub fn build_module(
    module: Module,
    version: Version,
    destination: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let root = hotswap_scratch::workspace_root();
    let source = root
        .join("examples/shop")
        .join(module.directory())
        .join(match version {
            Version::V1 => "src/lib.rs",
            Version::V2 => "next/lib.rs",
        });
    build_source(module, &std::fs::read_to_string(source)?, None, destination)
}

/// Builds `module` from `source` (a whole `src/lib.rs`) and installs it at
/// `destination`, as [`build_module`] does. `catalog`, when given, is the
/// directory of another catalog crate to compile against instead of
/// `examples/shop/catalog` (tests build callers against a changed catalog).
pub fn build_source(
    module: Module,
    source: &str,
    catalog: Option<&Path>,
    destination: &Path,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING.lock().unwrap_or_else(PoisonError::into_inner);
    let root = hotswap_scratch::workspace_root();
    let mut dependencies = module.dependencies();
    if let Some(catalog) = catalog {
        let workspace_catalog = root.join("examples/shop/catalog").display().to_string();
        dependencies = dependencies.replace(
            &format!("{workspace_catalog:?}"),
            &format!("{:?}", catalog.display().to_string()),
        );
    }
    let scratch = match catalog {
        None => module.directory().to_owned(),
        Some(_) => format!("{}-against-other-catalog", module.directory()),
    };
    let built = ScratchCrate::new(
        root.join("target/hotswap-shop").join(scratch),
        module.package(),
    )
    .dependencies(dependencies)
    .source(source)
    // A fraction of the size: quicker to copy and load on each swap.
    .manifest_extra(format!(
        "\n[profile.dev.package.{}]\nstrip = \"debuginfo\"\n",
        module.package()
    ))
    .build(&root.join("target/hotswap-modules"))?;
    hotswap_scratch::install(&built, destination)?;
    Ok(())
}

/// The host's storage service: a map behind a lock.
#[derive(Debug, Default)]
pub struct MemoryStore {
    entries: Mutex<BTreeMap<String, String>>,
}

impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn put(&self, key: RStr<'_>, value: RString) {
        self.entries().insert(key.into(), value.into());
    }

    fn get(&self, key: RStr<'_>) -> ROption<RString> {
        self.entries()
            .get(key.as_str())
            .map(|value| RString::from(value.as_str()))
            .into()
    }

    fn count(&self, prefix: RStr<'_>) -> u64 {
        self.entries()
            .keys()
            .filter(|key| key.starts_with(prefix.as_str()))
            .count() as u64
    }
}

/// The host's clock service: milliseconds since the host started.
#[derive(Debug)]
pub struct HostClock {
    started: Instant,
}

impl Time for HostClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The shop's host: one registry with the three modules and the two
/// services they call.
#[derive(Debug)]
pub struct Shop {
    /// Every module, found by type or listed by name.
    pub registry: Registry,
    /// The catalog module.
    pub catalog: Arc<Catalog>,
    /// The pricing module.
    pub pricing: Arc<Pricing>,
    /// The orders module.
    pub orders: Arc<Orders>,
}

impl Shop {
    /// Provides the services, then opens the modules from `libraries`,
    /// callees first, each with `options`.
    pub fn open(
        libraries: &BTreeMap<Module, PathBuf>,
        options: impl Fn() -> Options,
    ) -> Result<Self, hotswap_runtime::Error> {
        let registry = Registry::new();
        let storage: Storage = Store_TO::from_value(MemoryStore::default(), TD_Opaque);
        registry.provide(storage)?;
        let clock: Clock = Time_TO::from_value(
            HostClock {
                started: Instant::now(),
            },
            TD_Opaque,
        );
        registry.provide(clock)?;
        let catalog = registry.open::<Catalog>(&libraries[&Module::Catalog], options())?;
        let pricing = registry.open::<Pricing>(&libraries[&Module::Pricing], options())?;
        let orders = registry.open::<Orders>(&libraries[&Module::Orders], options())?;
        Ok(Self {
            registry,
            catalog,
            pricing,
            orders,
        })
    }

    /// Swaps in the build of `module` now on disk.
    pub fn reload(&self, module: Module) -> Result<(), hotswap_runtime::Error> {
        match module {
            Module::Catalog => self.catalog.reload(),
            Module::Pricing => self.pricing.reload(),
            Module::Orders => self.orders.reload(),
        }
    }

    /// Answers one request line; the second value says whether to keep the
    /// connection open.
    pub fn handle(&self, line: &str) -> (String, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let quantity = |word: &str| {
            word.parse::<u32>()
                .map_err(|error| format!("error: bad quantity {word:?}: {error}"))
        };
        let reply = match words.as_slice() {
            ["price", sku, count] => {
                quantity(count).map(|count| match self.pricing.get().quote(sku, count) {
                    Ok((total, version)) => format!("price {total} (pricing v{version})"),
                    Err(error) => format!("error: {error}"),
                })
            }
            ["order", sku, count] => quantity(count).map(|count| {
                self.orders
                    .get()
                    .place(sku, count)
                    .unwrap_or_else(|error| format!("error: {error}"))
            }),
            ["stock", sku] => {
                let (stock, version) = self.catalog.get().stock(sku);
                Ok(format!("stock {stock} (catalog v{version})"))
            }
            ["status"] => Ok(self
                .registry
                .list()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" | ")),
            ["quit"] => return ("bye".to_owned(), false),
            _ => Err(format!(
                "error: unknown request {line:?}; try price SKU N, order SKU N, stock SKU, status or quit"
            )),
        };
        (reply.unwrap_or_else(|error| error), true)
    }
}

/// Serves the shop's line protocol on an ephemeral loopback port until the
/// server is dropped, a thread per connection. A module's panic (resumed in
/// the host) becomes an `error: ...` reply; the modules and their state
/// stay usable.
pub fn serve(shop: Arc<Shop>) -> io::Result<Server> {
    Server::start(move |line: &str| shop.handle(line))
}

/// The unit price of `sku` in cents, as both catalog versions have it.
pub fn unit_price(sku: &str) -> Option<u64> {
    shop_catalog::catalog::ITEMS
        .iter()
        .find(|(name, _, _)| *name == sku)
        .map(|&(_, price, _)| price)
}

/// What pricing version `version` quotes for `quantity` of an item at
/// `unit` cents: the rule each version's source implements.
pub fn expected_total(version: u32, unit: u64, quantity: u32) -> Option<u64> {
    let full = unit * u64::from(quantity);
    match version {
        1 => Some(full),
        2 => Some(if quantity >= 10 { full * 9 / 10 } else { full }),
        _ => None,
    }
}
