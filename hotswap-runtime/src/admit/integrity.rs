//! Is a file a complete shared library for this machine, and which hot
//! modules does it export? Read from the bytes before they are loaded.
//!
//! `dlopen` maps a truncated library without complaint (the pages past the
//! end of the file fault with SIGBUS only when touched), so a half-written
//! build must be caught here, not by the loader.

use std::path::Path;

use object::read::elf::ElfFile64;
use object::{Architecture, Endianness, Object, ObjectKind, ObjectSegment, ObjectSymbol};

use crate::abi::SYMBOL_PREFIX;
use crate::error::Error;

/// [`check_shared_library`], as the error that names `source`.
pub(crate) fn check_loadable(source: &Path, bytes: &[u8]) -> Result<(), Error> {
    check_shared_library(bytes).map_err(|detail| Error::Malformed {
        path: source.to_owned(),
        detail,
    })
}

/// The names of the module headers the library exports: its defined
/// dynamic symbols named like one, in symbol table order. Empty for bytes
/// that are not an ELF file.
pub(crate) fn module_symbols(bytes: &[u8]) -> Vec<String> {
    let Ok(elf) = ElfFile64::<Endianness>::parse(bytes) else {
        return Vec::new();
    };
    elf.dynamic_symbols()
        .filter(|symbol| symbol.is_definition())
        .filter_map(|symbol| symbol.name().ok())
        .filter(|name| name.starts_with(SYMBOL_PREFIX))
        .map(str::to_owned)
        .collect()
}

/// Why the bytes are not a loadable library, or `Ok`.
pub(crate) fn check_shared_library(bytes: &[u8]) -> Result<(), String> {
    let elf = ElfFile64::<Endianness>::parse(bytes).map_err(|error| {
        if bytes.starts_with(b"\x7fELF") {
            format!(
                "truncated or corrupt ELF file ({} bytes): {error}",
                bytes.len()
            )
        } else {
            "not an ELF file".to_owned()
        }
    })?;
    if elf.kind() != ObjectKind::Dynamic {
        return Err(format!(
            "an ELF file of kind {:?}, not a shared library",
            elf.kind()
        ));
    }
    if let Some(host) = host_architecture() {
        if elf.architecture() != host {
            return Err(format!(
                "built for {:?}, this host is {host:?}",
                elf.architecture()
            ));
        }
    }
    for segment in elf.segments() {
        let (offset, size) = segment.file_range();
        if offset.saturating_add(size) > bytes.len() as u64 {
            return Err(format!(
                "truncated: a segment spans bytes {offset}..{} but the file has {} bytes",
                offset + size,
                bytes.len()
            ));
        }
    }
    Ok(())
}

fn host_architecture() -> Option<Architecture> {
    match std::env::consts::ARCH {
        "x86_64" => Some(Architecture::X86_64),
        "aarch64" => Some(Architecture::Aarch64),
        "riscv64" => Some(Architecture::Riscv64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{check_shared_library, module_symbols};

    fn this_test_binary() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn refuses_text_and_truncated_files() {
        assert_eq!(
            check_shared_library(b"hello").unwrap_err(),
            "not an ELF file"
        );
        let binary = this_test_binary();
        let cut = &binary[..binary.len() / 2];
        let error = check_shared_library(cut).unwrap_err();
        assert!(error.starts_with("truncated"), "{error}");
    }

    #[test]
    fn a_library_without_modules_exports_no_module_symbols() {
        assert!(module_symbols(&this_test_binary()).is_empty());
        assert!(module_symbols(b"hello").is_empty());
    }
}
