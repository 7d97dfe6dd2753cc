//! Running a checked flow file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ChannelsPlan, Plan, PlannedFlow, SinkPlan, SourcePlan};
use crate::channel::{BrokerChannel, ChannelSink, ChannelStore, LoadOptions, LoadSource};
use crate::connector::Sink;
use crate::connector::{JsonLinesSink, JsonLinesSource, StdinSource, StdoutSink};
use crate::dynamic::{DynFlow, JsonOut};
use crate::flow::Flow;
use crate::runtime::{DeadLetter, Progress, RunError, RunSummary, Runtime, Shutdown};
use serde_json::value::RawValue;

impl Plan {
    /// Attaches a [`Progress`] to every flow and returns them, by flow name,
    /// to watch the counters while [`Plan::run`] goes on.
    pub fn track_progress(&mut self) -> Vec<(String, Progress)> {
        self.flows
            .iter_mut()
            .map(|f| {
                let progress = Progress::new();
                f.progress = Some(progress.clone());
                (f.name.clone(), progress)
            })
            .collect()
    }

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
        let opened = match &self.channels {
            Some(plan) => open_channels(plan).await,
            None => Ok((None, Arc::from(Vec::new()))),
        };
        let (store, brokers) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                return self
                    .flows
                    .iter()
                    .map(|f| (f.name.clone(), Err(e.clone_for(&f.name))))
                    .collect();
            }
        };
        // A loading flow follows its channel while a flow of this file that
        // saves into it runs; once they all ended, it reads to the end and
        // ends too.
        let mut savers: HashMap<String, (Arc<AtomicUsize>, Shutdown)> = HashMap::new();
        for flow in &self.flows {
            for channel in flow.saved_channels() {
                let entry = savers
                    .entry(channel.to_string())
                    .or_insert_with(|| (Arc::new(AtomicUsize::new(0)), Shutdown::new()));
                entry.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        let resources = self.resources;
        for (i, planned) in self.flows.into_iter().enumerate() {
            // Each flow can stop alone (`on_error: stop`); all stop with the plan.
            let shutdown = shutdown.child();
            let channels = Channels {
                resources: resources.clone(),
                store: store.clone(),
                brokers: brokers.clone(),
                writers_done: match &planned.source {
                    SourcePlan::Load { channel, .. } => savers.get(channel).map(|s| s.1.clone()),
                    _ => None,
                },
                progress: None,
            };
            let saves: Vec<(Arc<AtomicUsize>, Shutdown)> = planned
                .saved_channels()
                .iter()
                .filter_map(|channel| savers.get(*channel).cloned())
                .collect();
            tasks.spawn(async move {
                let name = planned.name.clone();
                let result = planned.run_with(shutdown, signals, channels).await;
                for (running, done) in saves {
                    if running.fetch_sub(1, Ordering::AcqRel) == 1 {
                        done.shutdown();
                    }
                }
                (i, name, result)
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

/// Opens what the plan's channels need: the embedded store when a flow
/// uses one of its channels, and each broker channel (created on its
/// broker, retention applied).
pub(crate) async fn open_channels(
    plan: &ChannelsPlan,
) -> Result<(Option<ChannelStore>, Arc<[BrokerChannel]>), StoreError> {
    let store = if plan.embedded {
        Some(open_store(plan)?)
    } else {
        None
    };
    Ok((store, prepare_brokers(plan).await?))
}

/// Creates each broker channel of the plan on its broker (or updates its
/// retention).
pub(crate) async fn prepare_brokers(
    plan: &ChannelsPlan,
) -> Result<Arc<[BrokerChannel]>, StoreError> {
    for broker in &plan.brokers {
        broker.prepare().await.map_err(|e| {
            StoreError(format!(
                "channel `{}` on {}: {e}",
                broker.channel(),
                broker.location()
            ))
        })?;
    }
    Ok(plan.brokers.clone().into())
}

/// Opens the channel store and applies the file's retention settings.
pub(crate) fn open_store(plan: &ChannelsPlan) -> Result<ChannelStore, StoreError> {
    if let Some(dir) = plan.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError(format!(
                "cannot create the directory of the channel store `{}`: {e}",
                plan.path.display()
            ))
        })?;
    }
    let store = ChannelStore::open(&plan.path).map_err(|e| StoreError(e.to_string()))?;
    for (channel, retention) in &plan.retention {
        store
            .set_retention(channel, *retention)
            .map_err(|e| StoreError(e.to_string()))?;
    }
    Ok(store)
}

/// The channel store could not be opened: every flow fails with it.
pub(crate) struct StoreError(pub(crate) String);

impl StoreError {
    fn clone_for(&self, flow: &str) -> RunError {
        RunError::Source {
            name: format!("the channels of flow `{flow}`"),
            error: crate::connector::ConnectorError::Other(self.0.clone().into()),
        }
    }
}

/// What a flow of a plan needs of the plan's channels.
struct Channels {
    /// The plan's shared resources.
    resources: crate::context::Resources,
    store: Option<ChannelStore>,
    /// The channels kept by brokers.
    brokers: Arc<[BrokerChannel]>,
    /// For a loading flow: triggered when the flows saving into its channel ended.
    writers_done: Option<Shutdown>,
    /// Where the run publishes its live counters.
    progress: Option<Progress>,
}

impl PlannedFlow {
    /// The channels this flow writes: those of its `save:` sinks and its
    /// steps' dead-letter channels, each once.
    pub fn saved_channels(&self) -> Vec<&str> {
        let mut channels: Vec<&str> = self
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkPlan::Save { channel } => Some(channel.as_str()),
                _ => None,
            })
            .chain(
                self.flow
                    .dead_letter_channels()
                    .iter()
                    .map(|(_, c)| c.as_str()),
            )
            .collect();
        channels.sort_unstable();
        channels.dedup();
        channels
    }

    /// Runs this flow until its input ends or `shutdown` is triggered (or,
    /// with `signals`, Ctrl-C or SIGTERM arrives). A flow that saves or
    /// loads channels is run through [`Plan::run`], which opens the store.
    pub async fn run(self, shutdown: Shutdown, signals: bool) -> Result<RunSummary, RunError> {
        let channels = Channels {
            resources: Default::default(),
            store: None,
            brokers: Arc::from(Vec::new()),
            writers_done: None,
            progress: None,
        };
        self.run_with(shutdown, signals, channels).await
    }

    /// Runs this flow for the flow manager: channels from `store` and
    /// `brokers`, loaders following their channel until `shutdown`,
    /// counters published through `progress`, no signal handling.
    pub(crate) async fn run_managed(
        self,
        shutdown: Shutdown,
        (store, brokers): (Option<ChannelStore>, Arc<[BrokerChannel]>),
        resources: crate::context::Resources,
        progress: Progress,
    ) -> Result<RunSummary, RunError> {
        let channels = Channels {
            resources,
            store,
            brokers,
            writers_done: None,
            progress: Some(progress),
        };
        self.run_with(shutdown, false, channels).await
    }

    async fn run_with(
        self,
        shutdown: Shutdown,
        signals: bool,
        channels: Channels,
    ) -> Result<RunSummary, RunError> {
        let no_store = |name: &str| RunError::Source {
            name: name.to_string(),
            error: crate::connector::ConnectorError::Other(
                "channels are opened by `Plan::run`: run the whole plan".into(),
            ),
        };
        let options = Options {
            store: channels.store.clone(),
            brokers: channels.brokers.clone(),
            shutdown: shutdown.clone(),
            sinks: self.sinks,
            routes: self.routes,
            dead_letter: self.dead_letter,
            dead_letter_channels: self.flow.dead_letter_channels().to_vec(),
            workers: self.workers,
            key: self.key,
            batch_size: self.batch_size,
            signals,
            progress: channels.progress.clone().or(self.progress.clone()),
        };
        let decode = self.flow.decoder();
        let mut def = self.flow;
        def.stop_with(shutdown.clone());
        let policy_stats = def.policy_stats();
        let flow = Flow::new(def).with_resources(channels.resources.clone());
        let mut summary = match self.source {
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
            SourcePlan::Load { channel, reader } => {
                let broker = channels.brokers.iter().find(|b| b.channel() == channel);
                if let Some(broker) = broker {
                    let done = channels.writers_done;
                    load_from_broker(broker, &reader, flow, decode, options, done).await
                } else {
                    let name = format!("load:{channel}@{reader}");
                    let store = channels.store.as_ref().ok_or_else(|| no_store(&name))?;
                    let mut source = LoadSource::open_decoding(
                        store,
                        &channel,
                        &reader,
                        LoadOptions::default(),
                        decode,
                    )
                    .map_err(|e| RunError::Source {
                        name: name.clone(),
                        error: e.into(),
                    })?;
                    if let Some(done) = channels.writers_done {
                        source = source.follow_until(done);
                    }
                    finish(Runtime::new(flow).source(source), options).await
                }
            }
            SourcePlan::Stdin => {
                let source = StdinSource::with_decoder(decode);
                finish(Runtime::new(flow).source(source), options).await
            }
            SourcePlan::Connector(source) => source.run(flow, decode, options).await,
        }?;
        summary.policies = crate::dynamic::policy_snapshot(&policy_stats)
            .into_iter()
            .map(|(name, counts)| (name.to_string(), counts))
            .collect();
        Ok(summary)
    }
}

