//! One registry for every hot module of a host: modules found in a
//! directory or opened by path, each with its own options; got by type for
//! calls and listed by name for tooling, with their generations, last
//! errors, libraries and mapped versions.

use hotswap_runtime::{Error, Options, Registry, SwapMode};
use hotswap_tests::{library, Fixture, Stage};

fn manual() -> Options {
    Options::new().swap_mode(SwapMode::Manual)
}

#[test]
fn a_registry_holds_modules_of_two_crates_by_type_and_by_name() {
    let stage = Stage::with(Fixture::V1);
    let modules = Registry::in_directory(stage.dir());
    // Found in the directory by its exported symbol, nothing loaded to look.
    let counter = modules
        .open_found::<counter::counter::Hot>(manual())
        .unwrap();
    // Opened by path, two modules of one library, each with its own options.
    let greeter_lib = library(Fixture::Greeter);
    modules
        .open::<greeter::greeting::Hot>(&greeter_lib, manual())
        .unwrap();
    modules
        .open::<greeter::counter::Hot>(&greeter_lib, Options::new())
        .unwrap();

    // By type, for calls: the very `Hot` that was opened.
    counter.get().increment(5);
    let again = modules.get::<counter::counter::Hot>().unwrap();
    assert_eq!(again.get().count(), 5);
    assert_eq!(
        modules
            .get::<greeter::greeting::Hot>()
            .unwrap()
            .get()
            .greet("registry"),
        "greetings, registry"
    );
    assert_eq!(
        modules.get::<greeter::counter::Hot>().unwrap().get().add(4),
        4
    );

    // By name, for tooling: every module, in the order added.
    let names: Vec<String> = modules.list().into_iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        ["counter::counter", "greeter::greeting", "greeter::counter"]
    );
    // Two crates have a module `counter`: the bare name is ambiguous.
    assert!(modules.status("counter").is_none());
    assert!(modules.status("greeting").is_some());
    let status = modules.status("counter::counter").unwrap();
    assert_eq!(status.library, stage.path());
    assert_eq!((status.generation, status.mapped_versions), (0, 1));
    assert!(status.last_error.is_none());

    // A swap and a refused swap show up in the listing.
    stage.put(Fixture::V2);
    counter.reload().unwrap();
    assert_eq!(counter.get().version(), 2);
    stage.put(Fixture::ChangedSignature);
    counter.reload().unwrap_err();
    let status = modules.status("counter::counter").unwrap();
    assert_eq!(status.generation, 1);
    assert_eq!(status.serving_image, counter.serving_image());
    let error = status.last_error.as_ref().expect("the refused swap");
    assert!(matches!(error, Error::SignatureChanged { .. }), "{error}");
    let line = status.to_string();
    assert!(
        line.starts_with("counter::counter  generation 1  "),
        "{line}"
    );
    assert!(line.contains("last error: "), "{line}");
    // The retired version 1 left: only the serving one is mapped.
    assert_eq!(status.mapped_versions, 1, "{line}");

    // A module is in the registry once.
    let twice = modules.open::<counter::counter::Hot>(stage.path(), manual());
    assert!(matches!(twice, Err(Error::AlreadyRegistered { .. })));
    assert_eq!(
        modules
            .get::<counter::counter::Hot>()
            .unwrap()
            .get()
            .count(),
        5
    );
}

#[test]
fn a_guard_held_across_a_swap_counts_as_a_mapped_version_until_it_drops() {
    let stage = Stage::with(Fixture::V1);
    let modules = Registry::new();
    let counter = modules
        .open::<counter::counter::Hot>(stage.path(), manual())
        .unwrap();
    let held = counter.get();
    stage.put(Fixture::V2);
    counter.reload().unwrap();
    assert_eq!(held.version(), 1);
    assert_eq!(
        modules.status("counter::counter").unwrap().mapped_versions,
        2
    );
    drop(held);
    assert_eq!(
        modules.status("counter::counter").unwrap().mapped_versions,
        1
    );
}

#[test]
fn a_module_not_in_the_directory_is_named_in_the_error() {
    let empty = tempfile::tempdir().unwrap();
    let modules = Registry::in_directory(empty.path());
    let error = modules
        .open_found::<counter::counter::Hot>(manual())
        .unwrap_err();
    assert!(matches!(error, Error::NotInDirectory { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("`counter`") && message.contains("__hotswap_module__counter__counter"),
        "{message}"
    );
    let error = Registry::new()
        .open_found::<counter::counter::Hot>(manual())
        .unwrap_err();
    assert!(matches!(error, Error::NoDirectory { .. }), "{error}");
    assert!(modules.list().is_empty());
}
