//! Calls that go round: a module's call into the host that calls a module
//! again, and links that would close a cycle between modules. Neither may
//! deadlock: re-entering a module whose state this thread holds is refused
//! with a panic that says so, and a cycle of links is refused at load.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use abi_stable::std_types::{RResult, RString};
use hotswap_runtime::{Error, Options, Registry, SwapMode};
use hotswap_scratch::ScratchCrate;
use hotswap_tests::{in_child, Stage};
use loops::{first, second, Callback, Relay, Relay_TO};

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// The fixture's source; `edit` applied, if any.
fn source(edit: Option<(&str, &str)>) -> String {
    let path = hotswap_scratch::workspace_root().join("tests/fixtures/loops/src/lib.rs");
    let source = std::fs::read_to_string(path).expect("read the fixture");
    match edit {
        None => source,
        Some((from, to)) => {
            let edited = source.replace(from, to);
            assert_ne!(edited, source, "the fixture has {from:?}");
            edited
        }
    }
}

/// Builds the fixture (with `edit`) into `target/hotswap-tests/loops-NAME.so`.
/// Builds take turns: every build of `loops` writes the same `libloops.so`.
fn build(name: &str, edit: Option<(&str, &str)>) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let root = hotswap_scratch::workspace_root();
    let built = ScratchCrate::new(root.join("target/hotswap-tests/loops").join(name), "loops")
        .edition("2021")
        .dependencies(format!("{}\nabi_stable = \"0.11\"", hotswap_scratch::SERDE))
        .source(source(edit))
        .build(&root.join("target/hotswap-modules"))
        .unwrap_or_else(|error| panic!("build loops {name}: {error}"));
    let library = root.join(format!("target/hotswap-tests/loops-{name}.so"));
    std::fs::copy(built, &library).expect("copy the build");
    library
}

/// The version of the fixture as it is. A child process (`in_child`)
/// finds it built by its parent: it must not build, while the parent may
/// be building another version into the same file.
fn plain() -> &'static Path {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    PLAIN.get_or_init(|| {
        if std::env::var_os("HOTSWAP_TEST_CHILD").is_some() {
            hotswap_scratch::workspace_root().join("target/hotswap-tests/loops-plain.so")
        } else {
            build("plain", None)
        }
    })
}

/// The host's `Callback`: calls `second::first_count`, and answers with
/// the panic's message if that call panics (a panic must not reach
/// `abi_stable`'s method boundary, which aborts).
struct HostCallback {
    second: Arc<OnceLock<Arc<second::Hot>>>,
}

impl Relay for HostCallback {
    fn relay(&self) -> RResult<u64, RString> {
        let second = self.second.get().expect("second is open");
        catch_unwind(AssertUnwindSafe(|| second.get().first_count()))
            .map_err(|panic| {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                    .unwrap_or_default();
                RString::from(message)
            })
            .into()
    }
}

struct Opened {
    _stages: [Stage; 2],
    registry: Registry,
    first: Arc<first::Hot>,
    second: Arc<second::Hot>,
}

fn open(first_library: &Path) -> Opened {
    let stages = [Stage::with_file(first_library), Stage::with_file(plain())];
    let registry = Registry::new();
    let late = Arc::new(OnceLock::new());
    let callback: Callback = Relay_TO::from_value(
        HostCallback {
            second: late.clone(),
        },
        abi_stable::sabi_trait::TD_Opaque,
    );
    registry.provide(callback).expect("provide the callback");
    let manual = || Options::new().swap_mode(SwapMode::Manual);
    let first = registry
        .open::<first::Hot>(stages[0].path(), manual())
        .expect("open first");
    let second = registry
        .open::<second::Hot>(stages[1].path(), manual())
        .expect("open second");
    let _ = late.set(second.clone());
    Opened {
        _stages: stages,
        registry,
        first,
        second,
    }
}

#[test]
fn a_call_back_into_a_module_this_thread_holds_is_refused_instead_of_deadlocking() {
    let name = "a_call_back_into_a_module_this_thread_holds_is_refused_instead_of_deadlocking";
    // A deadlock would hang: the dangerous part runs in a child process,
    // on the build made here.
    plain();
    let Some(child) = in_child(name, &[], CHILD_TIMEOUT) else {
        let opened = open(plain());
        assert_eq!(opened.first.get().bump(), 1);
        // second -> (link) first: fine, nothing of first is held.
        assert_eq!(opened.second.get().first_count(), 1);
        // second -> host -> second -> (link) first: fine too.
        assert_eq!(opened.second.get().relay(), Ok(1));
        // first (`&mut State`) -> host -> second -> (link) first (`&State`):
        // first's state is borrowed exclusively by the outer call, so the
        // inner call is refused, and says why, instead of waiting for itself.
        let refused = opened
            .first
            .get()
            .bump_and_relay()
            .expect_err("the inner call is refused");
        assert!(
            refused.contains("re-entrant call of `count`") && refused.contains("module `first`"),
            "{refused}"
        );
        // Nothing is left locked, and the outer call's update stands.
        assert_eq!(opened.first.get().count(), 2);
        assert_eq!(opened.second.get().first_count(), 2);
        println!("NO DEADLOCK");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(child.output.contains("NO DEADLOCK"), "{}", child.output);
}

#[test]
fn a_swap_that_would_close_a_cycle_of_links_is_refused() {
    // `first` calling `second`, which calls `first`: two calls going round
    // in opposite directions could each wait for the other's state.
    let cyclic = build(
        "cyclic",
        Some((
            "#[hot_module(services(crate::Callback))]\npub mod first {",
            "#[hot_module(uses(crate::second), services(crate::Callback))]\npub mod first {",
        )),
    );
    let opened = open(plain());
    opened.first.get().bump();
    opened._stages[0].put_file(&cyclic);
    let error = opened
        .first
        .reload()
        .expect_err("first would call second, which calls first");
    let Error::ImportCycle { importer, imported } = &error else {
        panic!("not an ImportCycle: {error}")
    };
    assert_eq!(
        (importer.as_str(), imported.as_str()),
        ("loops::first", "loops::second")
    );
    assert!(
        error.to_string().contains("must not go round in a cycle"),
        "{error}"
    );
    assert_eq!(
        (opened.first.generation(), opened.first.get().count()),
        (0, 1),
        "first serves on"
    );
    assert_eq!(opened.second.get().first_count(), 1);

    // Opened in a registry where `second` is not, the same build links.
    let alone = Registry::new();
    let stage = Stage::with_file(&cyclic);
    let error = alone
        .open::<first::Hot>(stage.path(), Options::new().swap_mode(SwapMode::Manual))
        .expect_err("second is not open there");
    assert!(
        matches!(&error, Error::ImportMissing { imported, .. } if imported == "loops::second"),
        "{error}"
    );
    drop(opened.registry);
}