/// How a planned flow runs, apart from its source.
pub(crate) struct Options {
    store: Option<ChannelStore>,
    brokers: Arc<[BrokerChannel]>,
    sinks: Vec<SinkPlan>,
    routes: Vec<Option<u16>>,
    dead_letter: Option<PathBuf>,
    /// Steps that dead-letter into a channel, with the channel.
    dead_letter_channels: Vec<(&'static str, String)>,
    workers: usize,
    key: Option<super::KeyPlan>,
    batch_size: usize,
    shutdown: Shutdown,
    signals: bool,
    progress: Option<Progress>,
}

pub(crate) async fn finish<S: crate::connector::Source<Item = crate::registry::BoxedSlot>>(
    mut rt: Runtime<DynFlow, crate::monitor::Metrics, S>,
    options: Options,
) -> Result<RunSummary, RunError> {
    let Options {
        store,
        brokers,
        sinks,
        routes,
        dead_letter,
        dead_letter_channels,
        workers,
        key,
        batch_size,
        shutdown,
        signals,
        progress,
    } = options;
    if let Some(key) = key {
        rt = rt.key_hash(Arc::new(move |input| key.hash(input)));
    }
    let open_channel = async |channel: &str| {
        let broker = brokers.iter().find(|b| b.channel() == channel);
        ChannelSink::open(channel, broker, store.as_ref())
            .await
            .map_err(|error| RunError::Sink {
                name: match broker {
                    Some(b) => format!("save:{channel} ({})", b.location()),
                    None => format!("save:{channel}"),
                },
                error,
            })
    };
    for (sink, route) in sinks.into_iter().zip(routes) {
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
                add_sink(rt, sink.fsync(fsync), route)
            }
            SinkPlan::Stdout => add_sink(rt, StdoutSink::new(), route),
            SinkPlan::Connector(sink) => sink.add_to(rt, route).await?,
            SinkPlan::Save { channel } => add_sink(rt, open_channel(&channel).await?, route),
        };
    }
    if dead_letter_channels.is_empty() {
        if let Some(path) = dead_letter {
            rt = rt.dead_letter(path);
        }
    } else {
        // Some steps dead-letter into channels: one sink sorts the letters.
        let file = match dead_letter {
            Some(path) => {
                Some(
                    JsonLinesSink::append(&path).map_err(|error| RunError::DeadLetter {
                        name: path.display().to_string(),
                        error,
                    })?,
                )
            }
            None => None,
        };
        let mut channels = Vec::new();
        for (step, channel) in dead_letter_channels {
            channels.push((step, open_channel(&channel).await?));
        }
        rt = rt.dead_letter_sink(DeadLetterRouter { file, channels });
    }
    if let Some(progress) = &progress {
        rt = rt.progress(progress);
    }
    rt.workers(workers)
        .batch_size(batch_size)
        .handle_signals(signals)
        .with_shutdown(shutdown)
        .run()
        .await
}

