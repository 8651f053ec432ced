//! Calling a shim of any arity through one generic path.

use std::ffi::c_void;

use crate::abi::{PanicMessage, ShimReturn};

/// A shim's function pointer type, called with its arguments as a tuple:
/// lets generic code call shims of any arity.
///
/// # Safety
/// Implemented only for `unsafe extern "C" fn(*mut c_void, *mut
/// PanicMessage, A0, A1, ...) -> ShimReturn<R>`, by this module.
pub unsafe trait ShimFn<Args>: Copy {
    /// What the function returns (inside `ShimReturn`).
    type Ret;
    /// Calls the shim.
    ///
    /// # Safety
    /// `self` is a checked shim of a loaded library, and `state`/`message`
    /// are what its contract (see [`ShimReturn`]) requires.
    unsafe fn call(
        self,
        state: *mut c_void,
        message: *mut PanicMessage,
        args: Args,
    ) -> ShimReturn<Self::Ret>;
}

macro_rules! shim_fn_for_arity {
    ($($arg:ident)*) => {
        // SAFETY: exactly the shim signature.
        unsafe impl<R, $($arg),*> ShimFn<($($arg,)*)>
            for unsafe extern "C" fn(*mut c_void, *mut PanicMessage $(, $arg)*) -> ShimReturn<R>
        {
            type Ret = R;

            #[inline(always)]
            #[allow(non_snake_case)]
            unsafe fn call(self, state: *mut c_void, message: *mut PanicMessage, ($($arg,)*): ($($arg,)*)) -> ShimReturn<R> {
                // SAFETY: forwarded from the caller.
                unsafe { self(state, message $(, $arg)*) }
            }
        }
    };
}

shim_fn_for_arity!();
shim_fn_for_arity!(A0);
shim_fn_for_arity!(A0 A1);
shim_fn_for_arity!(A0 A1 A2);
shim_fn_for_arity!(A0 A1 A2 A3);
shim_fn_for_arity!(A0 A1 A2 A3 A4);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13);
shim_fn_for_arity!(A0 A1 A2 A3 A4 A5 A6 A7 A8 A9 A10 A11 A12 A13 A14);
