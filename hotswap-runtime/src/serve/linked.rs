//! The swap core as a callee of other hot modules: what a call through a
//! `HotLink` does on the host side, and how callers are attached.
//!
//! A linked call holds the callee exactly as a call from the host does: a
//! pin of the serving version for a stateless function, the state lock
//! (with its re-entrancy frame) for a stateful one, so it waits at most
//! for the callee's critical section during a swap, and no update falls
//! between a teardown and a setup.

use std::ffi::c_void;
use std::ptr;
use std::sync::Arc;

use crate::abi::StateAccess;
use crate::error::Error;
use crate::ffi::link::{LinkTarget, ModuleId, View};
use crate::ffi::module::ModuleSpec;
use crate::ffi::reentry::{self, Frame, Holding, Inside};
use crate::serve::pins;
use crate::serve::swap::{lock, Core, SlotState, StateSlot};

impl<M: ModuleSpec> LinkTarget for Core<M> {
    fn name(&self) -> String {
        format!("{}::{}", M::CRATE, M::MODULE)
    }

    fn id(&self) -> ModuleId {
        self.id
    }

    fn attach(&self, view: &Arc<View>) -> Result<(), Error> {
        // Checked against what serves and what a swap under way is about to
        // publish (it checked the callers attached before, under this
        // lock): whichever serves at the first call fits.
        let mut importers = lock(&self.importers);
        view.check(pins::pin(&self.current).library().exports())?;
        if let Some(pending) = &importers.pending {
            view.check(pending.library().exports())?;
        }
        importers
            .views
            .retain(|attached| attached.upgrade().is_some_and(|view| view.is_attached()));
        importers.views.push(Arc::downgrade(view));
        Ok(())
    }

    fn call(
        &self,
        view: &View,
        function: usize,
        run: &mut dyn FnMut(*const c_void, *mut c_void),
    ) -> Result<(), String> {
        let module = ptr::from_ref(self).cast::<()>();
        let access = view
            .receiver(function)
            .ok_or_else(|| format!("no function number {function}"))?;
        let reentered = |wanted| {
            reentry::reentered_message(M::MODULE, view.function_name(function), wanted)
        };
        match access {
            StateAccess::None => {
                let version = pins::pin(&self.current);
                let shim = view.shim(version.generation, version.library().exports(), function)?;
                run(shim, ptr::null_mut());
            }
            StateAccess::Shared => {
                let slot = match reentry::holding(module) {
                    None => self.state.read(),
                    // Nested in a read of this thread: never wait behind a
                    // queued writer, which waits for the outer call.
                    Some(Holding::Shared) => self.state.read_recursive(),
                    Some(Holding::Exclusive) => return Err(reentered(Holding::Shared)),
                };
                let frame = Frame::new(module, Holding::Shared);
                let _inside = Inside::enter(&frame);
                run_on::<M>(&slot, view, function, run)?;
            }
            StateAccess::Exclusive => {
                if reentry::holding(module).is_some() {
                    return Err(reentered(Holding::Exclusive));
                }
                let slot = self.state.write();
                let frame = Frame::new(module, Holding::Exclusive);
                let _inside = Inside::enter(&frame);
                run_on::<M>(&slot, view, function, run)?;
            }
        }
        Ok(())
    }

    fn call_leased(
        &self,
        view: &View,
        function: usize,
        run: &mut dyn FnMut(*const c_void, *mut c_void),
    ) -> Result<Arc<dyn std::any::Any + Send + Sync>, String> {
        if view.receiver(function) != Some(StateAccess::None) {
            return Err(format!(
                "`{}` is called as an `async fn` but takes the state",
                view.function_name(function)
            ));
        }
        let version = pins::pin(&self.current);
        let shim = view.shim(version.generation, version.library().exports(), function)?;
        run(shim, ptr::null_mut());
        // Held by the caller's future from here on, not by this pin.
        Ok(version.to_arc())
    }
}

/// Runs a stateful call on the version that owns the state, whose lock
/// the caller holds as the function needs.
fn run_on<M: ModuleSpec>(
    slot: &StateSlot<M>,
    view: &View,
    function: usize,
    run: &mut dyn FnMut(*const c_void, *mut c_void),
) -> Result<(), String> {
    let state = match &slot.state {
        SlotState::Live(state) => state.as_ptr(),
        SlotState::Stateless => ptr::null_mut(),
        SlotState::Lost { reason, .. } => {
            return Err(format!("module `{}` has no live state: {reason}", M::MODULE))
        }
    };
    let version = &slot.version;
    let shim = view.shim(version.generation, version.library().exports(), function)?;
    run(shim, state);
    Ok(())
}

impl<M: ModuleSpec> Core<M> {
    /// The modules the serving version calls, `crate::module`.
    pub fn uses(&self) -> Vec<String> {
        pins::pin(&self.current).library().imports()
    }
}
