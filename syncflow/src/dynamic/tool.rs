//! Built-in operators (the toolbox) as steps of a run-time flow.
//!
//! A toolbox operator takes and emits `serde_json::Value`; next to a typed
//! step, the flow builder inserts the JSON conversion. Stateless operators
//! are shared by all workers; `dedupe`, which remembers keys, is behind a
//! lock (one instance per flow: partition by the dedupe key for several
//! workers to agree).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::context::{Context, Resources};
use crate::function::{Shape, StepInfo};
use crate::monitor::{Metrics, Monitor, NoMonitor, StepRef};
use crate::registry::{AsyncCall, BoxedSlot, ErasedError, ErasedStep, Next, slot_error, take};
use crate::toolbox::{Tool, ToolOutcome};

/// A toolbox operator as a step.
pub struct ToolNode {
    info: &'static StepInfo,
    cell: Cell,
}

enum Cell {
    Shared(Tool),
    Locked(Mutex<Tool>),
}

impl ToolNode {
    /// The operator as a step.
    pub fn new(tool: Tool) -> ToolNode {
        let info = tool_info(tool.name());
        let cell = if tool.is_stateful() {
            Cell::Locked(Mutex::new(tool))
        } else {
            Cell::Shared(tool)
        };
        ToolNode { info, cell }
    }

    /// The operator.
    pub fn tool(&self) -> Option<&Tool> {
        match &self.cell {
            Cell::Shared(tool) => Some(tool),
            Cell::Locked(_) => None,
        }
    }

    /// Applies the operator to the message in `slot`.
    fn apply(&self, slot: &mut dyn Any) -> Result<Emitted<Value>, ErasedError> {
        let Some(message) = take::<Value>(slot) else {
            return Err(slot_error(self.info, "serde_json::Value"));
        };
        let outcome = match &self.cell {
            Cell::Shared(tool) => match tool.apply_stateless(message) {
                Ok(outcome) => outcome,
                Err(_) => return Err(Box::new("internal error: a stateful operator was shared")),
            },
            Cell::Locked(tool) => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let mut tool = tool.lock().unwrap_or_else(|p| p.into_inner());
                tool.apply(message, now_ms)
            }
        };
        match outcome.map_err(|e| Box::new(e) as ErasedError)? {
            ToolOutcome::One(v) => Ok(Emitted::One(v)),
            ToolOutcome::Drop => Ok(Emitted::None),
            ToolOutcome::Many(items) => Ok(Emitted::Many(items)),
            // `route` is the flow's last step, applied by the flow itself.
            ToolOutcome::To { message, .. } => Ok(Emitted::One(message)),
        }
    }
}

/// The description of a toolbox operator as a step (one per operator).
fn tool_info(name: &'static str) -> &'static StepInfo {
    static INFOS: OnceLock<Mutex<HashMap<&'static str, &'static StepInfo>>> = OnceLock::new();
    let mut infos = INFOS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    infos.entry(name).or_insert_with(|| {
        Box::leak(Box::new(StepInfo {
            name,
            fn_name: name,
            module: "syncflow::toolbox",
            doc: "A built-in operator.",
            file: "",
            line: 0,
            is_async: false,
            shape: Shape::FallibleFilter,
            input: || "serde_json::Value",
            output: || "serde_json::Value",
        }))
    })
}

impl JsonStep for ToolNode {
    type Out = Value;
    fn info(&self) -> &'static StepInfo {
        self.info
    }
    fn apply(&self, slot: &mut dyn Any) -> Result<Emitted<Value>, ErasedError> {
        ToolNode::apply(self, slot)
    }
}

/// A message the `route` step sent to one of its targets (the flow's last
/// step): the flow writes it only to the sinks of that target.
pub struct Routed {
    /// The message.
    pub value: Value,
    /// Index of the target in the route's target list.
    pub target: u16,
}

/// `route` as a flow's last step.
pub struct RouteNode {
    route: crate::toolbox::Route,
    info: &'static StepInfo,
}

impl RouteNode {
    /// The operator as the last step of a flow.
    pub fn new(route: crate::toolbox::Route) -> RouteNode {
        RouteNode {
            route,
            info: tool_info(crate::toolbox::Route::NAME),
        }
    }

