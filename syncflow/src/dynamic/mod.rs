//! Flows assembled at run time, from registered functions and built-in
//! steps: what a YAML flow runs.
//!
//! A [`DynFlow`] is a [`FlowDef`] like the ones `flow!` generates, so the
//! same runtime, monitor and workers drive it. Its input is the first step's
//! payload in a boxed slot (decoded from JSON by the type's registered
//! codec), its output the last step's messages as JSON text. Between steps a
//! message moves in a slot on the stack (see [`crate::registry::ErasedStep`]),
//! so the framework's own cost per step is one virtual call and one type-id
//! check; no allocation.
//!
//! [`DynFlowBuilder`] checks that each step fits the one before it, the way
//! `flow!` does at compile time, and inserts a JSON conversion where a typed
//! step meets a built-in JSON step (`serde_json::Value`).

use std::any::Any;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::value::RawValue;

use crate::context::{Context, Resources};
use crate::flow::{Emit, EmitAny, FlowDef, StepFailure};
use crate::function::{Shape, StepInfo};
use crate::monitor::{Metrics, Monitor, NoMonitor, StepRef};
use crate::policy::{OnError, PolicyStats};
use crate::registry::{
    AsyncCall, BoxedSlot, DecodeFn, EncodeFn, ErasedError, ErasedStep, TypeCodec, take,
};
use crate::runtime::Shutdown;

mod bridge;
mod nested;
mod policy;
mod tool;

pub use tool::{RouteNode, Routed, ToolNode};

pub use policy::{Applied, NotCloneable, StepPolicyStats, snapshot as policy_snapshot};

use bridge::JsonBridge;
pub use nested::{
    FlowRegistration, FlowStep, NestedParts, find_flow, input_probe, output_probe, registered_flows,
};

/// A step of a [`DynFlow`]: a registered function, or a step owned by the flow.
pub enum Node {
    /// A registered `#[sync_function]`.
    Registered(&'static dyn ErasedStep),
    /// A step built for this flow (built-in operators, conversions).
    Owned(Box<dyn ErasedStep>),
}

impl Node {
    /// The step's description.
    pub fn info(&self) -> &'static StepInfo {
        self.get().info()
    }

    #[inline(always)]
    fn get(&self) -> &dyn ErasedStep {
        match self {
            Node::Registered(s) => *s,
            Node::Owned(s) => &**s,
        }
    }
}

/// A node with the types it takes and emits.
struct Typed {
    node: Node,
    input: TypeCodec,
    output: TypeCodec,
    on_error: OnFailure,
    /// With `on_error: dead_letter` to a channel: the channel.
    dead_letter_channel: Option<String>,
    policy: Option<Applied>,
    /// A batched step: how its input is grouped.
    batch: Option<BatchSpec>,
}

/// How a batched step's input is grouped: up to `size` messages, each
/// encoded as JSON, decoded together as the step's input type.
#[derive(Clone, Copy)]
struct BatchSpec {
    size: usize,
    encode: EncodeFn,
    decode: DecodeFn,
}

/// What a [`DynFlow`] does with a message a step failed on (the part of
/// the `on_error` policy that a run-time flow applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Hand it to the flow's error output (the dead-letter file): the default.
    #[default]
    DeadLetter,
    /// Count it as failed in the step's metrics, and nothing else.
    Drop,
    /// Dead-letter it, then stop the flow: no further input is read, what
    /// was read is drained.
    Stop,
    /// Skip the rest of the flow: the message as the failed step received
    /// it goes to the sinks (as JSON, with no route target). The step's
    /// input is encoded before each call, so this costs one encoding per
    /// message at that step.
    Skip,
}

/// Why a chain of steps does not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A step cannot take what the step before it emits.
    #[error(
        "flow step `{step}` cannot take `{got}`, the output of the previous step `{prev}`: `{step}` takes `{wants}`; change the order of the steps, or put a step between them that turns `{got}` into `{wants}`"
    )]
    Mismatch {
        /// Index of the step that does not fit.
        index: usize,
        /// Its name.
        step: String,
        /// What it takes.
        wants: String,
        /// The previous step's name.
        prev: String,
        /// What that one emits.
        got: String,
    },
    /// A typed step meets a JSON step, but the type has no serde impl.
    #[error(
        "flow step `{step}` works on JSON values, but `{ty}` (the output of `{prev}`) cannot be {verb}: derive `{derive}` for `{ty}`"
    )]
    NoJsonBridge {
        /// Index of the step where the conversion is needed.
        index: usize,
        /// The step on the JSON side or the typed side.
        step: String,
        /// The previous step.
        prev: String,
        /// The typed side's type.
        ty: String,
        /// "converted to JSON" or "read from JSON".
        verb: &'static str,
        /// The missing derive (`Serialize` or `Deserialize`).
        derive: &'static str,
    },
}

