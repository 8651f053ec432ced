//! Calls that go round: a module's call into the host that calls a module
//! again, and links that would close a cycle between modules. Neither may
//! deadlock: re-entering a module whose state this thread holds is refused
//! with a panic that says so, and a cycle of links is refused at load.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use abi_stable::std_types::{RResult, RString};
use hotswap_runtime::{Error, Options, Registry, SwapMode};
use hotswap_tests::{build_variant, in_child, panic_text, Stage};
use loops::{first, second, Callback, Relay, Relay_TO};

const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the fixture (with `edit`) into `target/hotswap-tests/loops-NAME.so`.
fn build(name: &str, edit: Option<(&str, &str)>) -> PathBuf {
    let dependencies = format!("{}\nabi_stable = \"0.11\"", hotswap_scratch::SERDE);
    build_variant("loops", "loops", name, edit, &dependencies)
}

/// The version of the fixture as it is (a child process finds it built).
fn plain() -> &'static Path {
    static PLAIN: OnceLock<PathBuf> = OnceLock::new();
    PLAIN.get_or_init(|| build("plain", None))
}

/// The host's `Callback`: calls `second::first_count`, and answers with
/// the panic's message if that call panics (a panic must not reach
/// `abi_stable`'s method boundary, which aborts). It holds `second`
/// weakly: a service that owned a module would keep it alive for ever.
struct HostCallback {
    second: Arc<OnceLock<Weak<second::Hot>>>,
}

impl Relay for HostCallback {
    fn relay(&self) -> RResult<u64, RString> {
        let Some(second) = self.second.get().and_then(Weak::upgrade) else {
            return RResult::RErr(RString::from("second is not open"));
        };
        catch_unwind(AssertUnwindSafe(|| second.get().first_count()))
            .map_err(|panic| RString::from(panic_text(panic)))
            .into()
    }
}

struct Opened {
    _stages: [Stage; 2],
    _registry: Registry,
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
    let _ = late.set(Arc::downgrade(&second));
    Opened {
        _stages: stages,
        _registry: registry,
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
    // The callback holds `second` weakly: dropping the host's handles
    // unloads both modules.
    let images = [opened.first.serving_image(), opened.second.serving_image()];
    drop(opened);
    for image in images {
        assert!(!image.is_mapped(), "{image} is still mapped");
    }
}

#[test]
fn a_call_back_into_a_module_from_its_own_swap_is_refused_instead_of_deadlocking() {
    let name = "a_call_back_into_a_module_from_its_own_swap_is_refused_instead_of_deadlocking";
    // A `setup` that asks the host to call back: during a swap, first's new
    // setup runs with first's state locked for the swap.
    let relaying = build(
        "relaying-setup",
        Some((
            "    pub fn setup(prev: Option<State>) -> State {\n        prev.unwrap_or_default()\n    }",
            "    pub fn setup(prev: Option<State>) -> State {\n        if let abi_stable::std_types::RResult::RErr(message) = service::<crate::Callback>().relay() {\n            panic!(\"{message}\");\n        }\n        prev.unwrap_or_default()\n    }",
        )),
    );
    plain();
    let Some(child) = in_child(name, &[], CHILD_TIMEOUT) else {
        let opened = open(plain());
        opened.first.get().bump();
        opened._stages[0].put_file(&relaying);
        let error = opened
            .first
            .reload()
            .expect_err("the callback re-enters first");
        let message = error.to_string();
        assert!(
            message.contains("setup of module `first` panicked")
                && message.contains("re-entrant call of `count`"),
            "{message}"
        );
        // Refused, not hung; the old version took its state back and serves.
        assert_eq!(
            (opened.first.generation(), opened.first.get().count()),
            (0, 1)
        );
        assert_eq!(opened.second.get().first_count(), 1);
        println!("NO DEADLOCK IN A SWAP");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(
        child.output.contains("NO DEADLOCK IN A SWAP"),
        "{}",
        child.output
    );
}

#[test]
fn a_module_awaits_another_modules_async_fn_on_the_version_it_started_on() {
    let name = "a_module_awaits_another_modules_async_fn_on_the_version_it_started_on";
    let hundredfold = build(
        "hundredfold",
        Some(("        x * 10\n", "        x * 100\n")),
    );
    plain();
    let Some(child) = in_child(name, &[], CHILD_TIMEOUT) else {
        let opened = open(plain());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert_eq!(opened.second.get().first_later(0, 4).await, 40);
            let first = opened.first.serving_image();
            // In flight through the link while `first` is swapped...
            let slow = tokio::spawn(opened.second.get().first_later(300, 4));
            tokio::time::sleep(Duration::from_millis(50)).await;
            opened._stages[0].put_file(&hundredfold);
            opened.first.reload().expect("swap first");
            // ...new calls reach the new version...
            assert_eq!(opened.second.get().first_later(0, 4).await, 400);
            assert!(
                first.is_mapped(),
                "the call in flight keeps the old version"
            );
            // ...and the call in flight finishes on the old one, which then
            // unloads.
            assert_eq!(slow.await.expect("no panic"), 40);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while first.is_mapped() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the old version stayed mapped"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        println!("LINKED ASYNC FINISHED ON ITS VERSION");
        return;
    };
    assert!(
        child.status.is_some_and(|status| status.success()),
        "{child:?}"
    );
    assert!(
        child
            .output
            .contains("LINKED ASYNC FINISHED ON ITS VERSION"),
        "{}",
        child.output
    );
}