    /// The target names, in index order.
    pub fn targets(&self) -> Vec<String> {
        self.route.targets().iter().map(|t| t.to_string()).collect()
    }

    fn apply(&self, slot: &mut dyn Any) -> Result<Emitted<Routed>, ErasedError> {
        let Some(message) = take::<Value>(slot) else {
            return Err(slot_error(self.info, "serde_json::Value"));
        };
        match self.route.route_index(&message) {
            Ok(Some(target)) => Ok(Emitted::One(Routed {
                value: message,
                target: u16::try_from(target).unwrap_or(u16::MAX),
            })),
            Ok(None) => Ok(Emitted::None),
            Err(e) => Err(Box::new(e)),
        }
    }
}

impl JsonStep for RouteNode {
    type Out = Routed;
    fn info(&self) -> &'static StepInfo {
        self.info
    }
    fn apply(&self, slot: &mut dyn Any) -> Result<Emitted<Routed>, ErasedError> {
        RouteNode::apply(self, slot)
    }
}

/// What a built-in step emitted for one message.
pub(crate) enum Emitted<T> {
    /// Nothing: the message was dropped.
    None,
    /// One message.
    One(T),
    /// Several messages, in order.
    Many(Vec<T>),
}

/// A built-in step that takes a JSON message and emits `Out`s.
pub(crate) trait JsonStep: Send + Sync + 'static {
    /// What it emits.
    type Out: Send + 'static;
    /// Its description.
    fn info(&self) -> &'static StepInfo;
    /// Takes the message out of `slot`.
    fn apply(&self, slot: &mut dyn Any) -> Result<Emitted<Self::Out>, ErasedError>;
}

/// Calls a [`JsonStep`], timed when asked, then hands on what it emitted.
fn run_json_step<S: JsonStep, M: Monitor>(
    step_impl: &S,
    slot: &mut dyn Any,
    monitor: &mut M,
    step: StepRef,
    timed: bool,
    next: Next<'_, M>,
) -> Result<usize, ErasedError> {
    let timer = timed.then(|| monitor.enter(step));
    let result = step_impl.apply(slot);
    if let Some(timer) = timer {
        monitor.exit(step, timer);
    }
    match result? {
        Emitted::One(out) => {
            next(&mut Some(out), monitor);
            Ok(1)
        }
        Emitted::None => Ok(0),
        Emitted::Many(items) => {
            let n = items.len();
            for item in items {
                next(&mut Some(item), monitor);
            }
            Ok(n)
        }
    }
}

impl<S: JsonStep> ErasedStep for S {
    fn info(&self) -> &'static StepInfo {
        JsonStep::info(self)
    }
    fn input_id(&self) -> TypeId {
        TypeId::of::<Value>()
    }
    fn output_id(&self) -> TypeId {
        TypeId::of::<S::Out>()
    }
    fn check(&self, _: &Resources, _: &mut Vec<String>) {}
    fn call_metrics(
        &self,
        _: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        step: StepRef,
        timed: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError> {
        run_json_step(self, slot, monitor, step, timed, next)
    }
    fn call_bare(
        &self,
        _: &Context,
        slot: &mut dyn Any,
        step: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError> {
        run_json_step(self, slot, &mut NoMonitor, step, false, next)
    }
    fn call_async<'a>(&'a self, _: &'a Context, slot: &mut dyn Any) -> AsyncCall<'a> {
        let result = self.apply(slot);
        let boxed = |out: S::Out| Box::new(Some(out)) as BoxedSlot;
        Box::pin(async move {
            Ok(match result? {
                Emitted::None => Vec::new(),
                Emitted::One(out) => vec![boxed(out)],
                Emitted::Many(items) => items.into_iter().map(boxed).collect(),
            })
        })
    }
}

/// The type of a routed message, for the flow builder.
pub(crate) fn routed_codec() -> crate::registry::TypeCodec {
    crate::registry::TypeCodec {
        name: "a routed message",
        id: TypeId::of::<Routed>(),
        decode: None,
        from_value: None,
        encode: None,
        to_value: None,
        clone: None,
    }
}
