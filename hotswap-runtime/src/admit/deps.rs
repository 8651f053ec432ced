//! What `dlopen` would load along with a module: the libraries it needs
//! (`DT_NEEDED`), found where the dynamic loader would find them, and
//! checked by the same policy as the module, on the bytes, before anything
//! is loaded.
//!
//! A library already in the process is recognized the way `ld.so` itself
//! recognizes it (it reuses a loaded object whose `DT_SONAME`, or whose
//! path, equals the needed name), and it is held open
//! ([`Pin`]) until the module is loaded, so it cannot be unloaded in
//! between and be looked for on disk after all. `/proc/self/maps` would
//! not do: it shows the files' resolved paths (`libfoo.so.1.2.3`, not
//! `libfoo.so.1`), and a library that merely has the right file name is not
//! one `ld.so` would reuse.
//!
//! A library that is not loaded is looked for like `ld.so` does, approximately
//! (see [`trust`](crate::trust) for what is and is not covered).

use std::collections::HashSet;
use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader};
use object::Endianness;

use crate::admit::integrity::check_shared_library;
use crate::ffi::in_process::{main_program, pin_loaded, InProcess, Pin};
use crate::admit::files::{containing_directories, permissions};
pub(crate) use crate::problem::names_origin;
use crate::problem::TrustProblem;

/// What a library's dynamic section says about the libraries it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dynamic {
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// The entries of `DT_RPATH`.
    pub rpath: Vec<String>,
    /// The entries of `DT_RUNPATH`.
    pub runpath: Vec<String>,
}

impl Dynamic {
    /// Reads the dynamic section through the program headers (`PT_DYNAMIC`,
    /// its string table found through `PT_LOAD`), as `ld.so` does: section
    /// headers may be stripped or lie.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file = ElfFile64::<Endianness>::parse(bytes).map_err(|error| error.to_string())?;
        let endian = file.endian();
        let headers = file.elf_program_headers();
        let mut entries: &[elf::Dyn64<Endianness>] = &[];
        for header in headers {
            if let Some(found) = header
                .dynamic(endian, bytes)
                .map_err(|error| error.to_string())?
            {
                entries = found;
                break;
            }
        }
        let (mut strtab, mut strsz, mut strings) = (None, None, Vec::new());
        for entry in entries {
            match entry.tag(endian) {
                elf::DT_NULL => break,
                elf::DT_STRTAB => strtab = Some(entry.val(endian)),
                elf::DT_STRSZ => strsz = Some(entry.val(endian)),
                tag @ (elf::DT_NEEDED | elf::DT_RPATH | elf::DT_RUNPATH) => {
                    strings.push((tag, entry.val(endian)));
                }
                _ => {}
            }
        }
        let mut dynamic = Self::default();
        if strings.is_empty() {
            return Ok(dynamic);
        }
        let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
            return Err("its dynamic section has no string table".to_owned());
        };
        let table = headers
            .iter()
            .filter(|header| header.p_type(endian) == elf::PT_LOAD)
            .find_map(|header| {
                header
                    .data_range(endian, bytes, strtab, strsz)
                    .ok()
                    .flatten()
            })
            .ok_or_else(|| {
                format!(
                    "its dynamic string table ({strsz} bytes at {strtab:#x}) is not in the file"
                )
            })?;
        for (tag, offset) in strings {
            let text = usize::try_from(offset)
                .ok()
                .and_then(|offset| table.get(offset..))
                .and_then(|rest| CStr::from_bytes_until_nul(rest).ok())
                .ok_or_else(|| {
                    format!("a dynamic entry names string {offset}, outside the string table")
                })?
                .to_str()
                .map_err(|_| format!("dynamic string {offset} is not UTF-8"))?;
            match tag {
                elf::DT_NEEDED => dynamic.needed.push(text.to_owned()),
                elf::DT_RPATH => dynamic.rpath.extend(text.split(':').map(str::to_owned)),
                _ => dynamic.runpath.extend(text.split(':').map(str::to_owned)),
            }
        }
        Ok(dynamic)
    }

    /// The `DT_RPATH` entries `ld.so` uses: none when there is a
    /// `DT_RUNPATH`.
    fn effective_rpath(&self) -> &[String] {
        if self.runpath.is_empty() {
            &self.rpath
        } else {
            &[]
        }
    }

    /// Every search path entry, with its tag's name.
    pub(crate) fn search_path(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let rpath = self.rpath.iter().map(|entry| ("DT_RPATH", entry.as_str()));
        let runpath = self
            .runpath
            .iter()
            .map(|entry| ("DT_RUNPATH", entry.as_str()));
        runpath.chain(rpath)
    }
}