/// Builds a [`DynFlow`] step by step, checking each step against the last.
pub struct DynFlowBuilder {
    name: &'static str,
    routed: bool,
    nodes: Vec<Typed>,
    /// Index in the chain the user wrote (conversions are not counted).
    written: usize,
}

impl DynFlowBuilder {
    /// An empty flow whose input is `input` (a flow without steps passes
    /// its input on unchanged).
    pub fn new(name: &str) -> Self {
        DynFlowBuilder {
            routed: false,
            name: intern(name),
            nodes: Vec::new(),
            written: 0,
        }
    }

    /// The type the last step emits, if there is a step.
    pub fn output(&self) -> Option<TypeCodec> {
        self.nodes.last().map(|t| t.output)
    }

    /// Appends a step that takes `input` and emits `output`. Between a typed
    /// step and a JSON step, a conversion through serde is inserted.
    pub fn step(
        &mut self,
        node: Node,
        input: TypeCodec,
        output: TypeCodec,
    ) -> Result<&mut Self, ChainError> {
        let index = self.written;
        self.written += 1;
        if let Some(prev) = self.nodes.last() {
            let prev_name = prev.node.get().info().name;
            let name = node.get().info().name;
            let got = prev.output;
            if got.id != input.id {
                let bridge = if input.is_json() {
                    let to_value = got.to_value.ok_or_else(|| ChainError::NoJsonBridge {
                        index,
                        step: name.to_string(),
                        prev: prev_name.to_string(),
                        ty: got.name.to_string(),
                        verb: "converted to JSON",
                        derive: "Serialize",
                    })?;
                    JsonBridge::ToJson(got.id, to_value)
                } else if got.is_json() {
                    let from_value = input.from_value.ok_or_else(|| ChainError::NoJsonBridge {
                        index,
                        step: name.to_string(),
                        prev: prev_name.to_string(),
                        ty: input.name.to_string(),
                        verb: "read from JSON",
                        derive: "Deserialize",
                    })?;
                    JsonBridge::FromJson(input.id, input.name, from_value)
                } else {
                    return Err(ChainError::Mismatch {
                        index,
                        step: name.to_string(),
                        wants: input.name.to_string(),
                        prev: prev_name.to_string(),
                        got: got.name.to_string(),
                    });
                };
                self.nodes.push(Typed {
                    node: Node::Owned(Box::new(bridge)),
                    input: got,
                    output: input,
                    on_error: OnFailure::DeadLetter,
                    dead_letter_channel: None,
                    policy: None,
                    batch: None,
                });
            }
        }
        self.nodes.push(Typed {
            node,
            input,
            output,
            on_error: OnFailure::DeadLetter,
            dead_letter_channel: None,
            policy: None,
            batch: None,
        });
        Ok(self)
    }

    /// Appends a step that takes its input in groups: the previous step's
    /// messages are held until `size` of them are there, or the source
    /// batch ends, then encoded as one JSON array and decoded as the step's
    /// `input` (so a step taking `Vec<T>` after a step emitting `T`, or any
    /// step after a JSON one).
    pub fn batched_step(
        &mut self,
        node: Node,
        input: TypeCodec,
        output: TypeCodec,
        size: usize,
    ) -> Result<&mut Self, BatchError> {
        let name = node.get().info().name;
        let prev = self.nodes.last().map_or(TypeCodec::json(), |t| t.output);
        let expected = format!("alloc::vec::Vec<{}>", prev.name);
        let takes_list = input.is_json() || input.name.starts_with("alloc::vec::Vec<");
        if !takes_list || (!prev.is_json() && input.name != expected) {
            return Err(BatchError::Mismatch {
                step: name.to_string(),
                wants: input.name.to_string(),
                got: prev.name.to_string(),
            });
        }
        let (Some(encode), Some(decode)) = (prev.encode, input.decode) else {
            return Err(BatchError::NotJson {
                step: name.to_string(),
                ty: if prev.encode.is_none() {
                    prev.name
                } else {
                    input.name
                }
                .to_string(),
            });
        };
        self.nodes.push(Typed {
            node,
            input: prev,
            output,
            on_error: OnFailure::DeadLetter,
            dead_letter_channel: None,
            policy: None,
            batch: Some(BatchSpec {
                size: size.max(1),
                encode,
                decode,
            }),
        });
        Ok(self)
    }

    /// Applies retry, timeout, rate limit and concurrency to the last step
    /// added; the flow then runs on its async path.
    pub fn policy(&mut self, applied: Applied) -> &mut Self {
        if let Some(last) = self.nodes.last_mut() {
            last.policy = Some(applied);
        }
        self
    }

    /// Ends the flow with `route`: its outputs carry the target the route
    /// chose (see [`JsonOut::route`]). Nothing can follow it.
    pub fn route(&mut self, node: RouteNode) -> Result<&mut Self, ChainError> {
        self.step(
            Node::Owned(Box::new(node)),
            TypeCodec::json(),
            tool::routed_codec(),
        )?;
        self.routed = true;
        Ok(self)
    }

