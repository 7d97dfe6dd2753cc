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

pub mod connectors;
mod env;
mod error;
mod io;
pub mod model;
mod policies;
mod run;
mod steps;
pub mod testing;

use io::{check_sink, check_source};
use policies::{check_policies, step_policy};
use steps::{Resolved, resolve_step, step_names};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::{Location, Spanned};

use crate::dynamic::{BoundaryError, DynFlow, DynFlowBuilder, Node, RouteNode, ToolNode};
use crate::policy::{Policy, PolicySet};
use crate::registry::{self, TypeCodec};
use crate::toolbox::{TOOL_NAMES, Tool, ToolSpec};

pub use error::{ConfigError, ConfigErrors};
pub use model::{FlowFile, FlowSpec, SinkSpec, SourceSpec, StepSpec, schema_json};
pub(crate) use run::{open_store, prepare_brokers};

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

/// The checked channel settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelsPlan {
    /// The embedded store's file.
    pub path: PathBuf,
    /// Retention by channel.
    pub retention: Vec<(String, crate::channel::Retention)>,
    /// The channels kept by a broker (their retention applied).
    pub brokers: Vec<crate::channel::BrokerChannel>,
    /// Whether a flow uses a channel of the embedded store (else the
    /// store file is not opened).
    pub embedded: bool,
}

impl ChannelsPlan {
    /// The broker that keeps `channel`, if one does.
    pub fn broker(&self, channel: &str) -> Option<&crate::channel::BrokerChannel> {
        self.brokers.iter().find(|b| b.channel() == channel)
    }
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
    /// For each sink, the route target whose messages it takes (`None`:
    /// every message).
    pub routes: Vec<Option<u16>>,
    /// The dead-letter file, if any.
    pub dead_letter: Option<PathBuf>,
    /// Parallel workers.
    pub workers: usize,
    /// The key that partitions messages across workers (`key:`).
    pub key: Option<KeyPlan>,
    /// Records per source batch.
    pub batch_size: usize,
    /// Where the run publishes its live counters, if someone watches them.
    pub progress: Option<crate::runtime::Progress>,
}

/// A checked `key:`: the expression, and how to read the flow's input as JSON.
#[derive(Clone)]
pub struct KeyPlan {
    /// The compiled expression.
    pub expr: Arc<crate::toolbox::Expr>,
    to_value: crate::registry::ToValueFn,
}

impl std::fmt::Debug for KeyPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeyPlan").field(&self.expr.source()).finish()
    }
}

impl KeyPlan {
    /// The key's hash of one input message: equal keys, equal hashes. A
    /// message whose key cannot be computed hashes like a `null` key (all
    /// such messages go to one worker, in order).
    pub fn hash(&self, input: &crate::registry::BoxedSlot) -> u64 {
        use std::hash::{Hash, Hasher};
        let key = (self.to_value)(&**input)
            .ok()
            .and_then(|value| self.expr.eval(&value).ok())
            .unwrap_or(serde_json::Value::Null);
        let mut hasher = std::hash::DefaultHasher::new();
        key.to_string().hash(&mut hasher);
        hasher.finish()
    }
}

/// A checked source.
#[derive(Debug, Clone)]
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
    /// A connector (a broker, a database's change log, a webhook).
    Connector(connectors::ConnectorSource),
}

/// A checked sink.
#[derive(Debug, Clone)]
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
    /// A connector (a broker, a database table, an HTTP endpoint).
    Connector(connectors::ConnectorSink),
}

