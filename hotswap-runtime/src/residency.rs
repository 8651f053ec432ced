//! Diagnostics: which files this process has mapped, read from
//! `/proc/self/maps`. The runtime uses it to tell whether a closed library
//! really left the address space; hosts and tests can use it to watch for
//! versions that stay resident.

use std::path::Path;

/// The pathnames of the process's file-backed mappings, one per mapping (a
/// library has several). A deleted file keeps its name with a ` (deleted)`
/// suffix, which is removed here. Empty where `/proc` cannot be read.
pub fn mapped_paths() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        // Five space-separated fields, then padding and the pathname.
        .filter_map(|line| line.splitn(6, ' ').nth(5))
        .map(str::trim_start)
        .filter(|name| name.starts_with('/'))
        .map(|name| name.strip_suffix(" (deleted)").unwrap_or(name).to_owned())
        .collect()
}

/// Whether any mapping is backed by `path`.
pub fn is_mapped(path: &Path) -> bool {
    mapped_paths().iter().any(|name| Path::new(name) == path)
}

/// How many distinct files under `dir` are mapped.
pub fn mapped_files_under(dir: &Path) -> usize {
    let mut files: Vec<String> = mapped_paths()
        .into_iter()
        .filter(|name| Path::new(name).starts_with(dir))
        .collect();
    files.sort_unstable();
    files.dedup();
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_this_executable_and_not_a_stranger() {
        let exe = std::env::current_exe().unwrap();
        assert!(is_mapped(&exe));
        assert!(!is_mapped(Path::new("/nonexistent/libnothing.so")));
        assert_eq!(mapped_files_under(exe.parent().unwrap()), 1);
    }
}
