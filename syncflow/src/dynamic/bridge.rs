//! Conversions inserted between a typed step and a JSON step.

use std::any::{Any, TypeId};

use serde_json::Value;

use crate::context::{Context, Resources};
use crate::function::{Shape, StepInfo};
use crate::monitor::{Metrics, NoMonitor, StepRef};
use crate::registry::{
    AsyncCall, BoxedSlot, ErasedError, ErasedStep, FromValueFn, Next, ToValueFn, slot_error, take,
};

/// A conversion between a typed step and a JSON step, through serde.
pub(super) enum JsonBridge {
    /// Typed → `serde_json::Value`.
    ToJson(TypeId, ToValueFn),
    /// `serde_json::Value` → typed.
    FromJson(TypeId, &'static str, FromValueFn),
}

static TO_JSON: StepInfo = StepInfo {
    name: "to_json",
    fn_name: "to_json",
    module: "syncflow::dynamic",
    doc: "Converts a typed message to a JSON value (inserted between a typed step and a JSON step).",
    file: file!(),
    line: line!(),
    is_async: false,
    shape: Shape::Fallible,
    input: || "a Serialize type",
    output: || "serde_json::Value",
};

static FROM_JSON: StepInfo = StepInfo {
    name: "from_json",
    fn_name: "from_json",
    module: "syncflow::dynamic",
    doc: "Reads a typed message from a JSON value (inserted between a JSON step and a typed step).",
    file: file!(),
    line: line!(),
    is_async: false,
    shape: Shape::Fallible,
    input: || "serde_json::Value",
    output: || "a Deserialize type",
};

/// What a [`JsonBridge`] made of a message.
enum Converted {
    Json(Value),
    Typed(BoxedSlot),
}

impl JsonBridge {
    fn convert(&self, slot: &mut dyn Any) -> Result<Converted, ErasedError> {
        match self {
            JsonBridge::ToJson(_, to_value) => to_value(slot)
                .map(Converted::Json)
                .map_err(|e| Box::new(e) as ErasedError),
            JsonBridge::FromJson(_, name, from_value) => {
                let Some(value) = take::<Value>(slot) else {
                    return Err(slot_error(&FROM_JSON, "serde_json::Value"));
                };
                from_value(value).map(Converted::Typed).map_err(|e| {
                    Box::new(format!("the JSON value is not a `{name}`: {e}")) as ErasedError
                })
            }
        }
    }

    fn convert_then<M>(
        &self,
        slot: &mut dyn Any,
        monitor: &mut M,
        next: Next<'_, M>,
    ) -> Result<usize, ErasedError> {
        match self.convert(slot)? {
            Converted::Json(value) => next(&mut Some(value), monitor),
            Converted::Typed(mut typed) => next(&mut *typed, monitor),
        }
        Ok(1)
    }
}

impl ErasedStep for JsonBridge {
    fn info(&self) -> &'static StepInfo {
        match self {
            JsonBridge::ToJson(..) => &TO_JSON,
            JsonBridge::FromJson(..) => &FROM_JSON,
        }
    }

    fn input_id(&self) -> TypeId {
        match self {
            JsonBridge::ToJson(id, _) => *id,
            JsonBridge::FromJson(..) => TypeId::of::<Value>(),
        }
    }

    fn output_id(&self) -> TypeId {
        match self {
            JsonBridge::ToJson(..) => TypeId::of::<Value>(),
            JsonBridge::FromJson(id, ..) => *id,
        }
    }

    fn check(&self, _: &Resources, _: &mut Vec<String>) {}

    fn call_metrics(
        &self,
        _: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        _: StepRef,
        _: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError> {
        self.convert_then(slot, monitor, next)
    }

    fn call_bare(
        &self,
        _: &Context,
        slot: &mut dyn Any,
        _: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError> {
        self.convert_then(slot, &mut NoMonitor, next)
    }

    fn call_async<'a>(&'a self, _: &'a Context, slot: &mut dyn Any) -> AsyncCall<'a> {
        let converted = self.convert(slot);
        Box::pin(async move {
            Ok(vec![match converted? {
                Converted::Json(value) => Box::new(Some(value)) as BoxedSlot,
                Converted::Typed(typed) => typed,
            }])
        })
    }
}