    /// Sets what happens to a message the last step added fails on.
    ///
    /// [`OnFailure::Skip`] passes the step's input on to the sinks, so that
    /// input must be writable as JSON: otherwise this fails and nothing changes.
    pub fn on_error(&mut self, on_error: OnFailure) -> Result<&mut Self, SkipError> {
        if let Some(last) = self.nodes.last_mut() {
            if on_error == OnFailure::Skip && last.batch.is_some() {
                return Err(SkipError {
                    step: last.node.get().info().name.to_string(),
                    ty: "a batch of messages".to_string(),
                });
            }
            if on_error == OnFailure::Skip && last.input.encode.is_none() {
                return Err(SkipError {
                    step: last.node.get().info().name.to_string(),
                    ty: last.input.name.to_string(),
                });
            }
            last.on_error = on_error;
        }
        Ok(self)
    }

    /// Dead-letters the messages the last step added fails on into the
    /// Save/Load channel `channel`, instead of the run's dead-letter output.
    pub fn dead_letter_channel(&mut self, channel: impl Into<String>) -> &mut Self {
        if let Some(last) = self.nodes.last_mut() {
            last.on_error = OnFailure::DeadLetter;
            last.dead_letter_channel = Some(channel.into());
        }
        self
    }

    /// Appends a registered function.
    pub fn function(
        &mut self,
        registration: &'static crate::registry::Registration,
    ) -> Result<&mut Self, ChainError> {
        self.step(
            Node::Registered(registration.step),
            (registration.input)(),
            (registration.output)(),
        )
    }

    /// The flow, reading `input` when it has no step (then it passes its
    /// input on) and checked to have codecs at both ends: the first step's
    /// input must be readable from JSON and the last step's output writable.
    pub fn build(mut self, input_without_steps: TypeCodec) -> Result<DynFlow, BoundaryError> {
        let input = self
            .nodes
            .first()
            .map(|t| t.input)
            .unwrap_or(input_without_steps);
        let output = self.nodes.last().map(|t| t.output).unwrap_or(input);
        let first = self.nodes.first().map(|t| t.node.get().info().name);
        let last = self.nodes.last().map(|t| t.node.get().info().name);
        let decode = input.decode.ok_or_else(|| BoundaryError::CannotRead {
            step: first.unwrap_or("").to_string(),
            ty: input.name.to_string(),
        })?;
        let encode = match output.encode {
            Some(encode) => encode,
            // A routed message is written by `finish` itself.
            None if self.routed => never_encoded,
            None => {
                return Err(BoundaryError::CannotWrite {
                    step: last.unwrap_or("").to_string(),
                    ty: output.name.to_string(),
                });
            }
        };
        // A batched step emits per group, not per message: its outputs are
        // counted explicitly (as a fan-out's are), not derived from its calls.
        let infos: Vec<&'static StepInfo> = self
            .nodes
            .iter()
            .map(|t| {
                let info = t.node.get().info();
                if t.batch.is_some() {
                    counted_info(info)
                } else {
                    info
                }
            })
            .collect();
        let batches: Vec<Option<BatchSpec>> = self.nodes.iter().map(|t| t.batch).collect();
        let sync =
            infos.iter().all(|i| !i.is_async) && self.nodes.iter().all(|t| t.policy.is_none());
        let on_error: Vec<OnFailure> = self.nodes.iter().map(|t| t.on_error).collect();
        let skip_encoders: Vec<Option<EncodeFn>> = self
            .nodes
            .iter()
            .map(|t| {
                (t.on_error == OnFailure::Skip)
                    .then_some(t.input.encode)
                    .flatten()
            })
            .collect();
        let dead_letter_channels = self
            .nodes
            .iter()
            .filter_map(|t| Some((t.node.get().info().name, t.dead_letter_channel.clone()?)))
            .collect();
        // Steps with policies, or an `on_error` other than the default, count
        // what their policies did.
        let stats: Vec<Option<Arc<PolicyStats>>> = self
            .nodes
            .iter()
            .map(|t| match &t.policy {
                Some(applied) => Some(applied.stats()),
                None if t.on_error != OnFailure::DeadLetter || t.dead_letter_channel.is_some() => {
                    Some(Arc::new(PolicyStats::new()))
                }
                None => None,
            })
            .collect();
        let policy_stats = self
            .nodes
            .iter()
            .zip(&stats)
            .filter_map(|(t, s)| Some((t.node.get().info().name, s.clone()?)))
            .collect();
        Ok(DynFlow {
            routed: self.routed,
            name: self.name,
            infos: intern_steps(infos),
            any_batch: batches.iter().any(Option::is_some),
            holds_or_skips: batches.iter().any(Option::is_some)
                || skip_encoders.iter().any(Option::is_some),
            batches,
            any_skip: skip_encoders.iter().any(Option::is_some),
            skip_encoders,
            on_error,
            error_stats: stats,
            dead_letter_channels,
            stop: Shutdown::new(),
            policy_stats,
            policies: self.nodes.iter_mut().map(|t| t.policy.take()).collect(),
            nodes: self.nodes.into_iter().map(|t| t.node).collect(),
            input,
            decode,
            encode,
            sync,
        })
    }
}