/// Admits the libraries a build needs, under the default permission
/// checks: each one not already loaded must be found where `ld.so` would
/// look, and it, its directory, and what it needs in turn must pass the
/// same checks as the module. Returns the already loaded ones, pinned.
pub(crate) fn admit_from_disk(module: &Dynamic) -> Result<Vec<Pin>, TrustProblem> {
    let executable = std::env::current_exe().ok();
    let mut walk = Walk {
        pins: Vec::new(),
        visited: HashSet::new(),
        main: main_program(),
        executable_dir: executable
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned),
        library_path: initial_library_path(),
        system: system_directories(Path::new("/etc/ld.so.conf")),
    };
    walk.object(module, None, &[])?;
    Ok(walk.pins)
}

/// One object's effective `DT_RPATH` and the directory its `$ORIGIN`
/// stands for (`None` for the module: it is loaded from an in-memory
/// file, so its `$ORIGIN` is `/proc/self/fd`).
type RpathLevel<'a> = (&'a [String], Option<&'a Path>);

struct Walk {
    pins: Vec<Pin>,
    visited: HashSet<PathBuf>,
    main: InProcess,
    executable_dir: Option<PathBuf>,
    library_path: Vec<String>,
    system: Vec<PathBuf>,
}

/// Where a needed library is looked for.
enum SearchDir {
    Dir(PathBuf),
    /// A `$ORIGIN` entry of the module: `/proc/self/fd`, where its
    /// in-memory file is and no dependency is.
    ModuleOrigin(String),
}