/// Adds a sink, behind a filter when it takes only one route target.
pub(crate) fn add_sink<S, K>(
    rt: Runtime<DynFlow, crate::monitor::Metrics, S>,
    sink: K,
    route: Option<u16>,
) -> Runtime<DynFlow, crate::monitor::Metrics, S>
where
    K: Sink<JsonOut> + for<'a> Sink<&'a RawValue>,
{
    match route {
        None => rt.sink(sink),
        Some(route) => rt.sink(RouteFilter { inner: sink, route }),
    }
}

/// A sink that takes only the messages `route` sent to one target.
struct RouteFilter<K> {
    inner: K,
    route: u16,
}

impl<K> Sink<JsonOut> for RouteFilter<K>
where
    K: for<'a> Sink<&'a RawValue>,
{
    fn name(&self) -> String {
        Sink::<&RawValue>::name(&self.inner)
    }

    async fn write(&mut self, items: &[JsonOut]) -> Result<(), crate::connector::ConnectorError> {
        let picked: Vec<&RawValue> = items
            .iter()
            .filter(|out| out.route == Some(self.route))
            .map(|out| &*out.json)
            .collect();
        if picked.is_empty() {
            return Ok(());
        }
        self.inner.write(&picked).await
    }

    async fn flush(&mut self) -> Result<(), crate::connector::ConnectorError> {
        Sink::<&RawValue>::flush(&mut self.inner).await
    }
}