/// A flow's first step cannot be read from JSON, or its last step's output
/// cannot be written as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundaryError {
    /// The input type has no `Deserialize`.
    #[error(
        "the flow reads its input from a source as JSON, but `{ty}` (the input of `{step}`) cannot be read from JSON: derive `Deserialize` for it, or start the flow with a step that takes a type that can"
    )]
    CannotRead {
        /// The first step.
        step: String,
        /// Its input type.
        ty: String,
    },
    /// The output type has no `Serialize`.
    #[error(
        "the flow writes its output to sinks as JSON, but `{ty}` (the output of `{step}`) cannot be written as JSON: derive `Serialize` for it, or end the flow with a step that emits a type that can"
    )]
    CannotWrite {
        /// The last step.
        step: String,
        /// Its output type.
        ty: String,
    },
}

/// A step cannot take its input in batches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The step does not take a list of what the previous step emits.
    #[error(
        "batched step `{step}` takes `{wants}`, but with `batch` it gets the previous step's `{got}` messages in groups: make it take `Vec<{got}>`, or remove `batch`"
    )]
    Mismatch {
        /// The batched step.
        step: String,
        /// What it takes.
        wants: String,
        /// What the previous step emits.
        got: String,
    },
    /// A group is passed as a JSON array, which this type cannot be part of.
    #[error(
        "batched step `{step}`: groups are passed as JSON arrays, but `{ty}` cannot be written or read as JSON: derive `Serialize` and `Deserialize` for it"
    )]
    NotJson {
        /// The batched step.
        step: String,
        /// The type without JSON support.
        ty: String,
    },
}

/// `on_error: skip` on a step whose input cannot be written as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`on_error: skip` of `{step}` passes its input on to the sinks as JSON, but `{ty}` cannot be written as JSON: derive `Serialize` for it, or choose `drop`, `dead_letter` or `stop`"
)]
pub struct SkipError {
    /// The step.
    pub step: String,
    /// Its input type.
    pub ty: String,
}

/// A flow assembled at run time. Runs like a `flow!` flow: see the module docs.
pub struct DynFlow {
    name: &'static str,
    /// Whether the last step is `route`.
    routed: bool,
    nodes: Vec<Node>,
    on_error: Vec<OnFailure>,
    /// Per step with `on_error: skip`: the encoder of its input.
    skip_encoders: Vec<Option<EncodeFn>>,
    /// Whether any step has `on_error: skip` (one test per message otherwise).
    any_skip: bool,
    /// Per batched step: how it groups its input.
    batches: Vec<Option<BatchSpec>>,
    /// Whether any step is batched.
    any_batch: bool,
    /// Whether any step is batched or has `on_error: skip`: the others run
    /// a driver without those checks.
    holds_or_skips: bool,
    /// Per step: where what its `on_error` did is counted.
    error_stats: Vec<Option<Arc<PolicyStats>>>,
    /// Steps that dead-letter into a channel, with the channel.
    dead_letter_channels: Vec<(&'static str, String)>,
    /// Triggered by a step whose `on_error` is [`OnFailure::Stop`].
    stop: Shutdown,
    /// Each step's policies, if any act at run time.
    policies: Vec<Option<Applied>>,
    policy_stats: StepPolicyStats,
    infos: &'static [&'static StepInfo],
    input: TypeCodec,
    decode: DecodeFn,
    encode: EncodeFn,
    sync: bool,
}

impl std::fmt::Debug for DynFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynFlow")
            .field("name", &self.name)
            .field(
                "steps",
                &self.infos.iter().map(|i| i.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The encoder of a flow that ends with `route`, whose messages `finish`
/// writes itself: never called.
fn never_encoded(_: &dyn Any) -> Result<Box<RawValue>, crate::registry::CodecError> {
    Err(crate::registry::CodecError::Slot {
        expected: "a message of a flow without `route`",
    })
}

/// The output of a [`DynFlow`]: one message as JSON text, and where a
/// `route` step sent it.
#[derive(Debug, Clone)]
pub struct JsonOut {
    /// The message.
    pub json: Box<RawValue>,
    /// The index of the route target, when the flow ends with `route`.
    pub route: Option<u16>,
}

impl serde::Serialize for JsonOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json.serialize(s)
    }
}

/// Description of the pseudo-step that writes a flow's output as JSON
/// (named in dead letters when that fails).
static ENCODE: StepInfo = StepInfo {
    name: "encode output",
    fn_name: "encode output",
    module: "syncflow::dynamic",
    doc: "Writes the flow's output as JSON.",
    file: file!(),
    line: line!(),
    is_async: false,
    shape: Shape::Fallible,
    input: || "the last step's output",
    output: || "JSON",
};