impl Walk {
    /// Admits what `dynamic` (of the library at `this`, or of the module
    /// when `None`) needs. `ancestors` are the RPATH levels of the libraries
    /// that led here, nearest first.
    fn object(
        &mut self,
        dynamic: &Dynamic,
        this: Option<&Path>,
        ancestors: &[RpathLevel<'_>],
    ) -> Result<(), TrustProblem> {
        let origin = this.and_then(Path::parent);
        let mut levels = vec![(dynamic.effective_rpath(), origin)];
        levels.extend_from_slice(ancestors);
        for name in &dynamic.needed {
            if let Some(pin) = pin_loaded(name) {
                self.pins.push(pin);
                continue;
            }
            let needed_by = this.map(Path::to_owned);
            let refuse = |problem| TrustProblem::InsecureDependency {
                library: name.clone(),
                needed_by: needed_by.clone(),
                problem: Box::new(problem),
            };
            let dirs = self.search_dirs(name, dynamic, origin, &levels)?;
            let mut found = Vec::new();
            let mut origin_entry = None;
            for dir in dirs {
                let dir = match dir {
                    SearchDir::Dir(dir) => dir,
                    SearchDir::ModuleOrigin(entry) => {
                        origin_entry.get_or_insert(entry);
                        continue;
                    }
                };
                for candidate in candidates(&dir, name) {
                    if let Some(bytes) = checked_file(&candidate).map_err(refuse)? {
                        found.push((candidate, bytes));
                    }
                }
                if !found.is_empty() {
                    break;
                }
            }
            if found.is_empty() {
                return Err(match origin_entry {
                    Some(entry) => TrustProblem::OriginNotFound {
                        library: name.clone(),
                        entry,
                    },
                    None => TrustProblem::DependencyNotFound {
                        library: name.clone(),
                        needed_by,
                    },
                });
            }
            for (path, bytes) in found {
                if !self.visited.insert(path.clone()) {
                    continue;
                }
                let needs = Dynamic::parse(&bytes).map_err(|detail| {
                    TrustProblem::DependencyUnreadable {
                        path: path.clone(),
                        detail,
                    }
                })?;
                self.object(&needs, Some(&path), &levels)?;
            }
        }
        Ok(())
    }

    /// The directories `ld.so` searches for `name`, needed by the object
    /// with `dynamic` and `origin`, in its order: DT_RPATH of the object
    /// and the objects that led to it, then of the executable (all of these
    /// only when the object has no DT_RUNPATH), LD_LIBRARY_PATH, the
    /// object's DT_RUNPATH, then the system directories.
    fn search_dirs(
        &self,
        name: &str,
        dynamic: &Dynamic,
        origin: Option<&Path>,
        levels: &[RpathLevel<'_>],
    ) -> Result<Vec<SearchDir>, TrustProblem> {
        if name.contains('/') {
            // Opened as is, no search.
            let path = Path::new(name);
            let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
            return Ok(vec![SearchDir::Dir(
                dir.unwrap_or(Path::new(".")).to_owned(),
            )]);
        }
        let executable = self
            .executable_dir
            .as_deref()
            .map_or(Origin::Unknown, Origin::Dir);
        let mut dirs = Vec::new();
        let mut add = |entries: &[String], origin: Origin<'_>| {
            for entry in entries {
                dirs.push(expand(entry, origin)?);
            }
            Ok::<_, TrustProblem>(())
        };
        if dynamic.runpath.is_empty() {
            for (rpath, origin) in levels {
                add(rpath, Origin::of(*origin))?;
            }
            add(&self.main.rpath, executable)?;
        }
        add(&self.library_path, executable)?;
        add(&dynamic.runpath, Origin::of(origin))?;
        dirs.extend(self.system.iter().cloned().map(SearchDir::Dir));
        Ok(dirs)
    }
}

/// What `$ORIGIN` stands for in a search path entry.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// The module's: `/proc/self/fd`, where its in-memory file is.
    Module,
    Dir(&'a Path),
    Unknown,
}

impl<'a> Origin<'a> {
    /// The origin of a library at `dir`, or of the module when `None`.
    fn of(dir: Option<&'a Path>) -> Self {
        dir.map_or(Self::Module, Self::Dir)
    }
}

/// The directory a search path entry names.
fn expand(entry: &str, origin: Origin<'_>) -> Result<SearchDir, TrustProblem> {
    if names_origin(entry) {
        match origin {
            Origin::Module => return Ok(SearchDir::ModuleOrigin(entry.to_owned())),
            Origin::Dir(dir) => {
                let dir = dir.to_string_lossy();
                let expanded = entry.replace("${ORIGIN}", &dir).replace("$ORIGIN", &dir);
                return expand(&expanded, Origin::Unknown);
            }
            Origin::Unknown => {}
        }
    }
    if entry.contains('$') {
        return Err(TrustProblem::UnknownSearchPath {
            entry: entry.to_owned(),
        });
    }
    // An empty entry is the current directory.
    Ok(SearchDir::Dir(PathBuf::from(if entry.is_empty() {
        "."
    } else {
        entry
    })))
}

/// The files `ld.so` may take for `name` in `dir`: one of the
/// `glibc-hwcaps` subdirectories it picks by CPU, or `dir/name`. All of them
/// are checked.
fn candidates(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("glibc-hwcaps"))
        .into_iter()
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path().join(name)))
        .collect();
    found.sort();
    found.push(dir.join(name));
    found
}

