//! How a `Hot` is set up: [`Options`] and [`SwapMode`].

#[cfg(feature = "test-hooks")]
use std::path::Path;
use std::path::PathBuf;
#[cfg(feature = "test-hooks")]
use std::sync::Arc;
use std::time::Duration;

use crate::serve::swap::BeforeLoad;
use crate::admit::trust::{PublicKey, Sha256Digest, TrustPolicy};

/// Where a detected build is swapped in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SwapMode {
    /// A background thread watches the library file and swaps each new build
    /// in as soon as its writer has finished. Callers never do swap work. A
    /// build that fails for a reason that may pass
    /// ([`Error::is_transient`](crate::Error::is_transient)) is tried again with a growing delay
    /// ([`SwapEvent::Retrying`](crate::SwapEvent::Retrying)).
    #[default]
    Background,
    /// The background thread detects and reads new builds; the first `get()`
    /// that sees one swaps it in (the classic `GetModule` behaviour).
    OnGet,
    /// Nothing is watched: only `reload()` swaps.
    Manual,
}

/// How [`Hot::open_with`](crate::Hot::open_with) sets a module up.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Options {
    pub(crate) swap_mode: SwapMode,
    pub(crate) rebuild_crate: Option<PathBuf>,
    pub(crate) build_profile: Option<String>,
    pub(crate) rebuild_debounce: Option<Duration>,
    pub(crate) trust: TrustPolicy,
    pub(crate) before_load: Option<BeforeLoad>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("swap_mode", &self.swap_mode)
            .field("rebuild_crate", &self.rebuild_crate)
            .field("build_profile", &self.build_profile)
            .field("rebuild_debounce", &self.rebuild_debounce)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Default options: [`SwapMode::Background`] and the default trust
    /// checks (see [`trust`](crate::trust)).
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses where detected builds are swapped in.
    pub fn swap_mode(mut self, mode: SwapMode) -> Self {
        self.swap_mode = mode;
        self
    }

    /// Rebuilds the module crate in `crate_dir` when one of its sources
    /// changes: its `.rs` files, `Cargo.toml` or `Cargo.lock`, anywhere
    /// under `crate_dir` outside target directories.
    ///
    /// A burst of saves is one `cargo build --lib`, run after the sources
    /// have been quiet for a moment (20 ms; see
    /// [`Options::rebuild_debounce`]), in the profile, target directory and
    /// target triple of the library given to [`Hot::open_with`](crate::Hot::open_with), read off
    /// its path (`<target-dir>/<profile>/lib….so`). The built library is
    /// swapped in as the [`SwapMode`] says; with [`SwapMode::Manual`]
    /// nothing is watched and this is ignored.
    ///
    /// Cargo's output reaches the host as [`SwapEvent::Built`](crate::SwapEvent::Built) or
    /// [`SwapEvent::BuildFailed`](crate::SwapEvent::BuildFailed) and in the log. A failed build leaves the
    /// serving version serving and becomes [`Hot::last_error`](crate::Hot::last_error).
    pub fn rebuild_on_save(mut self, crate_dir: impl Into<PathBuf>) -> Self {
        self.rebuild_crate = Some(crate_dir.into());
        self
    }

    /// The cargo profile rebuild on save uses, instead of the one read off
    /// the library's path (needed when the library is not in a cargo target
    /// directory; cargo's default target directory is used then, and the
    /// library cargo builds there is swapped in, while [`Hot::reload`](crate::Hot::reload) and
    /// the watcher keep reading the path given to `open`).
    pub fn build_profile(mut self, profile: impl Into<String>) -> Self {
        self.build_profile = Some(profile.into());
        self
    }

    /// Loads libraries whose file or directory is writable by other users
    /// or owned by another user. Off by default: anyone who can write there
    /// can run code in this process. The same goes for the libraries a
    /// build needs and their directories (see [`trust`](crate::trust)). For
    /// development only; logged as a warning when opening.
    pub fn allow_insecure_files(mut self, allow: bool) -> Self {
        self.trust.check_permissions = !allow;
        self
    }

    /// Loads only builds whose SHA-256 is one of `digests` (in addition to
    /// every other check). Can be given more than once; the sets add up.
    ///
    /// A digest pins the module's bytes only, so a pinned build must not
    /// load anything else from disk: it may have no `DT_RUNPATH` or
    /// `DT_RPATH`, and every library it needs must already be loaded in the
    /// process (link it into the host, or preload it).
    pub fn allow_digests(mut self, digests: impl IntoIterator<Item = Sha256Digest>) -> Self {
        self.trust
            .allowed_digests
            .get_or_insert_with(Default::default)
            .extend(digests);
        self
    }

    /// Loads only builds with a detached signature beside them
    /// ([`trust::signature_path`](crate::trust::signature_path)) that one
    /// of `keys` verifies. Checked before `dlopen`, so an unsigned, changed
    /// or wrongly signed build runs none of its code. Can be given more than
    /// once; the keys add up. As with [`Options::allow_digests`], a signed
    /// build may load nothing else from disk: no `DT_RUNPATH`/`DT_RPATH`,
    /// and every library it needs already loaded.
    pub fn trust_keys(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.trust.keys.extend(keys);
        self
    }

    /// Test hook (feature `test-hooks`): runs after a build passed the
    /// trust checks, right before it is loaded, with the path it was read
    /// from.
    #[doc(hidden)]
    #[cfg(feature = "test-hooks")]
    pub fn __before_load(mut self, hook: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.before_load = Some(Arc::new(hook));
        self
    }

    /// How long the sources must be quiet before rebuild on save builds.
    pub fn rebuild_debounce(mut self, quiet: Duration) -> Self {
        self.rebuild_debounce = Some(quiet);
        self
    }
}

