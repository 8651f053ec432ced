//! The shop example under load: three module crates that call each other
//! (`orders` -> `pricing` -> `catalog`, `orders` -> `catalog`) and two host
//! services, served over loopback to clients on persistent connections,
//! while each module is swapped twenty times on its own. And the
//! refusals: a callee build that no longer fits a loaded caller, a caller
//! built against another interface of its callee, and modules opened
//! without what they call.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;

use hotswap_runtime::{Error, Options, Registry, SwapMode};
use hotswap_scratch::ScratchCrate;
use hotswap_shop::{
    build_module, build_source, expected_total, serve, unit_price, Catalog, Client, Module, Orders,
    Pricing, Server, Shop, Version,
};
use hotswap_tests::{AbortOnPanic, Progress, Stage};

const CLIENTS: u64 = 4;
/// Swaps of each module.
const SWAPS: u64 = 20;
/// Requests each client sends after the last swap.
const TAIL: u64 = 60;
const SKUS: [&str; 3] = ["apple", "pear", "plum"];
const INITIAL_STOCK: u64 = 1_000_000;

/// Version 1 and 2 of every module, built once for the whole file.
fn builds() -> &'static BTreeMap<(Module, u8), PathBuf> {
    static BUILDS: OnceLock<(tempfile::TempDir, BTreeMap<(Module, u8), PathBuf>)> = OnceLock::new();
    let (_, builds) = BUILDS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the builds");
        let mut builds = BTreeMap::new();
        for module in Module::ALL {
            for (number, version) in [(1, Version::V1), (2, Version::V2)] {
                let library = dir
                    .path()
                    .join(format!("v{number}-{}", module.library_name()));
                build_module(module, version, &library)
                    .unwrap_or_else(|error| panic!("build {module:?} {version:?}: {error}"));
                builds.insert((module, number), library);
            }
        }
        (dir, builds)
    });
    builds
}

fn build(module: Module, version: u8) -> &'static Path {
    &builds()[&(module, version)]
}

/// One stage per module, holding version 1, and the shop opened on them
/// (swaps only by `reload`).
fn open_shop() -> (BTreeMap<Module, Stage>, Shop) {
    let stages: BTreeMap<Module, Stage> = Module::ALL
        .iter()
        .map(|&module| (module, Stage::with_file(build(module, 1))))
        .collect();
    let paths = stages
        .iter()
        .map(|(&module, stage)| (module, stage.path()))
        .collect();
    let shop =
        Shop::open(&paths, || Options::new().swap_mode(SwapMode::Manual)).expect("open the shop");
    (stages, shop)
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// `price` requests answered.
    prices: u64,
    /// Each order placed: its number, SKU, quantity and total.
    orders: Vec<(u64, String, u32, u64)>,
    /// Replies by (module, version).
    versions: HashMap<(Module, u32), u64>,
}

/// Parses `order 7: 3 pear for 240 (pricing v1)` (orders version 1) or
/// `order #7: 3 x pear = 240 cents (pricing v2)` (version 2) into (orders
/// version, number, quantity, SKU, total, pricing version).
fn parse_order(reply: &str) -> Option<(u32, u64, u32, String, u64, u32)> {
    let (head, pricing) = reply.rsplit_once(" (pricing v")?;
    let pricing: u32 = pricing.strip_suffix(')')?.parse().ok()?;
    if let Some(rest) = head.strip_prefix("order #") {
        let (id, rest) = rest.split_once(": ")?;
        let (quantity, rest) = rest.split_once(" x ")?;
        let (sku, total) = rest.split_once(" = ")?;
        let total = total.strip_suffix(" cents")?;
        Some((
            2,
            id.parse().ok()?,
            quantity.parse().ok()?,
            sku.to_owned(),
            total.parse().ok()?,
            pricing,
        ))
    } else {
        let rest = head.strip_prefix("order ")?;
        let (id, rest) = rest.split_once(": ")?;
        let (quantity, rest) = rest.split_once(' ')?;
        let (sku, total) = rest.split_once(" for ")?;
        Some((
            1,
            id.parse().ok()?,
            quantity.parse().ok()?,
            sku.to_owned(),
            total.parse().ok()?,
            pricing,
        ))
    }
}

/// `price 540 (pricing v2)` -> (540, 2); `stock 12 (catalog v1)` -> (12, 1).
fn parse_tagged(reply: &str, word: &str, module: &str) -> Option<(u64, u32)> {
    let rest = reply.strip_prefix(word)?.strip_prefix(' ')?;
    let (value, version) = rest.split_once(&format!(" ({module} v"))?;
    Some((
        value.parse().ok()?,
        version.strip_suffix(')')?.parse().ok()?,
    ))
}

