//! The module side of thread tracking: inside a module library,
//! `pthread_create`, `pthread_key_create` and `__cxa_thread_atexit_impl`
//! are this crate's own
//! functions, which forward to the host once it has installed its
//! [`ThreadHooks`].
//!
//! Why: a version may only be unmapped when none of its code can run any
//! more. Two things run a library's code behind the host's back: threads it
//! started (std's `thread::spawn`, rayon, a C library's `pthread_create`),
//! and thread-local destructors it registered, which glibc runs at thread
//! exit and for which it keeps the library mapped until every thread that
//! registered one has exited (on a long-lived host thread: forever, one
//! library per swap). Routed to the host, the first are counted per version
//! (a version is unloaded only once its threads have finished), and the
//! second are kept in a host-side list per thread: run at that thread's exit
//! while the version is loaded, and dropped unrun once it retires, so glibc
//! never pins the library.
//!
//! How: the two symbols are defined here with hidden visibility, so the
//! static linker binds every reference *inside the library image* to them
//! (std's and any statically linked C code's) ahead of glibc's, and nothing
//! outside the image sees them. They are weak, so a host linking several
//! module crates as rlibs links one copy. In the host binary the same
//! definitions exist but have no hooks installed: they forward straight to
//! glibc. Code that runs before the hooks are installed (the library's
//! initializers) is forwarded to glibc too, and is not tracked.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::abi::ThreadHooks;

/// The host's hooks, once installed; null in the host binary itself.
static HOOKS: AtomicPtr<ThreadHooks> = AtomicPtr::new(std::ptr::null_mut());

/// Installs the host's hooks (the descriptor's `install` entry).
///
/// # Safety
/// `hooks` stays valid for as long as this library is mapped.
pub unsafe extern "C" fn install(hooks: *const ThreadHooks) {
    HOOKS.store(hooks.cast_mut(), Ordering::Release);
}

/// The host's hooks, once installed.
pub(crate) fn installed() -> Option<&'static ThreadHooks> {
    let hooks = HOOKS.load(Ordering::Acquire);
    // SAFETY: installed hooks stay valid while this library is mapped
    // (`install`'s contract), and this code is in the library.
    (!hooks.is_null()).then(|| unsafe { &*hooks })
}

/// `pthread_create`'s signature.
pub type CreateFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_void,
    unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    *mut c_void,
) -> c_int;

/// `__cxa_thread_atexit_impl`'s signature.
pub type ThreadAtexitFn =
    unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, *mut c_void) -> c_int;

extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
}

/// glibc's definition of `name`, found from the global scope: the hidden
/// definitions here are in no dynamic symbol table, so this is glibc's.
fn glibc(name: &std::ffi::CStr, cache: &AtomicPtr<c_void>) -> *mut c_void {
    let cached = cache.load(Ordering::Relaxed);
    if !cached.is_null() {
        return cached;
    }
    // SAFETY: dlsym with RTLD_DEFAULT (null) and a NUL-terminated name.
    let found = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
    assert!(!found.is_null(), "hotswap: glibc has no {name:?}");
    cache.store(found, Ordering::Relaxed);
    found
}

/// glibc's `pthread_create`.
pub fn glibc_pthread_create() -> CreateFn {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let found = glibc(c"pthread_create", &CACHE);
    // SAFETY: glibc's `pthread_create` has this signature.
    unsafe { std::mem::transmute::<*mut c_void, CreateFn>(found) }
}

/// glibc's `__cxa_thread_atexit_impl`.
pub fn glibc_thread_atexit() -> ThreadAtexitFn {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let found = glibc(c"__cxa_thread_atexit_impl", &CACHE);
    // SAFETY: glibc's `__cxa_thread_atexit_impl` has this signature.
    unsafe { std::mem::transmute::<*mut c_void, ThreadAtexitFn>(found) }
}