/// The channel settings, when the file uses channels or sets them.
fn check_channels(
    spec: Option<&Spanned<model::ChannelsSpec>>,
    used: &std::collections::BTreeSet<String>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<ChannelsPlan> {
    if spec.is_none() && used.is_empty() {
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
    let brokers = spec
        .map(|s| check_brokers(&s.value.brokers, &retention, origin, errors))
        .unwrap_or_default();
    let embedded = used
        .iter()
        .any(|c| !brokers.iter().any(|b| b.channel() == c));
    Some(ChannelsPlan {
        path,
        retention,
        brokers,
        embedded,
    })
}

/// `channels.brokers`: each channel kept by exactly one broker, no two
/// channels in the same stream.
// Without a broker compiled in, every broker key is an error.
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(unreachable_code))]
fn check_brokers(
    specs: &std::collections::BTreeMap<String, Spanned<model::BrokerSpec>>,
    retention: &[(String, crate::channel::Retention)],
    origin: &str,
    errors: &mut ConfigErrors,
) -> Vec<crate::channel::BrokerChannel> {
    let mut brokers: Vec<crate::channel::BrokerChannel> = Vec::new();
    for (channel, spec) in specs {
        let at = |message: String| ConfigError::new(origin, spec.referenced, message);
        if let Err(e) = crate::channel::check_name("channel", channel) {
            errors.push(at(format!("channels.brokers: {e}")));
            continue;
        }
        let given: Vec<(&str, &serde_json::Value)> =
            [("nats", &spec.value.nats), ("redis", &spec.value.redis)]
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_ref()?)))
                .collect();
        let [(key, settings)] = given[..] else {
            errors.push(at(format!(
                "channels.brokers.{channel}: give exactly one broker, `nats: {{...}}` or `redis: {{...}}` (found {})",
                if given.is_empty() {
                    "none".to_string()
                } else {
                    given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(" and ")
                }
            )));
            continue;
        };
        let mut settings = settings.clone();
        if settings.is_null() {
            settings = serde_json::Value::Object(Default::default());
        }
        let broker = connectors::interpolate_all(&mut settings)
            .and_then(|()| crate::channel::broker_from_settings(channel, key, settings));
        let broker = match broker {
            Ok(b) => b,
            Err(m) => {
                errors.push(at(format!("channels.brokers.{channel}: {m}")));
                continue;
            }
        };
        if let Some(other) = brokers
            .iter()
            .find(|b| b.key() == broker.key() && b.location() == broker.location())
        {
            errors.push(at(format!(
                "channels.brokers.{channel}: channel `{}` is kept in the same place ({}); give one of them its own `stream`",
                other.channel(),
                broker.location()
            )));
            continue;
        }
        let keep = retention
            .iter()
            .find(|(c, _)| c == channel)
            .map_or(crate::channel::Retention::UNLIMITED, |(_, r)| *r);
        brokers.push(broker.with_retention(keep));
    }
    brokers
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
    let mut used = std::collections::BTreeSet::new();
    for f in &flows {
        if let SourcePlan::Load { channel, .. } = &f.source {
            used.insert(channel.clone());
        }
        used.extend(f.saved_channels().into_iter().map(str::to_string));
    }
    let channels = check_channels(file.channels.as_ref(), &used, origin, &mut errors);
    errors.into_result(Plan {
        origin: origin.to_string(),
        flows,
        channels,
        resources: crate::context::Resources::new(),
    })
}

/// Mocked steps of a flow test, by the name of the step they replace.
pub(crate) type Mocks = std::collections::BTreeMap<String, testing::MockStep>;

