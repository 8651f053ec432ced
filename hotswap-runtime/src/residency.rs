//! Which files this process has mapped, read from `/proc/self/maps`. The
//! runtime uses it to tell whether a closed library really left the address
//! space; hosts see that through [`FileId::is_mapped`], and this
//! repository's tests through the rest (feature `test-hooks`).
//!
//! Files are identified by device and inode ([`FileId`]), never by path: a
//! path reached through a symbolic link, a renamed or deleted file, and the
//! in-memory files module versions are loaded from (which have no path at
//! all) are all told apart and recognised correctly.

use std::fmt;
use std::os::fd::AsFd;
use std::path::Path;

/// The prefix of the name of every in-memory file (`memfd`) a module
/// version is loaded from: `hotswap:` and the library's file name. In
/// `/proc/self/maps` it reads `/memfd:hotswap:libfoo.so (deleted)`.
pub(crate) const IMAGE_NAME_PREFIX: &str = "hotswap:";

/// A file's identity: the device it is on and its inode number, the two
/// numbers `/proc/self/maps` shows for a mapping and `stat` reports for a
/// file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    major: u32,
    minor: u32,
    inode: u64,
}

impl FileId {
    /// The file at `path`, following symbolic links (`stat`).
    pub fn of_path(path: impl AsRef<Path>) -> std::io::Result<Self> {
        Ok(Self::from_stat(&rustix::fs::stat(path.as_ref())?))
    }

    /// The open file `file` (`fstat`).
    pub fn of_file(file: impl AsFd) -> std::io::Result<Self> {
        Ok(Self::from_stat(&rustix::fs::fstat(file)?))
    }

    fn from_stat(stat: &rustix::fs::Stat) -> Self {
        // `st_dev` is `dev_t` on every Linux target; maps shows its halves.
        #[allow(clippy::useless_conversion)]
        let device = u64::from(stat.st_dev);
        #[allow(clippy::useless_conversion)]
        let inode = u64::from(stat.st_ino);
        Self {
            major: rustix::fs::major(device),
            minor: rustix::fs::minor(device),
            inode,
        }
    }

    /// The device, as its major and minor numbers.
    pub fn device(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// The inode number.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Whether any mapping of this process is backed by this file, read
    /// from `/proc/self/maps` (`false` where it cannot be read): for a
    /// version's image ([`Hot::serving_image`](crate::Hot::serving_image),
    /// [`SwapEvent::StayedResident`](crate::SwapEvent::StayedResident)),
    /// whether that version is still in the address space.
    pub fn is_mapped(self) -> bool {
        is_mapped(self)
    }
}

impl fmt::Display for FileId {
    /// As `/proc/self/maps` shows it: `fd:01 1234567`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x} {}", self.major, self.minor, self.inode)
    }
}

/// A file the process has mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub struct MappedFile {
    /// Which file.
    pub id: FileId,
    /// Its name as the kernel shows it: the path it was mapped from (which
    /// may have been renamed or deleted since; a ` (deleted)` suffix is
    /// removed here), or `/memfd:NAME` for an in-memory file.
    pub name: String,
}

/// Every distinct file the process has mapped, in address order of its
/// first mapping (a library has several mappings; it is listed once).
/// Anonymous mappings and pseudo-files (`[heap]`, `[stack]`, …) are left
/// out. Empty where `/proc` cannot be read.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn mapped_files() -> Vec<MappedFile> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut files: Vec<MappedFile> = Vec::new();
    for mapping in maps.lines().filter_map(parse_mapping) {
        if mapping.name.starts_with('/') && files.iter().all(|file| file.id != mapping.id) {
            files.push(MappedFile {
                id: mapping.id,
                name: mapping
                    .name
                    .strip_suffix(" (deleted)")
                    .unwrap_or(mapping.name)
                    .to_owned(),
            });
        }
    }
    files
}

/// Whether any mapping is backed by `file`.
pub(crate) fn is_mapped(file: FileId) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(parse_mapping)
        .any(|mapping| mapping.id == file)
}

