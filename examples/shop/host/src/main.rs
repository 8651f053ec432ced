//! The shop, unattended: builds version 1 of its three modules, serves
//! them on a loopback port and places orders; then builds version 2 of
//! each module in turn while serving, which the runtime notices and swaps
//! in by itself, one module at a time, while the others keep calling it;
//! and places orders again over the same connection. The `status` request
//! lists what the process has loaded.
//!
//! With `--serve`, it keeps serving afterwards: connect with
//! `nc 127.0.0.1 PORT` and send `status`.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hotswap_runtime::{Options, SwapEvent};
use hotswap_shop::{Client, Module, Shop, Version, build_module, serve};

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let keep_serving = std::env::args().skip(1).any(|arg| arg == "--serve");
    let serving = hotswap_scratch::workspace_root().join("target/hotswap-shop/serving");
    let libraries: BTreeMap<Module, PathBuf> = Module::ALL
        .iter()
        .map(|&module| (module, serving.join(module.library_name())))
        .collect();

    for (&module, library) in &libraries {
        println!("building version 1 of {} ...", module.package());
        build_module(module, Version::V1, library)?;
    }
    // Each module watches its library and swaps a new build in by itself.
    let shop = Arc::new(Shop::open(&libraries, Options::new)?);
    let server = serve(shop.clone())?;
    println!("serving on {}", server.local_addr());
    let mut client = Client::connect(server.local_addr())?;
    client.talk(&[
        "status",
        "price apple 12",
        "order apple 12",
        "order pear 2",
        "stock apple",
    ])?;

    for module in Module::ALL {
        let events = match module {
            Module::Catalog => shop.catalog.subscribe(),
            Module::Pricing => shop.pricing.subscribe(),
            Module::Orders => shop.orders.subscribe(),
        };
        println!(
            "building version 2 of {} while serving ...",
            module.package()
        );
        build_module(module, Version::V2, &libraries[&module])?;
        loop {
            match events.recv_timeout(Duration::from_secs(120))? {
                SwapEvent::Swapped { timings, .. } => {
                    println!(
                        "swapped in version 2 of {} in {:?}",
                        module.package(),
                        timings.total
                    );
                    break;
                }
                SwapEvent::Refused { error, .. } => return Err(error.into()),
                _ => continue,
            }
        }
        client.talk(&["price apple 12", "order apple 12", "stock apple"])?;
    }
    client.talk(&["status"])?;

    if keep_serving {
        println!("serving on {} until stopped", server.local_addr());
        loop {
            std::thread::park();
        }
    }
    client.talk(&["quit"])?;
    Ok(())
}
