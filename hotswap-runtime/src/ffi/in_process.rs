//! What the process's dynamic loader already has loaded: a library found
//! the way `ld.so` reuses one for a `DT_NEEDED` entry, held open, and what
//! its dynamic section says (read in memory through `dlinfo`). The queries
//! behind [`admit::deps`](crate::admit::deps); they load nothing.

use std::ffi::{c_char, c_void, CStr};

use libloading::os::unix::{Library as RawLibrary, RTLD_LAZY};
use object::elf;

/// A library already in the process, held open so that it stays there
/// until the module that needs it is loaded (closed on drop).
#[derive(Debug)]
pub(crate) struct Pin {
    _handle: RawLibrary,
}

/// The library `name` if it is already loaded, under a name `ld.so` would
/// reuse for a `DT_NEEDED` entry `name`: its `DT_SONAME` or its path.
pub(crate) fn pin_loaded(name: &str) -> Option<Pin> {
    // SAFETY: with RTLD_NOLOAD, dlopen loads nothing: it returns another
    // reference to a library already in the process (whose initializers ran
    // long ago), found by ld.so's own lookup, or fails.
    let library = unsafe { RawLibrary::open(Some(name), RTLD_LAZY | libc::RTLD_NOLOAD) }.ok()?;
    let handle = library.into_raw();
    // SAFETY: `handle` is a live dlopen handle; it is closed only below.
    let object = unsafe { describe(handle) };
    // SAFETY: `handle` came from `into_raw` just above, and is owned again.
    let library = unsafe { RawLibrary::from_raw(handle) };
    // Without a name match, RTLD_NOLOAD may have found the library on disk
    // (by the caller's search path) and matched its inode: not what ld.so
    // does for the module's own entry, so not counted.
    let object = object?;
    (object.soname.as_deref() == Some(name) || object.path == name.as_bytes())
        .then_some(Pin { _handle: library })
}

/// What the process's loader knows about one loaded object.
#[derive(Default)]
pub(crate) struct InProcess {
    /// The path it was loaded from (empty for the executable).
    pub path: Vec<u8>,
    pub soname: Option<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// `struct link_map` of `<link.h>`: its public first fields.
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const c_char,
    l_ld: *const RawDyn,
}

/// `Elf64_Dyn`.
#[repr(C)]
struct RawDyn {
    tag: i64,
    value: u64,
}

/// The loaded object behind a dlopen handle, read from its dynamic
/// section in memory.
///
/// # Safety
/// `handle` is a live handle from `dlopen`.
unsafe fn describe(handle: *mut c_void) -> Option<InProcess> {
    let mut map: *const LinkMap = std::ptr::null();
    // SAFETY: RTLD_DI_LINKMAP writes one `struct link_map *` to the pointer.
    let status = unsafe { libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, (&raw mut map).cast()) };
    if status != 0 || map.is_null() {
        return None;
    }
    // SAFETY: the link map of a loaded object stays valid while the handle
    // is open; its first three fields are public ABI.
    let map = unsafe { &*map };
    let mut object = InProcess::default();
    if !map.l_name.is_null() {
        // SAFETY: `l_name` is a NUL-terminated string owned by the loader.
        object.path = unsafe { CStr::from_ptr(map.l_name) }.to_bytes().to_vec();
    }
    if map.l_ld.is_null() {
        return Some(object);
    }
    let (mut strtab, mut strings) = (None, Vec::new());
    let mut entry = map.l_ld;
    loop {
        // SAFETY: the dynamic section of a loaded object, which ends with a
        // DT_NULL entry.
        let RawDyn { tag, value } = unsafe { entry.read() };
        match elf::DynamicTag(tag) {
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(value),
            tag @ (elf::DT_SONAME | elf::DT_RPATH | elf::DT_RUNPATH) => strings.push((tag, value)),
            _ => {}
        }
        // SAFETY: not past DT_NULL yet.
        entry = unsafe { entry.add(1) };
    }
    let strtab = strtab?;
    // glibc relocates the address entries of a writable dynamic section in
    // place (x86-64, aarch64); a read-only one (riscv, the vDSO) keeps
    // link-time addresses, which lie below the load address.
    let base = map.l_addr as u64;
    let strtab = if strtab < base { strtab + base } else { strtab };
    for (tag, offset) in strings {
        // SAFETY: an offset into the loaded object's string table, which is
        // mapped and NUL-terminates its strings.
        let text = unsafe { CStr::from_ptr((strtab + offset) as usize as *const c_char) };
        let Ok(text) = text.to_str() else { continue };
        match tag {
            elf::DT_SONAME => object.soname = Some(text.to_owned()),
            elf::DT_RPATH => object.rpath.extend(text.split(':').map(str::to_owned)),
            _ => object.runpath.extend(text.split(':').map(str::to_owned)),
        }
    }
    if !object.runpath.is_empty() {
        // As ld.so: DT_RPATH is ignored beside DT_RUNPATH.
        object.rpath.clear();
    }
    Some(object)
}

/// The executable: its `DT_RPATH` applies to every lookup whose requester
/// has no `DT_RUNPATH`.
pub(crate) fn main_program() -> InProcess {
    // SAFETY: dlopen(NULL) returns a handle to the executable, loads
    // nothing.
    let Ok(library) = (unsafe { RawLibrary::open(None::<&str>, RTLD_LAZY) }) else {
        return InProcess::default();
    };
    let handle = library.into_raw();
    // SAFETY: a live handle, closed below.
    let object = unsafe { describe(handle) };
    // SAFETY: from `into_raw` just above.
    drop(unsafe { RawLibrary::from_raw(handle) });
    object.unwrap_or_default()
}