impl DynFlow {
    /// The type of the flow's input (the first step's payload).
    pub fn input(&self) -> TypeCodec {
        self.input
    }

    /// What the policies of the steps that have some did so far.
    pub fn policy_stats(&self) -> StepPolicyStats {
        self.policy_stats.clone()
    }

    /// Makes [`OnFailure::Stop`] trigger this handle (the run's shutdown).
    pub fn stop_with(&mut self, shutdown: Shutdown) {
        self.stop = shutdown;
    }

    /// The type the flow reads (its first step's input).
    pub fn input_codec(&self) -> TypeCodec {
        self.input
    }

    /// The dead-letter channel of each step that has one, by step name.
    pub fn dead_letter_channels(&self) -> &[(&'static str, String)] {
        &self.dead_letter_channels
    }

    /// With `on_error: skip` at step `k`: its input as JSON, kept before the
    /// call consumes it.
    #[inline]
    fn keep_for_skip(&self, k: usize, slot: &dyn Any) -> Option<Box<RawValue>> {
        if !self.any_skip {
            return None;
        }
        let encode = (*self.skip_encoders.get(k)?)?;
        encode(slot).ok()
    }

    /// Applies the failed step's `on_error` to a failure; `kept` is the
    /// step's input as JSON when its `on_error` is `skip`.
    #[cold]
    fn failed<E: Emit<JsonOut>>(
        &self,
        step: StepRef,
        error: &ErasedError,
        kept: Option<Box<RawValue>>,
        group: Option<&[u8]>,
        out: &mut E,
    ) {
        let failure = StepFailure {
            step,
            error: &**error,
        };
        let stats = self.error_stats.get(step.index).and_then(Option::as_ref);
        let action = self.on_error.get(step.index).copied().unwrap_or_default();
        let record = |action: OnError| {
            if let Some(stats) = stats {
                stats.record_on_error(&action);
            }
        };
        // A batched step failed on a whole group: the letter holds the group.
        let fail = |out: &mut E, failure: StepFailure<'_>| match group {
            Some(inputs) => out.fail_batch(failure, inputs),
            None => out.fail(failure),
        };
        match action {
            OnFailure::DeadLetter => {
                record(OnError::DeadLetter { channel: None });
                fail(out, failure)
            }
            OnFailure::Drop => record(OnError::Drop),
            OnFailure::Skip => match kept {
                Some(json) => {
                    record(OnError::Skip);
                    tracing::debug!(
                        flow = self.name,
                        step = step.info.name,
                        %error,
                        "step failed; message passed on unchanged (on_error: skip)"
                    );
                    out.emit(JsonOut { json, route: None });
                }
                // Its input could not be encoded: nothing to pass on.
                None => {
                    record(OnError::DeadLetter { channel: None });
                    fail(out, failure)
                }
            },
            OnFailure::Stop => {
                record(OnError::Stop);
                fail(out, failure);
                if !self.stop.is_shutdown() {
                    tracing::error!(
                        flow = self.name,
                        step = step.info.name,
                        %error,
                        "a step whose on_error is `stop` failed: stopping the flow"
                    );
                    self.stop.shutdown();
                }
            }
        }
    }

    /// The decoder of the flow's input from one JSON document (for sources).
    pub fn decoder(&self) -> DecodeFn {
        self.decode
    }

    #[inline]
    fn finish<E: Emit<JsonOut>>(&self, slot: &mut dyn Any, out: &mut E) {
        let encoded = if self.routed {
            match take::<Routed>(slot) {
                Some(routed) => crate::registry::to_raw_json(&routed.value)
                    .map(|json| JsonOut {
                        json,
                        route: Some(routed.target),
                    })
                    .map_err(crate::registry::CodecError::from),
                None => Err(crate::registry::CodecError::Slot {
                    expected: "a routed message",
                }),
            }
        } else {
            (self.encode)(slot).map(|json| JsonOut { json, route: None })
        };
        match encoded {
            Ok(json) => out.emit(json),
            Err(e) => out.fail(StepFailure {
                step: StepRef {
                    index: self.nodes.len(),
                    info: &ENCODE,
                },
                error: &e,
            }),
        }
    }

    fn run_metrics<E: Emit<JsonOut>>(
        &self,
        k: usize,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        timed: bool,
        out: &mut E,
    ) {
        let Some(node) = self.nodes.get(k) else {
            return self.finish(slot, out);
        };
        let step = StepRef {
            index: k,
            info: self.infos[k],
        };
        if self.holds_or_skips {
            return self.run_metrics_held(k, node, step, cx, slot, monitor, timed, out);
        }
        let result = node
            .get()
            .call_metrics(cx, slot, monitor, step, timed, &mut |s, m| {
                self.run_metrics(k + 1, cx, s, m, timed, out)
            });
        match result {
            Ok(n) => monitor.emitted(step, n),
            Err(e) => {
                monitor.failed(step, &*e);
                self.failed(step, &e, None, None, out);
            }
        }
    }

