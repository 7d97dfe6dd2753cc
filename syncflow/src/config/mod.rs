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
mod io;
pub mod model;
mod policies;
mod run;
mod steps;

use io::{check_sink, check_source};
use policies::{check_policies, step_policy};
use steps::{Resolved, describe_chain, resolve_step, step_names};

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::dynamic::{BoundaryError, DynFlow, DynFlowBuilder, Node};
use crate::policy::PolicySet;
use crate::registry::{self, TypeCodec};

pub use error::{ConfigError, ConfigErrors};
pub use model::{FlowFile, FlowSpec, SinkSpec, SourceSpec, StepSpec, schema_json};
pub(crate) use run::open_store;

/// A checked flow file, ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The file it came from (or the name given to [`load_str`]).
    pub origin: String,
    /// The flows, in name order.
    pub flows: Vec<PlannedFlow>,
    /// The channel store, when a flow saves or loads.
    pub channels: Option<ChannelsPlan>,
    /// Shared resources for the steps (`Res<T>` parameters), given by the
    /// program that runs the file.
    pub resources: crate::context::Resources,
}

impl Plan {
    /// Adds a shared resource, available to every step as `Res<T>`.
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// Uses these shared resources (replacing any given before).
    pub fn with_resources(mut self, resources: crate::context::Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Checks that every context parameter of every step can be supplied
    /// with the plan's resources; one line per problem, naming the flow.
    pub fn check_resources(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for flow in &self.flows {
            let mut found = Vec::new();
            crate::flow::FlowDef::check(&flow.flow, &self.resources, &mut found);
            problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("flow `{}`: {p}", flow.name)),
            );
        }
        problems
    }
}

/// The checked channel store settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelsPlan {
    /// The store file.
    pub path: PathBuf,
    /// Retention by channel.
    pub retention: Vec<(String, crate::channel::Retention)>,
}

/// The store file when `channels.path` is not given.
pub const DEFAULT_CHANNELS_PATH: &str = ".syncflow/channels.redb";

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
    /// A Save/Load channel, read with a named cursor.
    Load {
        /// The channel.
        channel: String,
        /// The cursor's name.
        reader: String,
    },
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
    /// A Save/Load channel.
    Save {
        /// The channel.
        channel: String,
    },
}

/// The channel store's settings, when the file uses channels or sets them.
fn check_channels(
    spec: Option<&Spanned<model::ChannelsSpec>>,
    used: bool,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<ChannelsPlan> {
    if spec.is_none() && !used {
        return None;
    }
    let (loc, path, retention_specs) = match spec {
        Some(s) => (
            s.referenced,
            s.value.path.as_deref(),
            Some(&s.value.retention),
        ),
        None => (Location::UNKNOWN, None, None),
    };
    let at = |message: String| ConfigError::new(origin, loc, message);
    let path = match path {
        Some(p) => match env::interpolate(p) {
            Ok(p) => PathBuf::from(p),
            Err(m) => {
                errors.push(at(format!("channels.path: {m}")));
                return None;
            }
        },
        None => PathBuf::from(DEFAULT_CHANNELS_PATH),
    };
    let mut retention = Vec::new();
    for (channel, r) in retention_specs.into_iter().flatten() {
        let mut keep = crate::channel::Retention::default();
        let before = errors.len();
        if let Err(e) = crate::channel::check_name("channel", channel) {
            errors.push(at(format!("channels.retention: {e}")));
        }
        match r.max_records {
            Some(0) => errors.push(at(format!(
                "channels.retention.{channel}.max_records must be at least 1"
            ))),
            Some(n) => keep = keep.max_records(n),
            None => {}
        }
        if let Some(age) = &r.max_age {
            match crate::policy::duration::parse(age) {
                Ok(d) if !d.is_zero() => keep = keep.max_age(d),
                Ok(_) => errors.push(at(format!(
                    "channels.retention.{channel}.max_age must be above zero"
                ))),
                Err(e) => errors.push(at(format!("channels.retention.{channel}.max_age: {e}"))),
            }
        }
        if errors.len() == before {
            retention.push((channel.clone(), keep));
        }
    }
    Some(ChannelsPlan { path, retention })
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
    let uses_channels = flows.iter().any(|f| {
        matches!(f.source, SourcePlan::Load { .. })
            || f.sinks.iter().any(|s| matches!(s, SinkPlan::Save { .. }))
    });
    let channels = check_channels(file.channels.as_ref(), uses_channels, origin, &mut errors);
    errors.into_result(Plan {
        origin: origin.to_string(),
        flows,
        channels,
        resources: crate::context::Resources::new(),
    })
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
    let source = check_source(name, &spec.source, origin, errors);
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