/// Sends price, order and stock requests in turn until the last swap round
/// is done and `TAIL` more after it; checks each reply against the rules
/// of the version that says it answered.
fn client(id: u64, server: &Server, progress: &Progress) -> Seen {
    let _abort = AbortOnPanic(progress);
    let mut connection = Client::connect(server.local_addr()).expect("connect");
    let mut seen = Seen::default();
    let mut last_stock: HashMap<&str, u64> = HashMap::new();
    let mut after_last_swap = 0;
    for request in 0_u64.. {
        if after_last_swap == TAIL {
            break;
        }
        let sku = SKUS[((id + request) % 3) as usize];
        let unit = unit_price(sku).expect("a known SKU");
        match request % 3 {
            0 => {
                // 1..=13: both sides of pricing v2's discount at ten.
                let quantity = (1 + (request / 3 + id) % 13) as u32;
                let reply = connection
                    .request(&format!("price {sku} {quantity}"))
                    .expect("price");
                let (total, version) = parse_tagged(&reply, "price", "pricing")
                    .unwrap_or_else(|| panic!("client {id}: {reply:?} is no price reply"));
                assert_eq!(
                    Some(total),
                    expected_total(version, unit, quantity),
                    "client {id}: {reply:?} for {quantity} {sku}"
                );
                seen.prices += 1;
                *seen.versions.entry((Module::Pricing, version)).or_default() += 1;
            }
            1 => {
                let quantity = (1 + request % 11) as u32;
                let reply = connection
                    .request(&format!("order {sku} {quantity}"))
                    .expect("order");
                let (orders_version, number, got_quantity, got_sku, total, pricing_version) =
                    parse_order(&reply)
                        .unwrap_or_else(|| panic!("client {id}: {reply:?} is no order reply"));
                assert_eq!(
                    (got_quantity, got_sku.as_str()),
                    (quantity, sku),
                    "client {id}: {reply:?}"
                );
                assert_eq!(
                    Some(total),
                    expected_total(pricing_version, unit, quantity),
                    "client {id}: {reply:?}"
                );
                seen.orders.push((number, got_sku, quantity, total));
                *seen
                    .versions
                    .entry((Module::Orders, orders_version))
                    .or_default() += 1;
                *seen
                    .versions
                    .entry((Module::Pricing, pricing_version))
                    .or_default() += 1;
            }
            _ => {
                let reply = connection.request(&format!("stock {sku}")).expect("stock");
                let (stock, version) = parse_tagged(&reply, "stock", "catalog")
                    .unwrap_or_else(|| panic!("client {id}: {reply:?} is no stock reply"));
                // Stock only goes down: a catalog state lost in a swap
                // would show here as stock back at its start.
                let last = last_stock.entry(sku).or_insert(INITIAL_STOCK);
                assert!(
                    stock <= *last,
                    "client {id}: {sku} stock went up from {last} to {stock}"
                );
                *last = stock;
                *seen.versions.entry((Module::Catalog, version)).or_default() += 1;
            }
        }
        let (swapped_all, aborted) = progress.update(|counts| {
            counts.replies += 1;
            (counts.swaps == SWAPS, counts.aborted)
        });
        assert!(!aborted, "client {id}: stopping, another thread panicked");
        after_last_swap += u64::from(swapped_all);
    }
    assert_eq!(
        connection.finish().expect("close"),
        "",
        "client {id}: replies nobody asked for"
    );
    seen
}