    /// [`DynFlow::run_metrics`] for flows with a batched or `skip` step:
    /// kept apart so that other flows pay nothing for them.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn run_metrics_held<E: Emit<JsonOut>>(
        &self,
        k: usize,
        node: &Node,
        step: StepRef,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut Metrics,
        timed: bool,
        out: &mut E,
    ) {
        let (mut group, bytes) = match self.hold(k, cx, slot) {
            Hold::Pass => (None, None),
            Hold::Kept => return,
            Hold::Full(group, bytes) => (Some(group), Some(bytes)),
            Hold::Failed(e, bytes) => {
                monitor.failed(step, &*e);
                return self.failed(step, &e, None, bytes.as_deref(), out);
            }
        };
        let slot: &mut dyn Any = match group.as_mut() {
            Some(group) => &mut **group,
            None => slot,
        };
        let kept = self.keep_for_skip(k, slot);
        let result = node
            .get()
            .call_metrics(cx, slot, monitor, step, timed, &mut |s, m| {
                self.run_metrics(k + 1, cx, s, m, timed, out)
            });
        match result {
            Ok(n) => monitor.emitted(step, n),
            Err(e) => {
                monitor.failed(step, &*e);
                self.failed(step, &e, kept, bytes.as_deref(), out);
            }
        }
    }

    /// Any other monitor: its counting hooks are called; steps are not timed.
    fn run_other<M: Monitor, E: Emit<JsonOut>>(
        &self,
        k: usize,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut M,
        out: &mut E,
    ) {
        let Some(node) = self.nodes.get(k) else {
            return self.finish(slot, out);
        };
        let step = StepRef {
            index: k,
            info: self.infos[k],
        };
        let (mut group, bytes) = if self.holds_or_skips {
            match self.hold(k, cx, slot) {
                Hold::Pass => (None, None),
                Hold::Kept => return,
                Hold::Full(group, bytes) => (Some(group), Some(bytes)),
                Hold::Failed(e, bytes) => {
                    monitor.failed(step, &*e);
                    return self.failed(step, &e, None, bytes.as_deref(), out);
                }
            }
        } else {
            (None, None)
        };
        let slot: &mut dyn Any = match group.as_mut() {
            Some(group) => &mut **group,
            None => slot,
        };
        let kept = self.keep_for_skip(k, slot);
        let result = node.get().call_bare(cx, slot, step, &mut |s, _| {
            self.run_other(k + 1, cx, s, &mut *monitor, &mut *out)
        });
        match result {
            Ok(n) => monitor.emitted(step, n),
            Err(e) => {
                monitor.failed(step, &*e);
                self.failed(step, &e, kept, bytes.as_deref(), out);
            }
        }
    }

    /// Runs the message in `slot` from step `k` on, synchronously, with any
    /// monitor.
    fn run_from_now<M: Monitor, E: Emit<JsonOut>>(
        &self,
        k: usize,
        cx: &Context,
        slot: &mut dyn Any,
        monitor: &mut M,
        timed: bool,
        out: &mut E,
    ) {
        let any: &mut dyn Any = monitor;
        if let Some(metrics) = any.downcast_mut::<Metrics>() {
            self.run_metrics(k, cx, slot, metrics, timed, out);
        } else if let Some(bare) = any.downcast_mut::<NoMonitor>() {
            self.run_other(k, cx, slot, bare, out);
        } else {
            self.run_other(k, cx, slot, monitor, out);
        }
    }

    /// Runs the message in `slot` from step `k` on, on the async path.
    async fn run_from<M: Monitor, E: Emit<JsonOut> + Send>(
        &self,
        k: usize,
        cx: &Context,
        input: BoxedSlot,
        monitor: &mut M,
        timed: bool,
        out: &mut E,
    ) {
        // Depth first, so that outputs keep the order of a fan-out.
        let mut stack: Vec<(usize, BoxedSlot)> = vec![(k, input)];
        while let Some((k, mut slot)) = stack.pop() {
            let Some(node) = self.nodes.get(k) else {
                self.finish(&mut *slot, out);
                continue;
            };
            let step = StepRef {
                index: k,
                info: self.infos[k],
            };
            let mut bytes = None;
            match self.hold(k, cx, &*slot) {
                Hold::Pass => {}
                Hold::Kept => continue,
                Hold::Full(group, held) => {
                    slot = group;
                    bytes = Some(held);
                }
                Hold::Failed(e, held) => {
                    monitor.failed(step, &*e);
                    self.failed(step, &e, None, held.as_deref(), out);
                    continue;
                }
            }
            let kept = self.keep_for_skip(k, &*slot);
            let timer = if timed {
                Some(monitor.enter(step))
            } else {
                None
            };
            let result = match self.policies.get(k).and_then(Option::as_ref) {
                Some(applied) => applied.call(node.get(), cx, &mut *slot).await,
                None => {
                    let call: AsyncCall<'_> = node.get().call_async(cx, &mut *slot);
                    call.await
                }
            };
            if let Some(timer) = timer {
                monitor.exit(step, timer);
            }
            match result {
                Ok(items) => {
                    monitor.emitted(step, items.len());
                    stack.extend(items.into_iter().rev().map(|item| (k + 1, item)));
                }
                Err(e) => {
                    monitor.failed(step, &*e);
                    self.failed(step, &e, kept, bytes.as_deref(), out);
                }
            }
        }
    }

    /// Calls batched step `k` with a full `group` (whose JSON is `bytes`),
    /// then runs what it emits through the rest of the flow.
    async fn run_group<M: Monitor, E: Emit<JsonOut> + Send>(
        &self,
        k: usize,
        cx: &Context,
        (mut group, bytes): (BoxedSlot, Vec<u8>),
        monitor: &mut M,
        timed: bool,
        out: &mut E,
    ) {
        let (Some(node), Some(&info)) = (self.nodes.get(k), self.infos.get(k)) else {
            return;
        };
        let step = StepRef { index: k, info };
        let result = if self.sync {
            let any: &mut dyn Any = monitor;
            if let Some(metrics) = any.downcast_mut::<Metrics>() {
                let result =
                    node.get()
                        .call_metrics(cx, &mut *group, metrics, step, timed, &mut |s, m| {
                            self.run_metrics(k + 1, cx, s, m, timed, out)
                        });
                if let Ok(n) = &result {
                    metrics.emitted(step, *n);
                }
                result.map(|_| ())
            } else {
                let result = node.get().call_bare(cx, &mut *group, step, &mut |s, _| {
                    self.run_other(k + 1, cx, s, &mut *monitor, &mut *out)
                });
                if let Ok(n) = &result {
                    monitor.emitted(step, *n);
                }
                result.map(|_| ())
            }
        } else {
            let result = match self.policies.get(k).and_then(Option::as_ref) {
                Some(applied) => applied.call(node.get(), cx, &mut *group).await,
                None => {
                    let call: AsyncCall<'_> = node.get().call_async(cx, &mut *group);
                    call.await
                }
            };
            match result {
                Ok(items) => {
                    monitor.emitted(step, items.len());
                    for item in items {
                        Box::pin(self.run_from(k + 1, cx, item, monitor, timed, out)).await;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            monitor.failed(step, &*e);
            self.failed(step, &e, None, Some(&bytes), out);
        }
    }

    /// At a batched step `k`: adds the message in `slot` to the group the
    /// worker holds, and hands the group over once it is full.
    #[inline]
    fn hold(&self, k: usize, cx: &Context, slot: &dyn Any) -> Hold {
        if !self.any_batch {
            return Hold::Pass;
        }
        let Some(Some(spec)) = self.batches.get(k) else {
            return Hold::Pass;
        };
        let json = match (spec.encode)(slot) {
            Ok(json) => json,
            Err(e) => return Hold::Failed(Box::new(e), None),
        };
        let mut held = cx.held.0.lock().unwrap_or_else(|p| p.into_inner());
        if held.len() <= k {
            held.resize_with(k + 1, Default::default);
        }
        let batch = &mut held[k];
        batch.json.push(if batch.count == 0 { b'[' } else { b',' });
        batch.json.extend_from_slice(json.get().as_bytes());
        batch.count += 1;
        if batch.count < spec.size {
            return Hold::Kept;
        }
        let bytes = close_group(batch);
        drop(held);
        decode_group(spec, bytes)
    }
}

/// What [`DynFlow::hold`] did with a message.
enum Hold {
    /// The step is not batched: call it with the message.
    Pass,
    /// The message joined the group held for the step.
    Kept,
    /// The group is full: call the step with it (and its JSON, for dead letters).
    Full(BoxedSlot, Vec<u8>),
    /// The message could not join, or the group could not be read back.
    Failed(ErasedError, Option<Vec<u8>>),
}

/// Ends a held group's JSON array and empties the group.
fn close_group(batch: &mut crate::context::HeldBatch) -> Vec<u8> {
    batch.json.push(b']');
    batch.count = 0;
    std::mem::take(&mut batch.json)
}

fn decode_group(spec: &BatchSpec, bytes: Vec<u8>) -> Hold {
    match (spec.decode)(&bytes) {
        Ok(group) => Hold::Full(group, bytes),
        Err(e) => Hold::Failed(Box::new(e), Some(bytes)),
    }
}

/// A copy of a batched step's description that counts its outputs
/// explicitly (one per message list the step emits for a whole group).
fn counted_info(info: &'static StepInfo) -> &'static StepInfo {
    static COPIES: OnceLock<Mutex<std::collections::HashMap<usize, &'static StepInfo>>> =
        OnceLock::new();
    let mut copies = COPIES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    copies
        .entry(info as *const StepInfo as usize)
        .or_insert_with(|| {
            Box::leak(Box::new(StepInfo {
                shape: Shape::FallibleFanOut,
                ..*info
            }))
        })
}

impl FlowDef for DynFlow {
    type Input = BoxedSlot;
    type Output = JsonOut;

    fn name(&self) -> &'static str {
        self.name
    }

    fn steps(&self) -> &'static [&'static StepInfo] {
        self.infos
    }

    fn check(&self, resources: &Resources, problems: &mut Vec<String>) {
        for node in &self.nodes {
            node.get().check(resources, problems);
        }
    }

    fn is_sync(&self) -> bool {
        self.sync
    }

    fn process_now<M, E>(&self, cx: &Context, monitor: &mut M, mut input: BoxedSlot, out: &mut E)
    where
        M: Monitor,
        E: Emit<JsonOut>,
    {
        let timed = monitor.begin();
        self.run_from_now(0, cx, &mut *input, monitor, timed, out);
    }

    #[allow(clippy::manual_async_fn)] // the trait's signature spells out `Send`
    fn process<'a, M, E>(
        &'a self,
        cx: &'a Context,
        monitor: &'a mut M,
        input: BoxedSlot,
        out: &'a mut E,
    ) -> impl Future<Output = ()> + Send + 'a
    where
        M: Monitor,
        E: Emit<JsonOut> + Send,
    {
        async move {
            if self.sync {
                return self.process_now(cx, monitor, input, out);
            }
            let timed = monitor.begin();
            self.run_from(0, cx, input, monitor, timed, out).await;
        }
    }

    fn end_batch<'a>(
        &'a self,
        cx: &'a Context,
        monitor: &'a mut (dyn Any + Send),
        out: &'a mut (dyn EmitAny + Send),
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send + 'a>>> {
        if !self.any_batch {
            return None;
        }
        Some(Box::pin(async move {
            let mut out = FromAny(out);
            // The steps are counted by the `Metrics` monitor; any other
            // monitor misses the calls made here for the partial groups.
            let mut bare = NoMonitor;
            match monitor.downcast_mut::<Metrics>() {
                Some(metrics) => self.run_held(cx, metrics, &mut out).await,
                None => self.run_held(cx, &mut bare, &mut out).await,
            }
        }))
    }
}