/// Whether any mapping is backed by the file at `path`, however it is
/// reached (through symbolic links, or a hard link of another name).
/// `false` when there is no file at `path`.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn is_path_mapped(path: impl AsRef<Path>) -> bool {
    FileId::of_path(path).is_ok_and(is_mapped)
}

/// The in-memory files of module versions (loaded by any `Hot` or
/// [`inspect::ModuleLibrary`](crate::inspect::ModuleLibrary) of this
/// process) that are still mapped: one per version that is loaded, or that
/// stayed resident after it was closed.
#[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
pub fn mapped_module_images() -> Vec<MappedFile> {
    let prefix = format!("/memfd:{IMAGE_NAME_PREFIX}");
    mapped_files()
        .into_iter()
        .filter(|file| file.name.starts_with(&prefix))
        .collect()
}

/// Where in the address space `address` is mapped from, if from a file.
pub(crate) fn file_at(address: usize) -> Option<FileId> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(parse_mapping)
        .find(|mapping| (mapping.start..mapping.end).contains(&address))
        .filter(|mapping| mapping.id.inode != 0)
        .map(|mapping| mapping.id)
}

/// One line of `/proc/self/maps`.
struct Mapping<'a> {
    start: usize,
    end: usize,
    id: FileId,
    name: &'a str,
}

/// `start-end perms offset major:minor inode   name`: five fields separated
/// by single spaces, then padding and the name (which may contain spaces).
fn parse_mapping(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let (range, _perms, _offset, device, inode) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let (start, end) = range.split_once('-')?;
    let (major, minor) = device.split_once(':')?;
    Some(Mapping {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        id: FileId {
            major: u32::from_str_radix(major, 16).ok()?,
            minor: u32::from_str_radix(minor, 16).ok()?,
            inode: inode.parse().ok()?,
        },
        name: fields.next().unwrap_or("").trim_start(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_this_executable_and_not_a_stranger() {
        let exe = std::env::current_exe().unwrap();
        let id = FileId::of_path(&exe).unwrap();
        assert!(is_mapped(id));
        assert!(is_path_mapped(&exe));
        assert!(mapped_files()
            .iter()
            .any(|file| file.id == id && Path::new(&file.name) == exe));
        // A file of the same directory that is not mapped.
        let stranger = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_path_mapped(stranger.path()));
        assert!(!is_path_mapped("/nonexistent/libnothing.so"));
    }

    #[test]
    fn a_mapped_file_reached_through_a_symlinked_directory_is_recognised() {
        let exe = std::env::current_exe().unwrap();
        let links = tempfile::tempdir().unwrap();
        let linked_dir = links.path().join("linked");
        std::os::unix::fs::symlink(exe.parent().unwrap(), &linked_dir).unwrap();
        let through_link = linked_dir.join(exe.file_name().unwrap());
        assert_ne!(through_link, exe, "another path");
        assert!(is_path_mapped(&through_link));
        // And a hard link of another name, where the file system allows one.
        let hard = links.path().join("hard-link");
        if std::fs::hard_link(&exe, &hard).is_ok() {
            assert!(is_path_mapped(&hard));
        }
    }

    #[test]
    fn finds_the_file_an_address_is_mapped_from() {
        let exe = FileId::of_path(std::env::current_exe().unwrap()).unwrap();
        let here = finds_the_file_an_address_is_mapped_from as fn() as usize;
        assert_eq!(file_at(here), Some(exe));
        let on_heap = Box::new(0u64);
        assert_eq!(file_at(&*on_heap as *const u64 as usize), None);
    }

    #[test]
    fn parses_maps_lines_with_spaces_in_names() {
        let line =
            "7f00-7f10 r-xp 00001000 fd:01 1234                       /tmp/a dir/lib.so (deleted)";
        let mapping = parse_mapping(line).unwrap();
        assert_eq!((mapping.start, mapping.end), (0x7f00, 0x7f10));
        assert_eq!(mapping.id.device(), (0xfd, 1));
        assert_eq!(mapping.id.inode(), 1234);
        assert_eq!(mapping.name, "/tmp/a dir/lib.so (deleted)");
        assert_eq!(mapping.id.to_string(), "fd:01 1234");
        let anonymous = parse_mapping("7f00-7f10 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!(anonymous.name, "");
    }
}
