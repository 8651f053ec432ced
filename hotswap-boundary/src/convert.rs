//! Converting values as they cross, and what may cross as it is.

use abi_stable::std_types::{RString, RVec};
use abi_stable::StableAbi;

/// `char` crosses as its scalar value.
pub fn char_to_ffi(value: char) -> u32 {
    value.into()
}

/// The inverse of [`char_to_ffi`]; the other side always sends valid
/// scalar values, anything else becomes U+FFFD.
pub fn char_from_ffi(value: u32) -> char {
    char::from_u32(value).unwrap_or(char::REPLACEMENT_CHARACTER)
}

/// The text of a string the other side made, copied into memory of this
/// side. The other side's buffer is freed here, by its own code (it is
/// loaded for the length of the call): this side never frees, or keeps,
/// memory another side's allocator made.
pub fn string_from_ffi(value: RString) -> String {
    value.as_str().to_owned()
}

/// The elements of a vector the other side made, moved into a vector of
/// this side's; see [`string_from_ffi`].
pub fn vec_from_ffi<T>(mut value: RVec<T>) -> Vec<T> {
    let len = value.len();
    let mut moved = Vec::with_capacity(len);
    // SAFETY: the elements are moved bitwise into `moved`, which has room
    // for `len`; `value` then forgets them (length 0) so they are not
    // dropped twice, and frees only its buffer when it drops.
    unsafe {
        std::ptr::copy_nonoverlapping(value.as_ptr(), moved.as_mut_ptr(), len);
        value.set_len(0);
        moved.set_len(len);
    }
    moved
}

/// A type that may cross the module boundary as it is.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross the hot module boundary",
    label = "does not implement `abi_stable::StableAbi`",
    note = "derive `abi_stable::StableAbi` on it with `#[repr(C)]`, or use a supported type: integers, floats, `bool`, `char`, `()`, `&str`, `String`, `&[T]`, `Vec<T>`, `Option<T>`, `Result<T, E>` or tuples of up to 4 of these"
)]
pub trait CrossesBoundary {}
impl<T: StableAbi> CrossesBoundary for T {}

/// Compile-time check that `T` may cross the boundary as it is.
pub const fn assert_crosses<T: CrossesBoundary>() {}