/// The emitter of [`FlowDef::end_batch`], typed again.
struct FromAny<'a>(&'a mut (dyn EmitAny + Send));

impl Emit<JsonOut> for FromAny<'_> {
    fn emit(&mut self, item: JsonOut) {
        self.0.emit_any(&mut Some(item));
    }
    fn fail(&mut self, failure: StepFailure<'_>) {
        self.0.fail(failure);
    }
    fn fail_batch(&mut self, failure: StepFailure<'_>, inputs: &[u8]) {
        self.0.fail_batch(failure, inputs);
    }
}

impl DynFlow {
    /// Runs the groups the worker holds, in step order: running one group
    /// may fill a later step's.
    async fn run_held<M: Monitor, E: Emit<JsonOut> + Send>(
        &self,
        cx: &Context,
        monitor: &mut M,
        out: &mut E,
    ) {
        for k in 0..self.batches.len() {
            let Some(spec) = self.batches[k] else {
                continue;
            };
            let bytes = {
                let mut held = cx.held.0.lock().unwrap_or_else(|p| p.into_inner());
                match held.get_mut(k) {
                    Some(batch) if batch.count > 0 => close_group(batch),
                    _ => continue,
                }
            };
            let timed = monitor.begin();
            let step = StepRef {
                index: k,
                info: self.infos[k],
            };
            let group = match decode_group(&spec, bytes) {
                Hold::Full(group, bytes) => (group, bytes),
                Hold::Failed(e, bytes) => {
                    monitor.failed(step, &*e);
                    self.failed(step, &e, None, bytes.as_deref(), out);
                    continue;
                }
                Hold::Pass | Hold::Kept => continue,
            };
            self.run_group(k, cx, group, monitor, timed, out).await;
        }
    }
}

/// Names of run-time flows live as long as the process (they are few, and
/// the monitor's statistics refer to them); the same name is stored once.
pub(crate) fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// The step list of a run-time flow, stored once per distinct list.
fn intern_steps(steps: Vec<&'static StepInfo>) -> &'static [&'static StepInfo] {
    type Key = Vec<usize>;
    static LISTS: OnceLock<Mutex<std::collections::HashMap<Key, &'static [&'static StepInfo]>>> =
        OnceLock::new();
    let key: Key = steps
        .iter()
        .map(|s| *s as *const StepInfo as usize)
        .collect();
    let mut lists = LISTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    lists
        .entry(key)
        .or_insert_with(|| Box::leak(steps.into_boxed_slice()))
}
