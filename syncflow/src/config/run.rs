//! Running a checked flow file.

use std::path::PathBuf;

use super::{Plan, PlannedFlow, SinkPlan, SourcePlan};
use crate::connector::{JsonLinesSink, JsonLinesSource, StdinSource, StdoutSink};
use crate::dynamic::DynFlow;
use crate::flow::Flow;
use crate::runtime::{RunError, RunSummary, Runtime, Shutdown};

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