/// Resolves and chains the steps of a flow (each checked against the one
/// before), applying policies; `mocks` replace steps by name (flow tests).
/// Returns the builder and whether the chain is complete.
pub(crate) fn build_chain(
    name: &str,
    steps: &[Spanned<StepSpec>],
    policies: &PolicySet,
    mocks: &Mocks,
    origin: &str,
    errors: &mut ConfigErrors,
) -> (DynFlowBuilder, bool, Option<Vec<String>>) {
    let at = |loc: Location, message: String| ConfigError::new(origin, loc, message);
    let mut builder = DynFlowBuilder::new(name);
    let mut chain_ok = true;
    let mut route_targets = None;
    for step in steps {
        let loc = step.referenced;
        // A built-in operator: `- filter: '...'`, or `- cdc_unwrap` alone.
        let tool_args = match &step.value {
            StepSpec::WithArgs(map) if map.len() == 1 => map
                .iter()
                .next()
                .filter(|(key, _)| TOOL_NAMES.contains(&key.as_str()))
                .map(|(key, args)| (key.clone(), args.clone())),
            StepSpec::Function(name)
                if TOOL_NAMES.contains(&name.as_str()) && resolve_step(name).is_err() =>
            {
                Some((name.clone(), serde_json::Value::Null))
            }
            _ => None,
        };
        if let Some((tool, args)) = tool_args {
            let is_last = std::ptr::eq(step, steps.last().unwrap_or(step));
            match build_tool(&tool, args, is_last) {
                Ok(Built::Route(node)) if !chain_ok => route_targets = Some(node.targets()),
                Ok(Built::Tool(_)) if !chain_ok => {}
                Ok(Built::Tool(node)) if matches!(node.tool(), Some(Tool::Batch(_))) => {
                    let size = match node.tool() {
                        Some(Tool::Batch(b)) => b.size(),
                        _ => 1,
                    };
                    if let Err(e) = builder.batched_step(
                        Node::Owned(Box::new(node)),
                        TypeCodec::json(),
                        TypeCodec::json(),
                        size,
                    ) {
                        errors.push(at(loc, e.to_string()));
                        chain_ok = false;
                    }
                }
                Ok(Built::Tool(node)) => {
                    let throttle = match node.tool() {
                        Some(Tool::Throttle(t)) => Some(t.rate()),
                        _ => None,
                    };
                    if let Err(e) = builder.step(
                        Node::Owned(Box::new(node)),
                        TypeCodec::json(),
                        TypeCodec::json(),
                    ) {
                        errors.push(at(loc, e.to_string()));
                        chain_ok = false;
                    } else if let Some(rate) = throttle {
                        // `throttle` waits for its rate like a step's `rate_limit`.
                        let policy = Policy {
                            rate_limit: Some(rate),
                            ..Policy::default()
                        };
                        if let Ok(Some(applied)) =
                            crate::dynamic::Applied::new("throttle", &policy, &TypeCodec::json())
                        {
                            builder.policy(applied);
                        }
                    }
                }
                Ok(Built::Route(node)) => {
                    route_targets = Some(node.targets());
                    if let Err(e) = builder.route(node) {
                        errors.push(at(loc, e.to_string()));
                        chain_ok = false;
                    }
                }
                Err(message) => {
                    errors.push(at(loc, message));
                    chain_ok = false;
                }
            }
            continue;
        }
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
                        "unknown step `{key}`: a step is a registered function or flow, or a built-in operator ({}){}",
                        TOOL_NAMES.join(", "),
                        match registry::did_you_mean(&registry::closest(
                            key,
                            step_names().into_iter().chain(TOOL_NAMES)
                        )) {
                            Some(q) => format!("; {q}"),
                            None => String::new(),
                        }
                    ),
                    _ => "a step is written as one name (`- parse`) or a one-key map (`- filter: <condition>`)".to_string(),
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
        let (step_name, node, input, output, attribute) = match resolved {
            Resolved::Function(r) => {
                let attribute = match r.policy.to_policy() {
                    Ok(p) => p,
                    Err(e) => {
                        errors.push(at(
                            loc,
                            format!(
                                "the #[sync_function] attribute of `{}` ({}:{}) has invalid policies: {e}",
                                r.info.name, r.info.file, r.info.line
                            ),
                        ));
                        Policy::default()
                    }
                };
                (
                    r.info.name,
                    Node::Registered(r.step),
                    (r.input)(),
                    (r.output)(),
                    attribute,
                )
            }
            Resolved::Flow(name, parts) => (
                name,
                Node::Owned(parts.step),
                parts.input,
                parts.output,
                Policy::default(),
            ),
        };
        let node = match mocks.get(step_name) {
            Some(mock) => match mock.node(node.info(), input, output) {
                Ok(mocked) => Node::Owned(mocked),
                Err(message) => {
                    errors.push(at(loc, message));
                    chain_ok = false;
                    continue;
                }
            },
            None => node,
        };
        let policy = step_policy(
            step_name,
            &attribute,
            &input,
            policies,
            &|message| at(loc, message),
            errors,
        );
        let pushed = match policy.batch {
            Some(size) => builder
                .batched_step(node, input, output, size)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => builder
                .step(node, input, output)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = pushed {
            errors.push(at(loc, e));
            chain_ok = false;
            continue;
        }
        if let Err(e) = builder.on_error(policy.on_error) {
            errors.push(at(loc, e.to_string()));
        }
        if let Some(channel) = policy.dead_letter_channel {
            builder.dead_letter_channel(channel);
        }
        if let Some(applied) = policy.applied {
            builder.policy(applied);
        }
    }

    (builder, chain_ok, route_targets)
}