/// What `pthread_create` is inside this image.
unsafe extern "C" fn forward_pthread_create(
    thread: *mut c_void,
    attr: *const c_void,
    start: unsafe extern "C" fn(*mut c_void) -> *mut c_void,
    arg: *mut c_void,
) -> c_int {
    let hooks = HOOKS.load(Ordering::Acquire);
    if hooks.is_null() {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { glibc_pthread_create()(thread, attr, start, arg) };
    }
    // SAFETY: installed hooks stay valid while this library is mapped, and
    // this code runs, so it is.
    let hooks = unsafe { &*hooks };
    // SAFETY: as above; the arguments are the caller's.
    unsafe { (hooks.create)(hooks.ctx, thread, attr, start, arg) }
}

/// `pthread_key_create`'s signature.
pub type KeyCreateFn =
    unsafe extern "C" fn(*mut u32, Option<unsafe extern "C" fn(*mut c_void)>) -> c_int;

/// glibc's `pthread_key_create`.
pub fn glibc_pthread_key_create() -> KeyCreateFn {
    static CACHE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
    let found = glibc(c"pthread_key_create", &CACHE);
    // SAFETY: glibc's `pthread_key_create` has this signature.
    unsafe { std::mem::transmute::<*mut c_void, KeyCreateFn>(found) }
}

/// What `pthread_key_create` is inside this image.
unsafe extern "C" fn forward_pthread_key_create(
    key: *mut u32,
    dtor: Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int {
    let hooks = HOOKS.load(Ordering::Acquire);
    if hooks.is_null() {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { glibc_pthread_key_create()(key, dtor) };
    }
    // SAFETY: as in `forward_pthread_create`.
    let hooks = unsafe { &*hooks };
    // SAFETY: as above; the arguments are the caller's.
    unsafe { (hooks.key_create)(hooks.ctx, key, dtor) }
}

/// What `__cxa_thread_atexit_impl` is inside this image.
unsafe extern "C" fn forward_thread_atexit(
    dtor: unsafe extern "C" fn(*mut c_void),
    obj: *mut c_void,
    dso: *mut c_void,
) -> c_int {
    let hooks = HOOKS.load(Ordering::Acquire);
    if hooks.is_null() {
        // SAFETY: the caller's arguments, passed on unchanged.
        return unsafe { glibc_thread_atexit()(dtor, obj, dso) };
    }
    // SAFETY: as in `forward_pthread_create`.
    let hooks = unsafe { &*hooks };
    // SAFETY: as above; the arguments are the caller's.
    unsafe { (hooks.thread_atexit)(hooks.ctx, dtor, obj, dso) }
}

// Weak, hidden definitions: bound by the static linker for every reference
// in the image that links this crate (see the module docs), exported to
// nobody. A tail jump keeps the callers' arguments and return address.
#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
std::arch::global_asm!(
    ".weak pthread_create",
    ".hidden pthread_create",
    ".type pthread_create, @function",
    "pthread_create:",
    "jmp {create}",
    ".weak __cxa_thread_atexit_impl",
    ".hidden __cxa_thread_atexit_impl",
    ".type __cxa_thread_atexit_impl, @function",
    "__cxa_thread_atexit_impl:",
    "jmp {atexit}",
    ".weak pthread_key_create",
    ".hidden pthread_key_create",
    ".type pthread_key_create, @function",
    "pthread_key_create:",
    "jmp {key_create}",
    create = sym forward_pthread_create,
    atexit = sym forward_thread_atexit,
    key_create = sym forward_pthread_key_create,
);

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "aarch64"))]
std::arch::global_asm!(
    ".weak pthread_create",
    ".hidden pthread_create",
    ".type pthread_create, %function",
    "pthread_create:",
    "b {create}",
    ".weak __cxa_thread_atexit_impl",
    ".hidden __cxa_thread_atexit_impl",
    ".type __cxa_thread_atexit_impl, %function",
    "__cxa_thread_atexit_impl:",
    "b {atexit}",
    ".weak pthread_key_create",
    ".hidden pthread_key_create",
    ".type pthread_key_create, %function",
    "pthread_key_create:",
    "b {key_create}",
    create = sym forward_pthread_create,
    atexit = sym forward_thread_atexit,
    key_create = sym forward_pthread_key_create,
);