/// The bytes of `candidate` once it, and the directories it is in, passed
/// the permission checks. `Ok(None)` when `ld.so` would pass it by: missing,
/// unreadable, or not a library for this machine (any existing file is
/// checked first, so a file this parser rejects but `ld.so` takes was
/// checked all the same).
fn checked_file(candidate: &Path) -> Result<Option<Vec<u8>>, TrustProblem> {
    let Ok(resolved) = candidate.canonicalize() else {
        return Ok(None);
    };
    let Ok(mut file) = File::open(&resolved) else {
        return Ok(None);
    };
    let Ok(metadata) = file.metadata() else {
        return Ok(None);
    };
    if !metadata.is_file() {
        return Ok(None);
    }
    permissions(candidate, &metadata)?;
    let directories = containing_directories(candidate, &resolved).map_err(|error| {
        TrustProblem::DependencyUnreadable {
            path: candidate.to_owned(),
            detail: error.to_string(),
        }
    })?;
    for (directory, metadata) in &directories {
        permissions(directory, metadata)?;
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    if file.read_to_end(&mut bytes).is_err() {
        return Ok(None);
    }
    Ok(check_shared_library(&bytes).is_ok().then_some(bytes))
}

/// LD_LIBRARY_PATH as `ld.so` read it when the process started (setting it
/// later changes nothing for the loader): from `/proc/self/environ`.
fn initial_library_path() -> Vec<String> {
    let value = std::fs::read("/proc/self/environ")
        .ok()
        .and_then(|environ| {
            environ.split(|&byte| byte == 0).find_map(|variable| {
                variable
                    .strip_prefix(b"LD_LIBRARY_PATH=")
                    .map(<[u8]>::to_vec)
            })
        })
        .or_else(|| std::env::var_os("LD_LIBRARY_PATH").map(|value| value.as_bytes().to_vec()));
    match value {
        // ld.so splits it at colons and semicolons.
        Some(value) if !value.is_empty() => String::from_utf8_lossy(&value)
            .split([':', ';'])
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Where `ld.so` looks last: the directories of its cache, approximated by
/// those `conf` (`/etc/ld.so.conf`) lists, then the built-in ones.
fn system_directories(conf: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_ld_so_conf(conf, &mut dirs, 0);
    let triplet = match std::env::consts::ARCH {
        "x86_64" => Some("x86_64-linux-gnu"),
        "aarch64" => Some("aarch64-linux-gnu"),
        "riscv64" => Some("riscv64-linux-gnu"),
        _ => None,
    };
    for prefix in ["/lib", "/usr/lib"] {
        if let Some(triplet) = triplet {
            dirs.push(Path::new(prefix).join(triplet));
        }
    }
    for dir in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(dir));
    }
    let mut seen = HashSet::new();
    dirs.retain(|dir| seen.insert(dir.clone()));
    dirs
}

/// The directories of an `ld.so.conf`, following `include` lines (whose
/// patterns may use `*` in their last component).
fn read_ld_so_conf(conf: &Path, dirs: &mut Vec<PathBuf>, depth: u32) {
    let Ok(text) = std::fs::read_to_string(conf) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            if depth < 8 {
                for included in glob(conf, pattern.trim()) {
                    read_ld_so_conf(&included, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            dirs.push(PathBuf::from(line));
        }
    }
}

/// The files a `*` pattern names, relative to the directory of `conf` when
/// relative, sorted.
fn glob(conf: &Path, pattern: &str) -> Vec<PathBuf> {
    let pattern = conf.parent().unwrap_or(Path::new("/")).join(pattern);
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some((prefix, suffix)) = name.split_once('*') else {
        return vec![pattern.clone()];
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let file = entry.ok()?.file_name();
            let file = file.to_str()?;
            (file.len() >= prefix.len() + suffix.len()
                && file.starts_with(prefix)
                && file.ends_with(suffix))
            .then(|| dir.join(file))
        })
        .collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_test_binary_needs() {
        let bytes = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let dynamic = Dynamic::parse(&bytes).unwrap();
        assert!(
            dynamic.needed.iter().any(|name| name == "libc.so.6"),
            "{dynamic:?}"
        );
        assert!(Dynamic::parse(b"not an ELF file").is_err());
    }

    #[test]
    fn loaded_libraries_are_recognized_by_soname_or_path() {
        assert!(pin_loaded("libc.so.6").is_some());
        assert!(pin_loaded("libhotswap-nowhere.so.1").is_none());
        // A file name ld.so would not reuse the loaded library for.
        assert!(pin_loaded("/nonexistent/libc.so.6").is_none());
    }

    #[test]
    fn origin_expands_for_dependencies_and_not_for_the_module() {
        let lib = Path::new("/opt/app/lib");
        assert!(matches!(
            expand("$ORIGIN/../deps", Origin::Dir(lib)),
            Ok(SearchDir::Dir(dir)) if dir == Path::new("/opt/app/lib/../deps")
        ));
        assert!(matches!(
            expand("${ORIGIN}", Origin::Module),
            Ok(SearchDir::ModuleOrigin(entry)) if entry == "${ORIGIN}"
        ));
        assert!(matches!(
            expand("/usr/$LIB", Origin::Dir(lib)),
            Err(TrustProblem::UnknownSearchPath { .. })
        ));
        assert!(
            matches!(expand("", Origin::Module), Ok(SearchDir::Dir(dir)) if dir == Path::new("."))
        );
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("ld.so.conf"),
            "# comment\n/opt/first\ninclude conf.d/*.conf\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("conf.d/b.conf"), "/opt/b # trailing\n").unwrap();
        std::fs::write(dir.path().join("conf.d/a.conf"), "/opt/a\n").unwrap();
        std::fs::write(dir.path().join("conf.d/ignored.txt"), "/opt/no\n").unwrap();
        let dirs = system_directories(&dir.path().join("ld.so.conf"));
        let expected: Vec<PathBuf> = ["/opt/first", "/opt/a", "/opt/b"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(dirs[..3], expected[..], "{dirs:?}");
        assert!(dirs.contains(&PathBuf::from("/usr/lib")));
    }
}