/// The dead-letter sink of a flow some of whose steps dead-letter into
/// channels: each letter goes to its step's channel, the others to the
/// flow's dead-letter file (or, without one, are only counted and logged).
struct DeadLetterRouter {
    file: Option<JsonLinesSink>,
    /// By step name (policies are bound per function name).
    channels: Vec<(&'static str, ChannelSink)>,
}

impl Sink<DeadLetter> for DeadLetterRouter {
    fn name(&self) -> String {
        let mut names: Vec<String> = self
            .channels
            .iter()
            .map(|(_, sink)| Sink::<&DeadLetter>::name(sink))
            .collect();
        if let Some(file) = &self.file {
            names.push(file.path().display().to_string());
        }
        names.join(", ")
    }

    async fn write(
        &mut self,
        items: &[DeadLetter],
    ) -> Result<(), crate::connector::ConnectorError> {
        for (step, sink) in &mut self.channels {
            let picked: Vec<&DeadLetter> = items.iter().filter(|d| d.stage == *step).collect();
            if !picked.is_empty() {
                sink.write(&picked).await?;
            }
        }
        if let Some(file) = &mut self.file {
            let rest: Vec<&DeadLetter> = items
                .iter()
                .filter(|d| !self.channels.iter().any(|(step, _)| d.stage == *step))
                .collect();
            if !rest.is_empty() {
                file.write(&rest).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), crate::connector::ConnectorError> {
        for (_, sink) in &mut self.channels {
            Sink::<&DeadLetter>::flush(sink).await?;
        }
        if let Some(file) = &mut self.file {
            Sink::<&DeadLetter>::flush(file).await?;
        }
        Ok(())
    }
}

/// Runs a flow that loads a broker channel as `reader`.
#[allow(unused_variables)] // without broker features there is nothing to match
async fn load_from_broker(
    broker: &BrokerChannel,
    reader: &str,
    flow: Flow<DynFlow>,
    decode: crate::registry::DecodeFn,
    options: Options,
    writers_done: Option<Shutdown>,
) -> Result<RunSummary, RunError> {
    let source_error = |error| RunError::Source {
        name: format!("load:{}@{reader} ({})", broker.channel(), broker.location()),
        error,
    };
    match *broker {
        #[cfg(feature = "nats")]
        BrokerChannel::Nats(ref c) => {
            let source =
                crate::connector::nats::NatsSource::connect(&c.source_config(reader), decode)
                    .await
                    .map_err(source_error)?;
            let source = crate::channel::DrainAfter::new(source, writers_done);
            finish(Runtime::new(flow).source(source), options).await
        }
        #[cfg(feature = "redis")]
        BrokerChannel::Redis(ref c) => {
            let source = crate::connector::redis::RedisStreamSource::connect(
                &c.source_config(reader),
                decode,
            )
            .await
            .map_err(source_error)?;
            let source = crate::channel::DrainAfter::new(source, writers_done);
            finish(Runtime::new(flow).source(source), options).await
        }
    }
}