#[test]
fn three_modules_swapped_independently_under_load_answer_every_request() {
    let (stages, shop) = open_shop();
    let shop = std::sync::Arc::new(shop);
    let server = serve(shop.clone()).expect("start the server");
    let progress = Progress::default();

    let seen: Vec<Seen> = thread::scope(|scope| {
        let (server, progress) = (&server, &progress);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| scope.spawn(move || client(id, server, progress)))
            .collect();
        let _abort = AbortOnPanic(progress);
        // Each swap waits until more than CLIENTS replies arrived after the
        // previous one: with one request in flight per client, one of them
        // was computed between the two swaps.
        let mut replies_after_last_swap = 0;
        for round in 1..=SWAPS {
            let version = if round % 2 == 1 { 2 } else { 1 };
            for module in Module::ALL {
                progress.wait_until("replies from the versions swapped in last", |counts| {
                    counts.replies > replies_after_last_swap + CLIENTS
                });
                stages[&module].put_file(build(module, version));
                shop.reload(module).unwrap_or_else(|error| {
                    panic!("round {round}: swap {module:?} to v{version} under load: {error}")
                });
                replies_after_last_swap = progress.update(|counts| counts.replies);
            }
            progress.update(|counts| counts.swaps = round);
        }
        clients
            .into_iter()
            .map(|client| client.join().expect("client"))
            .collect()
    });

    // Each module was swapped on its own, SWAPS times.
    assert_eq!(shop.catalog.generation(), SWAPS);
    assert_eq!(shop.pricing.generation(), SWAPS);
    assert_eq!(shop.orders.generation(), SWAPS);
    let mut versions: HashMap<(Module, u32), u64> = HashMap::new();
    for client in &seen {
        for (&key, &count) in &client.versions {
            *versions.entry(key).or_default() += count;
        }
    }
    for module in Module::ALL {
        for version in [1, 2] {
            assert!(
                versions
                    .get(&(module, version))
                    .is_some_and(|&count| count > 0),
                "{module:?} v{version} answered no request: {versions:?}"
            );
        }
    }

    // Orders: every order got its own number, none lost or repeated.
    let mut orders: Vec<&(u64, String, u32, u64)> =
        seen.iter().flat_map(|client| &client.orders).collect();
    orders.sort();
    let numbers: Vec<u64> = orders.iter().map(|order| order.0).collect();
    let placed = orders.len() as u64;
    assert_eq!(
        numbers,
        (1..=placed).collect::<Vec<_>>(),
        "order numbers are 1..={placed}, each once"
    );
    let revenue: u64 = orders.iter().map(|order| order.3).sum();
    assert_eq!(
        shop.orders.get().totals(),
        (placed, revenue),
        "the orders state counted every order across {SWAPS} swaps"
    );
    // The host's storage service recorded each one, through orders.
    let (number, sku, quantity, total) = orders.last().expect("some orders");
    let recorded = shop
        .orders
        .get()
        .recorded(*number)
        .expect("the last order is stored");
    assert!(
        recorded.starts_with(&format!("{quantity} {sku} for {total} at ")),
        "{recorded:?}"
    );

    // Catalog: the stock went down by exactly what was ordered.
    for sku in SKUS {
        let ordered: u64 = orders
            .iter()
            .filter(|order| order.1 == sku)
            .map(|order| u64::from(order.2))
            .sum();
        assert_eq!(
            shop.catalog.get().stock(sku).0,
            INITIAL_STOCK - ordered,
            "{sku} stock"
        );
    }

    // Pricing: one quote per price request and per order.
    let prices: u64 = seen.iter().map(|client| client.prices).sum();
    assert_eq!(
        shop.pricing.get().quotes(),
        prices + placed,
        "the pricing state counted every quote"
    );

    // The listing a `status` request shows.
    let mut status = Client::connect(server.local_addr()).expect("connect");
    let listing = status.request("status").expect("status");
    for name in [
        "shop_catalog::catalog",
        "shop_pricing::pricing",
        "shop_orders::orders",
    ] {
        assert!(
            listing.contains(&format!("{name}  generation {SWAPS}")),
            "{listing}"
        );
    }
    assert!(
        listing.contains("uses shop_catalog::catalog, shop_pricing::pricing"),
        "{listing}"
    );
    println!("{placed} orders, {prices} prices; replies by (module, version): {versions:?}");
}

/// `catalog` with `price` taking a region too: the interface its callers
/// were compiled against changed.
fn catalog_with_regional_prices() -> String {
    let source = std::fs::read_to_string(
        hotswap_scratch::workspace_root().join("examples/shop/catalog/src/lib.rs"),
    )
    .expect("read the catalog");
    let changed = source.replace(
        "pub fn price(state: &State, sku: &str) -> Option<u64> {",
        "pub fn price(state: &State, sku: &str, region: u32) -> Option<u64> {\n        let _ = region;",
    );
    assert_ne!(
        changed, source,
        "the catalog's `price` is where this test expects it"
    );
    changed
}

/// `catalog` with one more function, `discount`, and where it goes.
fn catalog_with_discounts() -> (String, PathBuf) {
    let root = hotswap_scratch::workspace_root();
    let source = std::fs::read_to_string(root.join("examples/shop/catalog/src/lib.rs"))
        .expect("read the catalog");
    let added = source.replace(
        "    /// Takes `quantity` of `sku` out of stock",
        "    /// The discount on `sku` in percent.\n    pub fn discount(_state: &State, sku: &str) -> u32 {\n        if sku == \"plum\" { 50 } else { 0 }\n    }\n\n    /// Takes `quantity` of `sku` out of stock",
    );
    assert_ne!(
        added, source,
        "the catalog's `reserve` is where this test expects it"
    );
    (
        added,
        root.join("target/hotswap-shop/catalog-with-discounts"),
    )
}

