//! A `flow!` flow as one step of a run-time flow.
//!
//! [`register_flow!`](crate::register_flow) registers a static flow under a
//! name; a YAML flow names it like a function. Inside, the static flow runs
//! as `flow!` compiled it (direct calls, no dynamic dispatch): hot paths
//! stay static inside config-driven flows.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::context::{Context, Resources};
use crate::flow::{Emit, Flow, FlowDef, StepFailure};
use crate::function::{Shape, StepInfo};
use crate::monitor::{Metrics, Monitor, NoMonitor, StepRef};
use crate::registry::probe::Probe;
use crate::registry::{
    AsyncCall, BoxedSlot, ErasedError, ErasedStep, Next, TypeCodec, slot_error, take,
};

/// A static flow registered by [`register_flow!`](crate::register_flow).
pub struct FlowRegistration {
    /// The name YAML flows use for it.
    pub name: &'static str,
    /// Where it was registered.
    pub file: &'static str,
    /// Line of the registration.
    pub line: u32,
    /// Builds the step and describes its input and output types.
    pub build: fn() -> NestedParts,
}

inventory::collect!(FlowRegistration);

/// What [`FlowRegistration::build`] makes.
pub struct NestedParts {
    /// The flow as one step.
    pub step: Box<dyn ErasedStep>,
    /// Its input type.
    pub input: TypeCodec,
    /// Its output type.
    pub output: TypeCodec,
}

/// Every registered static flow, sorted by name.
pub fn registered_flows() -> Vec<&'static FlowRegistration> {
    let mut all: Vec<_> = inventory::iter::<FlowRegistration>.into_iter().collect();
    all.sort_by_key(|r| (r.name, r.file, r.line));
    all
}

/// The registered static flow with this name, if exactly one has it.
pub fn find_flow(name: &str) -> Option<&'static FlowRegistration> {
    let mut found = registered_flows().into_iter().filter(|r| r.name == name);
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The input type of a flow, for probing its codecs (see `register_flow!`).
#[doc(hidden)]
pub fn input_probe<F: FlowDef, M>(_: &Flow<F, M>) -> Probe<F::Input> {
    Probe::NEW
}

/// The output type of a flow, for probing its codecs.
#[doc(hidden)]
pub fn output_probe<F: FlowDef, M>(_: &Flow<F, M>) -> Probe<F::Output> {
    Probe::NEW
}

/// A static flow as an erased step.
pub struct FlowStep<F> {
    def: Arc<F>,
    info: &'static StepInfo,
}

impl<F: FlowDef> FlowStep<F>
where
    F::Input: 'static,
    F::Output: 'static,
{
    /// The flow `flow` as a step named `name`.
    pub fn boxed<M: Monitor>(name: &'static str, flow: Flow<F, M>) -> Box<dyn ErasedStep> {
        let def = flow.def_arc();
        let info = step_info(name, def.is_sync());
        Box::new(FlowStep { def, info })
    }
}

/// The description of a nested flow as a step (one per name and kind).
fn step_info(name: &'static str, sync: bool) -> &'static StepInfo {
    static INFOS: OnceLock<Mutex<HashMap<(&'static str, bool), &'static StepInfo>>> =
        OnceLock::new();
    let mut infos = INFOS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    infos.entry((name, sync)).or_insert_with(|| {
        Box::leak(Box::new(StepInfo {
            name,
            fn_name: name,
            module: "a registered flow!",
            doc: "A static flow registered with register_flow!, run as one step.",
            file: "",
            line: 0,
            is_async: !sync,
            shape: Shape::FallibleFanOut,
            input: || "the flow's input",
            output: || "the flow's output",
        }))
    })
}

/// Hands the nested flow's outputs to the rest of the outer flow and keeps
/// its first failure.
struct Forward<'a, 'n, M> {
    next: Next<'n, M>,
    monitor: &'a mut M,
    count: usize,
    failure: Option<String>,
    flow: &'static str,
}

impl<T: 'static, M> Emit<T> for Forward<'_, '_, M> {
    fn emit(&mut self, item: T) {
        self.count += 1;
        (self.next)(&mut Some(item), self.monitor);
    }
    fn fail(&mut self, failure: StepFailure<'_>) {
        if self.failure.is_none() {
            self.failure = Some(format!(
                "{} (step `{}` of flow `{}`)",
                failure.error, failure.step.info.name, self.flow
            ));
        }
    }
}

/// Collects the nested flow's outputs (for async flows).
struct Collect {
    items: Vec<BoxedSlot>,
    failure: Option<String>,
    flow: &'static str,
}

impl<T: Send + 'static> Emit<T> for Collect {
    fn emit(&mut self, item: T) {
        self.items.push(Box::new(Some(item)));
    }
    fn fail(&mut self, failure: StepFailure<'_>) {
        if self.failure.is_none() {
            self.failure = Some(format!(
                "{} (step `{}` of flow `{}`)",
                failure.error, failure.step.info.name, self.flow
            ));
        }
    }
}

