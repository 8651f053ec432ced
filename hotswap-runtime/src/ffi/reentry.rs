//! Which modules' state this thread is inside a call of: a module that
//! calls back into the host, which calls the same module again, must not
//! wait for a lock its own outer call holds.
//!
//! A list of frames on the callers' stacks, its head in a thread-local; a
//! frame is pushed for the length of each stateful call.

use std::cell::Cell;
use std::ptr;

/// How a call holds a module's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Holding {
    /// `&State`, under the read lock.
    Shared,
    /// `&mut State`, under the write lock.
    Exclusive,
}

/// One stateful call in progress; lives on the caller's stack.
pub(crate) struct Frame {
    /// The module's swap core, as an address: what identifies a `Hot`.
    module: *const (),
    holding: Holding,
    outer: Cell<*const Frame>,
}

thread_local! {
    static INNERMOST: Cell<*const Frame> = const { Cell::new(ptr::null()) };
}

/// How this thread's calls already hold `module`'s state, if they do; the
/// strongest hold wins.
#[inline]
pub(crate) fn holding(module: *const ()) -> Option<Holding> {
    let mut frame = INNERMOST.with(Cell::get);
    let mut found = None;
    while !frame.is_null() {
        // SAFETY: every frame in the list is alive: `Inside` borrows it and
        // unlinks it when dropped, and only this thread reaches this list.
        let current = unsafe { &*frame };
        if current.module == module {
            if current.holding == Holding::Exclusive {
                return Some(Holding::Exclusive);
            }
            found = Some(Holding::Shared);
        }
        frame = current.outer.get();
    }
    found
}

impl Frame {
    /// A call of `module` holding its state as `holding`.
    #[inline]
    pub(crate) fn new(module: *const (), holding: Holding) -> Self {
        Self {
            module,
            holding,
            outer: Cell::new(ptr::null()),
        }
    }
}

/// Marks this thread as inside the call `frame` describes until it drops.
pub(crate) struct Inside<'a> {
    frame: &'a Frame,
}

impl<'a> Inside<'a> {
    /// Links `frame` in as the innermost call. Guards drop in reverse order
    /// of creation on one thread (they are bound to scopes and not `Send`).
    #[inline]
    pub(crate) fn enter(frame: &'a Frame) -> Self {
        INNERMOST.with(|innermost| {
            frame.outer.set(innermost.get());
            innermost.set(frame);
        });
        Self { frame }
    }
}

impl Drop for Inside<'_> {
    #[inline]
    fn drop(&mut self) {
        INNERMOST.with(|innermost| innermost.set(self.frame.outer.get()));
    }
}

/// Why a stateful call of `function` of `module`, needing `wanted`, cannot
/// be served from inside another stateful call of the same module on this
/// thread (a callback from the module into the host, or a call back into
/// it from a module it calls): the outer call's borrow of the state is
/// still live, and waiting for it would wait for this thread itself.
pub(crate) fn reentered_message(module: &str, function: &str, wanted: Holding) -> String {
    let (wanted, held) = match wanted {
        Holding::Shared => ("`&State`", "a `&mut State`"),
        Holding::Exclusive => ("`&mut State`", "a stateful"),
    };
    format!(
        "hotswap: re-entrant call of `{function}` (needs {wanted}) on module `{module}` from inside {held} call of the same module on this thread, such as a callback from the module into the host: the outer call's borrow of the state is still live; make this call after the outer call returns, or have the outer function take `&State` and this one `&State` too"
    )
}