#[test]
fn a_callee_build_that_a_loaded_caller_does_not_fit_is_refused_and_the_callee_keeps_serving() {
    let (stages, shop) = open_shop();
    // A newer catalog adds `discount`, and a newer pricing, built against
    // it, calls it: callers may be built against newer callees than the host.
    let (catalog_source, catalog_crate) = catalog_with_discounts();
    let catalog_dir = ScratchCrate::new(&catalog_crate, "shop-catalog")
        .source(catalog_source.clone())
        .write()
        .expect("write the newer catalog crate");
    let pricing_source = std::fs::read_to_string(hotswap_scratch::workspace_root().join("examples/shop/pricing/src/lib.rs"))
        .unwrap()
        .replace(
            "        state.quotes += 1;\n        Ok((unit * u64::from(quantity), 1))",
            "        let off = u64::from(catalog::HotLink::get().discount(sku));\n        state.quotes += 1;\n        Ok((unit * u64::from(quantity) * (100 - off) / 100, 3))",
        );
    let built = tempfile::tempdir().unwrap();
    let (newer_catalog, newer_pricing) = (
        built.path().join("catalog.so"),
        built.path().join("pricing.so"),
    );
    build_source(Module::Catalog, &catalog_source, None, &newer_catalog)
        .expect("build the newer catalog");
    build_source(
        Module::Pricing,
        &pricing_source,
        Some(&catalog_dir),
        &newer_pricing,
    )
    .expect("build pricing against it");

    // Pricing built against the newer catalog does not fit the serving one.
    stages[&Module::Pricing].put_file(&newer_pricing);
    let error = shop
        .pricing
        .reload()
        .expect_err("the serving catalog has no `discount`");
    let Error::ImportMismatch {
        importer,
        imported,
        function,
        problem,
        ..
    } = &error
    else {
        panic!("not an ImportMismatch: {error}");
    };
    assert_eq!(
        (importer.as_str(), imported.as_str(), function.as_str()),
        ("shop_pricing::pricing", "shop_catalog::catalog", "discount"),
        "{error}"
    );
    assert!(
        problem.starts_with(
            "has no such function (the caller has `fn discount(&State, sku: &str) -> u32`)"
        ),
        "{problem}"
    );

    // Swapped in callee first, then caller: both fit.
    stages[&Module::Catalog].put_file(&newer_catalog);
    shop.catalog
        .reload()
        .expect("a catalog with one more function fits every caller");
    shop.pricing
        .reload()
        .expect("now the catalog has `discount`");
    assert_eq!(
        shop.pricing.get().quote("plum", 4),
        Ok((60, 3)),
        "pricing v3 asks the catalog for its discount"
    );
    assert!(shop
        .orders
        .get()
        .place("plum", 4)
        .expect("order")
        .starts_with("order 1: 4 plum for 60 (pricing v3)"));

    // The catalog cannot go back to a build without `discount` while pricing
    // v3 is loaded: refused before the critical section, naming the caller
    // and the function; the newer catalog serves on, with its state.
    stages[&Module::Catalog].put_file(build(Module::Catalog, 1));
    let error = shop
        .catalog
        .reload()
        .expect_err("pricing v3 calls `discount`");
    let message = error.to_string();
    assert!(
        matches!(&error, Error::ImportMismatch { importer, function, .. } if importer == "shop_pricing::pricing" && function == "discount"),
        "{message}"
    );
    assert!(
        message.contains("module `shop_pricing::pricing` calls `shop_catalog::catalog::discount`"),
        "{message}"
    );
    assert_eq!(shop.catalog.generation(), 1);
    assert_eq!(
        shop.catalog.last_error().map(|error| error.to_string()),
        Some(message)
    );
    assert_eq!(shop.catalog.get().stock("plum").0, INITIAL_STOCK - 4);
    assert_eq!(shop.pricing.get().quote("plum", 2), Ok((30, 3)));

    // Once pricing no longer calls it, the catalog may drop `discount`.
    stages[&Module::Pricing].put_file(build(Module::Pricing, 1));
    shop.pricing.reload().expect("pricing v1");
    shop.catalog
        .reload()
        .expect("no loaded caller calls `discount` any more");
    assert_eq!(shop.catalog.generation(), 2);
    assert_eq!(
        shop.catalog.get().stock("plum").0,
        INITIAL_STOCK - 4,
        "the stock came through every swap"
    );
}

