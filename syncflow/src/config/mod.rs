//! Flows from configuration files: the YAML model, load-time checking
//! against the registry, and running the checked flows.
//!
//! ```yaml
//! flows:
//!   orders:
//!     source: { file: data/orders.jsonl, state_dir: .syncflow }
//!     steps: [parse, validate, enrich, to_row]
//!     sinks:
//!       - file: target/rows.jsonl
//!     dead_letter: target/orders.dead.jsonl
//!     workers: 2
//! ```
//!
//! [`load`] parses a file and checks it like a compiler: every function
//! exists (else the closest names are suggested), each step takes what the
//! previous one emits, the first step's input can be read from JSON and the
//! last step's output written as JSON, and every setting is valid. Every
//! problem is reported, each with `file:line:col`; nothing runs if there is
//! one. The result is a [`Plan`] of [`DynFlow`]s ready to run.

mod env;
mod error;
pub mod model;

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::connector::{JsonLinesSink, JsonLinesSource, StdinSource, StdoutSink};
use crate::dynamic::{
    BoundaryError, ChainError, DynFlow, DynFlowBuilder, NestedParts, Node, OnFailure, find_flow,
    registered_flows,
};
use crate::flow::Flow;
use crate::policy::{OnError, Policy, PolicySet};
use crate::registry::{self, LookupError, TypeCodec};
use crate::runtime::{RunError, RunSummary, Runtime, Shutdown};

pub use error::{ConfigError, ConfigErrors};
pub use model::{FlowFile, FlowSpec, SinkSpec, SourceSpec, StepSpec, schema_json};

/// A checked flow file, ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The file it came from (or the name given to [`load_str`]).
    pub origin: String,
    /// The flows, in name order.
    pub flows: Vec<PlannedFlow>,
}

/// One checked flow.
#[derive(Debug)]
pub struct PlannedFlow {
    /// The flow's name.
    pub name: String,
    /// The steps, assembled.
    pub flow: DynFlow,
    /// Where its input comes from.
    pub source: SourcePlan,
    /// Where its outputs go.
    pub sinks: Vec<SinkPlan>,
    /// The dead-letter file, if any.
    pub dead_letter: Option<PathBuf>,
    /// Parallel workers.
    pub workers: usize,
    /// Records per source batch.
    pub batch_size: usize,
}

/// A checked source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    /// A JSON-lines file, with an optional checkpoint directory.
    File {
        /// The file.
        path: PathBuf,
        /// Where its checkpoint is kept.
        state_dir: Option<PathBuf>,
    },
    /// Standard input.
    Stdin,
}

/// A checked sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkPlan {
    /// A JSON-lines file.
    File {
        /// The file.
        path: PathBuf,
        /// Append instead of replacing.
        append: bool,
        /// Sync to disk at each flush.
        fsync: bool,
    },
    /// Standard output.
    Stdout,
}

/// Reads and checks a flow file.
pub fn load(path: impl AsRef<Path>) -> Result<Plan, ConfigErrors> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            &origin,
            Location::UNKNOWN,
            format!("cannot read the flow file: {e}; check the path"),
        ))
    })?;
    load_str(&text, &origin)
}

/// Checks a flow file given as text; `origin` names it in errors.
pub fn load_str(text: &str, origin: &str) -> Result<Plan, ConfigErrors> {
    let file: FlowFile = serde_saphyr::from_str(text).map_err(|e| {
        let location = e.location().unwrap_or(Location::UNKNOWN);
        ConfigErrors::one(ConfigError::new(
            origin,
            location,
            error::describe_yaml_error(&e),
        ))
    })?;
    check(file, origin)
}

/// Checks a parsed flow file against the registry.
pub fn check(file: FlowFile, origin: &str) -> Result<Plan, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    if file.flows.is_empty() {
        errors.push(ConfigError::new(
            origin,
            Location::UNKNOWN,
            "the file declares no flow: add one under `flows:`".to_string(),
        ));
    }
    let policies = check_policies(&file, origin, &mut errors);
    let mut flows = Vec::new();
    for (name, spec) in file.flows {
        if let Some(flow) = check_flow(&name, spec, &policies, origin, &mut errors) {
            flows.push(flow);
        }
    }
    errors.into_result(Plan {
        origin: origin.to_string(),
        flows,
    })
}