impl<F: FlowDef> FlowStep<F>
where
    F::Input: 'static,
    F::Output: 'static,
{
    /// Runs the nested flow synchronously, without its own monitor (it is
    /// one step of the outer flow's metrics). A failure inside it fails
    /// this step, after the outputs made before it were passed on.
    fn run_now<M>(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut M,
        next: Next<'_, M>,
    ) -> Result<usize, ErasedError> {
        let Some(input) = take::<F::Input>(slot) else {
            return Err(slot_error(self.info, std::any::type_name::<F::Input>()));
        };
        let mut forward = Forward {
            next,
            monitor,
            count: 0,
            failure: None,
            flow: self.def.name(),
        };
        self.def
            .process_now(cx, &mut NoMonitor, input, &mut forward);
        match forward.failure {
            Some(failure) => Err(Box::new(failure)),
            None => Ok(forward.count),
        }
    }
}

impl<F: FlowDef> ErasedStep for FlowStep<F>
where
    F::Input: 'static,
    F::Output: 'static,
{
    fn info(&self) -> &'static StepInfo {
        self.info
    }

    fn input_id(&self) -> TypeId {
        TypeId::of::<F::Input>()
    }

    fn output_id(&self) -> TypeId {
        TypeId::of::<F::Output>()
    }

    fn check(&self, resources: &Resources, problems: &mut Vec<String>) {
        self.def.check(resources, problems);
    }

    fn call_metrics(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        _: StepRef,
        _: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError> {
        self.run_now(cx, slot, monitor, next)
    }

    fn call_bare(
        &self,
        cx: &Context,
        slot: &mut dyn Any,
        _: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError> {
        self.run_now(cx, slot, &mut NoMonitor, next)
    }

    fn call_async<'a>(&'a self, cx: &'a Context, slot: &mut dyn Any) -> AsyncCall<'a> {
        let input = take::<F::Input>(slot);
        Box::pin(async move {
            let Some(input) = input else {
                return Err(slot_error(self.info, std::any::type_name::<F::Input>()));
            };
            let mut collect = Collect {
                items: Vec::new(),
                failure: None,
                flow: self.def.name(),
            };
            let mut monitor = NoMonitor;
            Monitor::begin(&mut monitor);
            self.def
                .process(cx, &mut monitor, input, &mut collect)
                .await;
            match collect.failure {
                Some(failure) => Err(Box::new(failure) as ErasedError),
                None => Ok(collect.items),
            }
        })
    }
}

/// Registers a `flow!` flow under a name, so that YAML flows can use it as
/// one step (its steps keep running as direct calls):
///
/// ```
/// use syncflow::prelude::*;
///
/// /// Trims a line.
/// #[sync_function]
/// fn trim(line: String) -> String { line.trim().to_string() }
///
/// /// Drops empty lines.
/// #[sync_function]
/// fn non_empty(line: String) -> Option<String> { (!line.is_empty()).then_some(line) }
///
/// syncflow::register_flow!("clean_lines", flow!(trim -> non_empty));
/// # fn main() {
/// assert!(syncflow::dynamic::find_flow("clean_lines").is_some());
/// # }
/// ```
#[macro_export]
macro_rules! register_flow {
    ($name:literal, $flow:expr $(,)?) => {
        const _: () = {
            #[allow(clippy::needless_borrow)]
            fn __syncflow_build() -> $crate::dynamic::NestedParts {
                #[allow(unused_imports)]
                use $crate::registry::probe::{
                    HasClone as _, HasDeserialize as _, HasSerialize as _, NoClone as _,
                    NoDeserialize as _, NoSerialize as _,
                };
                let flow = $flow;
                let input = $crate::dynamic::input_probe(&flow);
                let output = $crate::dynamic::output_probe(&flow);
                $crate::dynamic::NestedParts {
                    input: $crate::registry::TypeCodec {
                        name: input.probed_name(),
                        id: input.probed_id(),
                        decode: (&input).decoder(),
                        from_value: (&input).value_decoder(),
                        encode: (&input).encoder(),
                        to_value: (&input).value_encoder(),
                        clone: (&input).cloner(),
                    },
                    output: $crate::registry::TypeCodec {
                        name: output.probed_name(),
                        id: output.probed_id(),
                        decode: (&output).decoder(),
                        from_value: (&output).value_decoder(),
                        encode: (&output).encoder(),
                        to_value: (&output).value_encoder(),
                        clone: (&output).cloner(),
                    },
                    step: $crate::dynamic::FlowStep::boxed($name, flow),
                }
            }
            $crate::__private::inventory::submit! {
                $crate::dynamic::FlowRegistration {
                    name: $name,
                    file: ::core::file!(),
                    line: ::core::line!(),
                    build: __syncflow_build,
                }
            }
        };
    };
}