#[test]
fn a_caller_built_against_another_interface_of_its_callee_is_refused() {
    let (stages, shop) = open_shop();
    // A catalog crate with the changed `price`, and pricing built against it.
    let root = hotswap_scratch::workspace_root();
    let catalog = ScratchCrate::new(
        root.join("target/hotswap-shop/catalog-regional"),
        "shop-catalog",
    )
    .source(catalog_with_regional_prices())
    .write()
    .expect("write the changed catalog crate");
    let pricing_source =
        std::fs::read_to_string(root.join("examples/shop/pricing/src/lib.rs")).unwrap();
    let pricing_source = pricing_source.replace(".price(sku)", ".price(sku, 0)");
    let built = tempfile::tempdir().unwrap();
    let library = built.path().join("libshop_pricing.so");
    build_source(Module::Pricing, &pricing_source, Some(&catalog), &library)
        .expect("build pricing against the changed catalog");
    stages[&Module::Pricing].put_file(&library);

    let error = shop
        .pricing
        .reload()
        .expect_err("the serving catalog's `price` takes no region");
    let Error::ImportMismatch {
        importer,
        imported,
        function,
        ..
    } = &error
    else {
        panic!("not an ImportMismatch: {error}");
    };
    assert_eq!(
        (importer.as_str(), imported.as_str(), function.as_str()),
        ("shop_pricing::pricing", "shop_catalog::catalog", "price"),
        "{error}"
    );
    assert_eq!(shop.pricing.generation(), 0);
    assert_eq!(
        shop.pricing.get().quote("apple", 10),
        Ok((500, 1)),
        "version 1 serves on"
    );
}

#[test]
fn modules_opened_without_what_they_call_are_refused_with_what_is_missing() {
    let pricing = build(Module::Pricing, 1);
    let orders = build(Module::Orders, 1);

    // On its own, a module that calls others has nothing to call.
    let error = Pricing::open(pricing).expect_err("no registry");
    assert!(
        matches!(
            error,
            Error::NeedsRegistry {
                module: "pricing",
                ..
            }
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("hot module `shop_catalog::catalog`"),
        "{error}"
    );

    // In a registry, the callee must be open first.
    let registry = Registry::new();
    let error = registry
        .open::<Pricing>(pricing, Options::new())
        .expect_err("no catalog yet");
    let Error::ImportMissing { importer, imported } = &error else {
        panic!("{error}")
    };
    assert_eq!(
        (importer.as_str(), imported.as_str()),
        ("shop_pricing::pricing", "shop_catalog::catalog")
    );

    // And the host must provide the services it calls.
    registry
        .open::<Catalog>(build(Module::Catalog, 1), Options::new())
        .expect("catalog");
    registry
        .open::<Pricing>(pricing, Options::new())
        .expect("pricing, now that the catalog is open");
    let error = registry
        .open::<Orders>(orders, Options::new())
        .expect_err("no services provided");
    let Error::ServiceMissing { module, service } = &error else {
        panic!("{error}")
    };
    assert_eq!(module, "shop_orders::orders");
    assert!(service.starts_with("Store_TO"), "{error}");
    assert!(
        registry.get::<Orders>().is_none(),
        "a refused module is not registered"
    );
}

#[test]
fn dropping_the_shop_unloads_every_module_that_called_or_was_called() {
    let (_stages, shop) = open_shop();
    shop.orders.get().place("pear", 2).expect("order");
    let images: Vec<_> = shop
        .registry
        .list()
        .iter()
        .map(|module| module.serving_image)
        .collect();
    assert_eq!(images.len(), 3);
    assert!(images.iter().all(|image| image.is_mapped()));
    // The registry's linker, each module's link to the modules it calls and
    // each callee's list of callers must not keep one another alive.
    drop(shop);
    for image in images {
        assert!(
            !image.is_mapped(),
            "{image} is still mapped after the shop was dropped"
        );
    }
}

#[test]
fn a_module_is_found_in_its_own_crates_library_not_in_a_callers() {
    // The orders library links pricing and catalog in, and exports their
    // symbols too; it sorts before pricing's own library.
    let dir = tempfile::tempdir().unwrap();
    for module in Module::ALL {
        std::fs::copy(build(module, 1), dir.path().join(module.library_name())).unwrap();
    }
    let registry = Registry::in_directory(dir.path());
    let manual = || Options::new().swap_mode(SwapMode::Manual);
    registry.open_found::<Catalog>(manual()).expect("catalog");
    let pricing = registry.open_found::<Pricing>(manual()).expect("pricing");
    assert_eq!(pricing.path(), dir.path().join("libshop_pricing.so"));
    assert_eq!(pricing.get().quote("pear", 2), Ok((160, 1)));
}