/// Reads and validates `policies:` against the functions the flows use.
fn check_policies(file: &FlowFile, origin: &str, errors: &mut ConfigErrors) -> PolicySet {
    let Some(spanned) = &file.policies else {
        return PolicySet::default();
    };
    let at = |message: String| ConfigError::new(origin, spanned.referenced, message);
    let set: PolicySet = match serde_json::from_value(spanned.value.clone()) {
        Ok(set) => set,
        Err(e) => {
            errors.push(at(format!("policies: {e}")));
            return PolicySet::default();
        }
    };
    let mut used: Vec<&str> = file
        .flows
        .values()
        .flat_map(|f| f.value.steps.iter())
        .filter_map(|s| match &s.value {
            StepSpec::Function(name) => Some(name.as_str()),
            StepSpec::WithArgs(_) => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    for problem in set.problems(&used) {
        errors.push(at(problem.to_string()));
    }
    set
}

/// The `on_error` a step runs with; a policy this version does not apply to
/// YAML flows is an error rather than a setting silently ignored.
fn step_policy(
    function: &str,
    policies: &PolicySet,
    at: &dyn Fn(String) -> ConfigError,
    errors: &mut ConfigErrors,
) -> OnFailure {
    let policy: Policy = policies.resolve(function, &Policy::default());
    let unsupported = [
        ("retry", policy.retry.is_some()),
        ("timeout", policy.timeout.is_some()),
        ("concurrency", policy.concurrency.is_some()),
        ("batch", policy.batch.is_some()),
        ("rate_limit", policy.rate_limit.is_some()),
    ];
    for (key, set) in unsupported {
        if set {
            errors.push(at(format!(
                "policy `{key}` of `{function}` is not applied to YAML flows by this version of syncflow; remove it (it would be ignored)"
            )));
        }
    }
    match policy.on_error() {
        OnError::DeadLetter { channel: None } => OnFailure::DeadLetter,
        OnError::Drop => OnFailure::Drop,
        OnError::Stop => OnFailure::Stop,
        other => {
            errors.push(at(format!(
                "`on_error: {}` of `{function}` is not applied to YAML flows by this version of syncflow; use `dead_letter` (to the flow's dead_letter file), `drop` or `stop`",
                other.name()
            )));
            OnFailure::DeadLetter
        }
    }
}

fn check_flow(
    name: &str,
    spec: Spanned<FlowSpec>,
    policies: &PolicySet,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<PlannedFlow> {
    let at = |loc: Location, message: String| ConfigError::new(origin, loc, message);
    let flow_loc = spec.referenced;
    let spec = spec.value;
    let before = errors.len();

    if name.trim().is_empty() {
        errors.push(at(flow_loc, "a flow needs a non-empty name".into()));
    }

    // Steps, each against the one before.
    let mut builder = DynFlowBuilder::new(name);
    let mut chain_ok = true;
    for step in &spec.steps {
        let loc = step.referenced;
        let resolved = match &step.value {
            StepSpec::Function(step_name) => match resolve_step(step_name) {
                Ok(r) => r,
                Err(message) => {
                    errors.push(at(loc, message));
                    chain_ok = false;
                    continue;
                }
            },
            StepSpec::WithArgs(map) => {
                let keys: Vec<&str> = map.keys().map(String::as_str).collect();
                let message = match keys.as_slice() {
                    [key] if resolve_step(key).is_ok() => format!(
                        "`{key}` is a registered step and takes no arguments: write it as `- {key}`"
                    ),
                    [key] => format!(
                        "unknown step `{key}`: a step is the name of a registered function or flow{}",
                        match registry::did_you_mean(&registry::closest(
                            key,
                            step_names().into_iter()
                        )) {
                            Some(q) => format!("; {q}"),
                            None => " (run `syncflow functions` to list them)".to_string(),
                        }
                    ),
                    _ => "a step is written as one name (`- parse`) or a one-key map (`- name: arguments`)".to_string(),
                };
                errors.push(at(loc, message));
                chain_ok = false;
                continue;
            }
        };
        if !chain_ok {
            // After an unknown step the types of what follows are unknown.
            continue;
        }
        let (step_name, pushed) = match resolved {
            Resolved::Function(registration) => {
                (registration.info.name, builder.function(registration))
            }
            Resolved::Flow(name, parts) => (
                name,
                builder.step(Node::Owned(parts.step), parts.input, parts.output),
            ),
        };
        if let Err(e) = pushed {
            errors.push(at(loc, describe_chain(&e)));
            chain_ok = false;
            continue;
        }
        let on_error = step_policy(step_name, policies, &|message| at(loc, message), errors);
        builder.on_error(on_error);
    }

    // Source.
    let source = check_source(&spec.source, origin, errors);
    let sinks: Vec<SinkPlan> = spec
        .sinks
        .iter()
        .filter_map(|s| check_sink(s, origin, errors))
        .collect();
    let dead_letter = spec.dead_letter.as_ref().and_then(|d| {
        env::interpolate(&d.value)
            .map(PathBuf::from)
            .map_err(|m| errors.push(at(d.referenced, format!("dead_letter: {m}"))))
            .ok()
    });
    for (key, value) in [("workers", spec.workers), ("batch_size", spec.batch_size)] {
        if value == Some(0) {
            errors.push(at(
                flow_loc,
                format!("flow `{name}`: `{key}` must be at least 1"),
            ));
        }
    }

    let flow = if chain_ok {
        match builder.build(TypeCodec::json()) {
            Ok(flow) => Some(flow),
            Err(e @ BoundaryError::CannotRead { .. }) => {
                errors.push(at(spec.source.referenced, e.to_string()));
                None
            }
            Err(e @ BoundaryError::CannotWrite { .. }) => {
                let loc = spec
                    .sinks
                    .first()
                    .map(|s| s.referenced)
                    .or_else(|| spec.steps.last().map(|s| s.referenced))
                    .unwrap_or(flow_loc);
                errors.push(at(loc, e.to_string()));
                None
            }
        }
    } else {
        None
    };

    if errors.len() > before {
        return None;
    }
    Some(PlannedFlow {
        name: name.to_string(),
        flow: flow?,
        source: source?,
        sinks,
        dead_letter,
        workers: spec.workers.unwrap_or(1),
        batch_size: spec
            .batch_size
            .unwrap_or(crate::runtime::DEFAULT_BATCH_SIZE),
    })
}

fn check_source(
    spec: &Spanned<SourceSpec>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<SourcePlan> {
    let loc = spec.referenced;
    let s = &spec.value;
    let at = |message: String| ConfigError::new(origin, loc, message);
    let kinds = [s.file.is_some(), s.stdin == Some(true)];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(at(
            "a source is exactly one of `file: <path>` or `stdin: true`".to_string(),
        ));
        return None;
    }
    if let Some(file) = &s.file {
        let path = env::interpolate(file)
            .map_err(|m| errors.push(at(format!("source file: {m}"))))
            .ok()?;
        let state_dir = match &s.state_dir {
            Some(dir) => Some(PathBuf::from(
                env::interpolate(dir)
                    .map_err(|m| errors.push(at(format!("source state_dir: {m}"))))
                    .ok()?,
            )),
            None => None,
        };
        return Some(SourcePlan::File {
            path: PathBuf::from(path),
            state_dir,
        });
    }
    if s.state_dir.is_some() {
        errors.push(at(
            "`state_dir` applies to a `file` source only: standard input cannot be resumed"
                .to_string(),
        ));
        return None;
    }
    Some(SourcePlan::Stdin)
}

fn check_sink(
    spec: &Spanned<SinkSpec>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<SinkPlan> {
    let loc = spec.referenced;
    let s = &spec.value;
    let at = |message: String| ConfigError::new(origin, loc, message);
    let kinds = [s.file.is_some(), s.stdout == Some(true)];
    if kinds.iter().filter(|k| **k).count() != 1 {
        errors.push(at(
            "a sink is exactly one of `file: <path>` or `stdout: true`".to_string(),
        ));
        return None;
    }
    if let Some(file) = &s.file {
        let path = env::interpolate(file)
            .map_err(|m| errors.push(at(format!("sink file: {m}"))))
            .ok()?;
        return Some(SinkPlan::File {
            path: PathBuf::from(path),
            append: s.append.unwrap_or(false),
            fsync: s.fsync.unwrap_or(true),
        });
    }
    if s.append.is_some() || s.fsync.is_some() {
        errors.push(at(
            "`append` and `fsync` apply to a `file` sink only".to_string()
        ));
        return None;
    }
    Some(SinkPlan::Stdout)
}

/// A step name, resolved.
enum Resolved {
    Function(&'static registry::Registration),
    Flow(&'static str, NestedParts),
}

/// A registered function, else a registered static flow, by name.
fn resolve_step(name: &str) -> Result<Resolved, String> {
    match registry::lookup(name) {
        Ok(r) => Ok(Resolved::Function(r)),
        Err(LookupError::Unknown { .. }) => match find_flow(name) {
            Some(flow) => Ok(Resolved::Flow(flow.name, (flow.build)())),
            None => Err(LookupError::Unknown {
                name: name.to_string(),
                closest: registry::closest(name, step_names().into_iter()),
            }
            .to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// Every name a step can use: registered functions and flows.
fn step_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = registry::registrations()
        .iter()
        .map(|r| r.info.name)
        .collect();
    names.extend(registered_flows().iter().map(|f| f.name));
    names
}

fn describe_chain(e: &ChainError) -> String {
    e.to_string()
}

impl Plan {
    /// The names of the flows.
    pub fn names(&self) -> Vec<&str> {
        self.flows.iter().map(|f| f.name.as_str()).collect()
    }

    /// Runs every flow in parallel until each has read all its input or
    /// `shutdown` is triggered; returns each flow's summary, in order.
    /// With `signals`, Ctrl-C and SIGTERM stop every flow gracefully.
    pub async fn run(
        self,
        shutdown: Shutdown,
        signals: bool,
    ) -> Vec<(String, Result<RunSummary, RunError>)> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, planned) in self.flows.into_iter().enumerate() {
            // Each flow can stop alone (`on_error: stop`); all stop with the plan.
            let shutdown = shutdown.child();
            tasks.spawn(async move {
                let name = planned.name.clone();
                (i, name, planned.run(shutdown, signals).await)
            });
        }
        let mut done = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(result) => done.push(result),
                Err(e) => done.push((
                    usize::MAX,
                    "?".to_string(),
                    Err(RunError::Panicked {
                        task: "a flow's task".to_string(),
                        message: e.to_string(),
                    }),
                )),
            }
        }
        done.sort_by_key(|(i, ..)| *i);
        done.into_iter().map(|(_, name, r)| (name, r)).collect()
    }
}

impl PlannedFlow {
    /// Runs this flow until its input ends or `shutdown` is triggered (or,
    /// with `signals`, Ctrl-C or SIGTERM arrives).
    pub async fn run(self, shutdown: Shutdown, signals: bool) -> Result<RunSummary, RunError> {
        let options = Options {
            shutdown: shutdown.clone(),
            sinks: self.sinks,
            dead_letter: self.dead_letter,
            workers: self.workers,
            batch_size: self.batch_size,
            signals,
        };
        let decode = self.flow.decoder();
        let mut def = self.flow;
        def.stop_with(shutdown.clone());
        let flow = Flow::new(def);
        match self.source {
            SourcePlan::File { path, state_dir } => {
                let source_error = |error| RunError::Source {
                    name: path.display().to_string(),
                    error,
                };
                let mut source = JsonLinesSource::open_with(&path, decode).map_err(source_error)?;
                if let Some(dir) = state_dir {
                    source = source.state_dir(dir).map_err(source_error)?;
                }
                finish(Runtime::new(flow).source(source), options).await
            }
            SourcePlan::Stdin => {
                let source = StdinSource::with_decoder(decode);
                finish(Runtime::new(flow).source(source), options).await
            }
        }
    }
}

/// How a planned flow runs, apart from its source.
struct Options {
    sinks: Vec<SinkPlan>,
    dead_letter: Option<PathBuf>,
    workers: usize,
    batch_size: usize,
    shutdown: Shutdown,
    signals: bool,
}

async fn finish<S: crate::connector::Source<Item = crate::registry::BoxedSlot>>(
    mut rt: Runtime<DynFlow, crate::monitor::Metrics, S>,
    options: Options,
) -> Result<RunSummary, RunError> {
    let Options {
        sinks,
        dead_letter,
        workers,
        batch_size,
        shutdown,
        signals,
    } = options;
    for sink in sinks {
        rt = match sink {
            SinkPlan::File {
                path,
                append,
                fsync,
            } => {
                let sink = if append {
                    JsonLinesSink::append(&path)
                } else {
                    JsonLinesSink::create(&path)
                }
                .map_err(|error| RunError::Sink {
                    name: path.display().to_string(),
                    error,
                })?;
                rt.sink(sink.fsync(fsync))
            }
            SinkPlan::Stdout => rt.sink(StdoutSink::new()),
        };
    }
    if let Some(path) = dead_letter {
        rt = rt.dead_letter(path);
    }
    rt.workers(workers)
        .batch_size(batch_size)
        .handle_signals(signals)
        .with_shutdown(shutdown)
        .run()
        .await
}
