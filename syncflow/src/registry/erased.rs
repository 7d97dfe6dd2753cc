//! Registered functions behind one object-safe interface, for flows that
//! are assembled at run time (YAML flows).
//!
//! `flow!` calls each step through its typed [`Step`] impl. A config-driven
//! flow only knows its steps by name, so every `#[sync_function]` also
//! registers an [`Adapter`] around its operator, usable as
//! `&'static dyn ErasedStep`. An erased step takes its input out of a
//! *slot* (a `&mut dyn Any` that is an `Option<Input>`), calls the typed
//! [`Step::call_now`] — the same code `flow!` runs — and hands each message
//! it emits to the rest of the flow in a new slot on its own stack. So
//! moving a message from step to step allocates nothing; the cost of
//! erasure is one virtual call and one type-id comparison per step.

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::codec::{BoxedSlot, take};
use crate::context::{Context, Resources};
use crate::function::{Operator, Step, StepInfo};
use crate::monitor::{Metrics, NoMonitor, StepRef};

/// Why an erased step produced nothing for a message: the function's error
/// (or a context error), as text when shown.
pub type ErasedError = Box<dyn fmt::Display + Send>;

/// The rest of a flow, called with each message a step emits (a slot
/// holding an `Option` of the step's output type) and the monitor.
pub type Next<'a, M> = &'a mut dyn FnMut(&mut dyn Any, &mut M);

/// What an async erased step's future yields: the emitted messages, each in
/// a boxed slot.
pub type AsyncCall<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<BoxedSlot>, ErasedError>> + Send + 'a>>;

/// A step of a flow assembled at run time.
///
/// (When the code `#[sync_function]` generates cannot implement this for a
/// function, an earlier error on the same function says why.)
///
/// Implemented for every registered function (through [`Adapter`]) and by
/// the built-in steps of config-driven flows. The `call_*` methods mirror
/// [`Step::call_now`] for the two monitors such flows run with.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be registered as a step of flow files",
    label = "follows from an earlier error on this function",
    note = "fix the first error reported for this function; this one goes away with it"
)]
pub trait ErasedStep: Send + Sync + 'static {
    /// The step's description (name, shape, types, location).
    fn info(&self) -> &'static StepInfo;
    /// The type of the payload the step takes.
    fn input_id(&self) -> TypeId;
    /// The type of each message the step emits.
    fn output_id(&self) -> TypeId;
    /// Checks that every context parameter can be supplied.
    fn check(&self, resources: &Resources, problems: &mut Vec<String>);
    /// Runs a synchronous step with the default metrics: takes the input
    /// out of `slot`, calls the function (timed when `timed`), and calls
    /// `next` with each message emitted. Returns how many were emitted.
    fn call_metrics(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        step: StepRef,
        timed: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError>;
    /// Runs a synchronous step without monitoring.
    fn call_bare(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        step: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError>;
    /// Runs the step (sync or async) as a future that yields every message
    /// emitted. Used when a flow has an `async fn` step.
    fn call_async<'a>(&'a self, cx: &'a Context, slot: &mut dyn Any) -> AsyncCall<'a>;
}

/// A slot held something other than what the step takes: a wiring bug,
/// reported as a step failure rather than a panic. (For implementors of
/// [`ErasedStep`].)
pub fn slot_error(step: &StepInfo, expected: &'static str) -> ErasedError {
    Box::new(format!(
        "internal error: step `{}` was handed a message that is not a `{expected}`; please report this",
        step.name
    ))
}

/// The erased face of a `#[sync_function]`'s operator (registered for each).
#[derive(Debug, Clone, Copy)]
pub struct Adapter<S>(pub S);

impl<S> ErasedStep for Adapter<S>
where
    S: Step<<S as Operator>::Input> + Send + Sync + 'static,
    S::Input: Send + 'static,
    S::Output: Send + 'static,
    <S as Step<S::Input>>::Error: 'static,
{
    fn info(&self) -> &'static StepInfo {
        S::INFO
    }

    fn input_id(&self) -> TypeId {
        TypeId::of::<S::Input>()
    }

    fn output_id(&self) -> TypeId {
        TypeId::of::<S::Output>()
    }

    fn check(&self, resources: &Resources, problems: &mut Vec<String>) {
        S::check(resources, problems);
    }

    fn call_metrics(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        step: StepRef,
        timed: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError> {
        call_now::<S, Metrics>(&self.0, cx, slot, monitor, step, timed, next)
    }

    fn call_bare(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        step: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError> {
        call_now::<S, NoMonitor>(&self.0, cx, slot, &mut NoMonitor, step, false, next)
    }

    fn call_async<'a>(&'a self, cx: &'a Context, slot: &mut dyn Any) -> AsyncCall<'a> {
        let input = take::<S::Input>(slot);
        Box::pin(async move {
            let Some(input) = input else {
                return Err(slot_error(S::INFO, std::any::type_name::<S::Input>()));
            };
            let items = <S as Step<S::Input>>::call(&self.0, cx, input)
                .await
                .map_err(|failure| Box::new(failure) as ErasedError)?;
            Ok(items
                .into_iter()
                .map(|item| Box::new(Some(item)) as BoxedSlot)
                .collect())
        })
    }
}

/// Takes the input out of `slot`, calls the operator's typed `call_now` (the
/// code `flow!` runs) and hands each message it emits to `next` in a new
/// slot on this stack.
#[inline(always)]
fn call_now<S, M>(
    op: &S,
    cx: &Context,
    slot: &mut dyn Any,
    monitor: &mut M,
    step: StepRef,
    timed: bool,
    next: Next<'_, M>,
) -> Result<usize, ErasedError>
where
    S: Step<<S as Operator>::Input>,
    S::Input: 'static,
    S::Output: 'static,
    <S as Step<S::Input>>::Error: 'static,
    M: crate::monitor::Monitor,
{
    let Some(input) = take::<S::Input>(slot) else {
        return Err(slot_error(S::INFO, std::any::type_name::<S::Input>()));
    };
    <S as Step<S::Input>>::call_now(
        op,
        cx,
        input,
        monitor,
        step,
        timed,
        |out: S::Output, m: &mut M| {
            let mut slot = Some(out);
            next(&mut slot, m)
        },
    )
    .map_err(|failure| Box::new(failure) as ErasedError)
}