/// The route target of each sink (`route:` keys), checked against the
/// targets of the flow's `route` step.
fn check_routes(
    spec: &FlowSpec,
    targets: Option<&[String]>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Vec<Option<u16>> {
    let mut routes = Vec::new();
    for sink in &spec.sinks {
        let at = |message: String| ConfigError::new(origin, sink.referenced, message);
        let Some(name) = &sink.value.route else {
            routes.push(None);
            continue;
        };
        match targets {
            None => errors.push(at(format!(
                "this sink takes the messages routed to `{name}`, but the flow does not end with a `route` step"
            ))),
            Some(targets) => match targets.iter().position(|t| t == name) {
                Some(i) => routes.push(u16::try_from(i).ok()),
                None => errors.push(at(format!(
                    "no case of the flow's `route` step sends messages to `{name}`; its targets are {}",
                    targets.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
                ))),
            },
        }
    }
    if let Some(targets) = targets {
        for target in targets {
            let served = spec
                .sinks
                .iter()
                .any(|s| s.value.route.as_ref() == Some(target));
            if !served {
                let loc = spec
                    .steps
                    .last()
                    .map_or(Location::UNKNOWN, |s| s.referenced);
                errors.push(ConfigError::new(
                    origin,
                    loc,
                    format!(
                        "`route` sends messages to `{target}`, but no sink has `route: {target}`: add one (messages for it would be lost)"
                    ),
                ));
            }
        }
    }
    routes
}

/// A built-in operator, built from its step's arguments.
enum Built {
    Tool(ToolNode),
    Route(RouteNode),
}

fn build_tool(name: &str, args: serde_json::Value, is_last: bool) -> Result<Built, String> {
    let mut map = serde_json::Map::new();
    map.insert(name.to_string(), args);
    let spec: ToolSpec = serde_json::from_value(serde_json::Value::Object(map))
        .map_err(|e| format!("{name}: {e}"))?;
    let tool = Tool::build(spec).map_err(|e| e.to_string())?;
    match tool {
        Tool::Route(route) if is_last => Ok(Built::Route(RouteNode::new(route))),
        Tool::Route(_) => Err(
            "`route` picks the sinks a message goes to, so it is the last step of a flow: move it to the end (or split the flow with `save:` / `load:`)".to_string(),
        ),
        tool => Ok(Built::Tool(ToolNode::new(tool))),
    }
}

/// Compiles `key:` and checks that the flow's input can be read as JSON.
fn check_key(
    key: &Spanned<String>,
    flow: &DynFlow,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<KeyPlan> {
    let at = |message: String| ConfigError::new(origin, key.referenced, message);
    let expr = match crate::toolbox::Expr::compile(&key.value) {
        Ok(expr) => expr,
        Err(e) => {
            errors.push(at(format!("key: {e}")));
            return None;
        }
    };
    let input = flow.input_codec();
    let Some(to_value) = input.to_value else {
        errors.push(at(format!(
            "key: the key is computed from the input message as JSON, but the flow's input `{}` cannot be written as JSON: derive `Serialize` for it",
            input.name
        )));
        return None;
    };
    Some(KeyPlan {
        expr: Arc::new(expr),
        to_value,
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
    let (builder, chain_ok, route_targets) =
        build_chain(name, &spec.steps, policies, &Mocks::new(), origin, errors);

    // Source.
    let source = check_source(name, &spec.source, origin, errors);
    let sinks: Vec<SinkPlan> = spec
        .sinks
        .iter()
        .filter_map(|s| check_sink(s, origin, errors))
        .collect();
    let routes = check_routes(&spec, route_targets.as_deref(), origin, errors);
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

    let key = match (&spec.key, &flow) {
        (Some(key), Some(flow)) => check_key(key, flow, origin, errors),
        _ => None,
    };

    if errors.len() > before {
        return None;
    }
    Some(PlannedFlow {
        progress: None,
        key,
        routes,
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
