//! The `syncflow` command line, to embed in your own binary.
//!
//! Your binary links your `#[sync_function]`s, so `functions` lists them and
//! `run` can run the flows you register:
//!
//! ```no_run
//! use syncflow::prelude::*;
//!
//! /// Doubles a number.
//! #[sync_function]
//! fn double(n: i64) -> i64 { n * 2 }
//!
//! fn main() -> std::process::ExitCode {
//!     syncflow::cli::Cli::new()
//!         .flow("doubles", || flow!(double))
//!         .main()
//! }
//! ```
//!
//! ```text
//! $ my-flows functions                 # every registered function, as a table (--json for JSON)
//! $ my-flows flows                     # the flows registered above
//! $ my-flows run doubles --input numbers.jsonl --output doubled.jsonl \
//!       --dead-letter failed.jsonl --workers 2 --state-dir .syncflow
//! ```
//!
//! `run` reads JSON lines (`--input`, default `-`: standard input), writes
//! JSON lines to every `--output` (default `-`: standard output), and prints
//! its summary to standard error. With `--state-dir`, the input position is
//! checkpointed and a rerun resumes after it (file outputs are then appended
//! to, not truncated). Ctrl-C or SIGTERM finish the batches in flight and
//! exit 0. Logs go to standard error, filtered by `SYNCFLOW_LOG` (default
//! `warn`; e.g. `SYNCFLOW_LOG=info` or `SYNCFLOW_LOG=syncflow=debug`).
//!
//! While a run goes on, a progress line on standard error shows each flow's
//! counts and rates, and a bar when its source knows how much is left (a
//! database snapshot, an input file): redrawn every second on a terminal,
//! a line every 10 s otherwise; `--progress-every 2s` or `off` changes that.
//!
//! Exit codes: 0 success, 1 the run failed, 2 a usage or setup error.

mod progress;

use std::future::Future;
use std::hash::Hash;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connector::{
    ConnectorError, JsonLinesSink, JsonLinesSource, Source, StdinSource, StdoutSink,
};
use crate::flow::{Flow, FlowDef};
use crate::function::StepInfo;
use crate::monitor::Monitor;
use crate::runtime::{KeyFn, Progress, RunError, RunSummary, Runtime};
use progress::{ProgressOptions, show_while};

/// Exit code of a failed run.
const EXIT_FAILED: u8 = 1;
/// Exit code of a usage or setup error.
const EXIT_USAGE: u8 = 2;

/// The command line of the stock `syncflow` binary: no flows, `functions`
/// lists what is linked in. Equivalent to `Cli::new().main()`.
pub fn main() -> ExitCode {
    Cli::new().main()
}

type RunFuture = Pin<Box<dyn Future<Output = Result<RunSummary, CliError>> + Send>>;
type Runner = Box<dyn Fn(RunOptions) -> RunFuture + Send + Sync>;

struct CliFlow {
    name: String,
    flow_name: &'static str,
    steps: &'static [&'static StepInfo],
    input: &'static str,
    output: &'static str,
    keyed: bool,
    run: Runner,
}

/// A command line with your flows registered; see the [module docs](self).
#[derive(Default)]
pub struct Cli {
    flows: Vec<CliFlow>,
    resources: crate::context::Resources,
}

impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field(
                "flows",
                &self.flows.iter().map(|f| &f.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Cli {
    /// A command line with no flows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a shared resource for the steps of flow files run by this CLI
    /// (`syncflow run flows.yaml`), available to them as `Res<T>`.
    pub fn resource<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.resources.insert(value);
        self
    }

    /// Registers a flow under `name`, runnable with `run <name>`. `make` is
    /// called once to describe the flow and once per run. The flow's input
    /// must be deserializable and its output serializable (JSON lines).
    ///
    /// # Panics
    ///
    /// If a flow is already registered under `name` (a programming error).
    pub fn flow<F, M>(
        self,
        name: &str,
        make: impl Fn() -> Flow<F, M> + Send + Sync + 'static,
    ) -> Self
    where
        F: FlowDef,
        M: Monitor,
        F::Input: DeserializeOwned + 'static,
        F::Output: Serialize + Sync + 'static,
    {
        self.register(name, make, None)
    }

    /// Registers a flow whose messages are partitioned across `--workers`
    /// by `key`: messages with equal keys keep their order. Panics like
    /// [`Cli::flow`] on a duplicate name.
    pub fn keyed_flow<F, M, K>(
        self,
        name: &str,
        make: impl Fn() -> Flow<F, M> + Send + Sync + 'static,
        key: impl Fn(&F::Input) -> K + Send + Sync + 'static,
    ) -> Self
    where
        F: FlowDef,
        M: Monitor,
        F::Input: DeserializeOwned + 'static,
        F::Output: Serialize + Sync + 'static,
        K: Hash,
    {
        self.register(name, make, Some(crate::runtime::key_fn(key)))
    }

    fn register<F, M>(
        mut self,
        name: &str,
        make: impl Fn() -> Flow<F, M> + Send + Sync + 'static,
        key: Option<KeyFn<F::Input>>,
    ) -> Self
    where
        F: FlowDef,
        M: Monitor,
        F::Input: DeserializeOwned + 'static,
        F::Output: Serialize + Sync + 'static,
    {
        assert!(
            self.flows.iter().all(|f| f.name != name),
            "flow `{name}` is registered twice with the syncflow CLI; give each flow its own name"
        );
        let sample = make();
        let keyed = key.is_some();
        let run: Runner = Box::new(move |options| {
            let mut runtime = Runtime::new(make());
            if let Some(key) = &key {
                runtime = runtime.key_hash(key.clone());
            }
            Box::pin(run_flow(runtime, options))
        });
        self.flows.push(CliFlow {
            name: name.to_string(),
            flow_name: sample.name(),
            steps: sample.steps(),
            input: std::any::type_name::<F::Input>(),
            output: std::any::type_name::<F::Output>(),
            keyed,
            run,
        });
        self
    }

    /// Parses the process's arguments, sets up logging (`SYNCFLOW_LOG`,
    /// default `warn`, to standard error), runs the command and returns its
    /// exit code. Call it from `main`, outside any async runtime.
    pub fn main(self) -> ExitCode {
        self.main_with_args(std::env::args_os())
    }

    /// Like [`Cli::main`], with these arguments instead of the process's
    /// (the first is the program name): for binaries that supply defaults.
    pub fn main_with_args<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        init_tracing();
        use std::io::IsTerminal;
        let tty = Terminals {
            err: std::io::stderr().is_terminal(),
            out: std::io::stdout().is_terminal(),
        };
        let code = self.execute_on(args, &mut std::io::stdout(), &mut std::io::stderr(), tty);
        ExitCode::from(code)
    }

    /// Runs the command line with these arguments (the first is the program
    /// name), writing to `out` and `err`, and returns the exit code. Does not
    /// set up logging. Must not be called from inside an async runtime.
    ///
    /// `err` is taken for a log, not a terminal: `run`'s progress comes as
    /// a line every 10 s (or every `--progress-every`), never redrawn.
    pub fn execute<I, T>(self, args: I, out: &mut dyn Write, err: &mut dyn Write) -> u8
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        self.execute_on(args, out, err, Terminals::default())
    }

    /// [`Cli::execute`], with `tty` saying whether `out` and `err` are
    /// terminals (the progress line is then redrawn in place).
    fn execute_on<I, T>(
        self,
        args: I,
        out: &mut dyn Write,
        err: &mut dyn Write,
        tty: Terminals,
    ) -> u8
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = match Args::try_parse_from(args) {
            Ok(args) => args,
            Err(e) => {
                use clap::error::ErrorKind;
                return match e.kind() {
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                        let _ = write!(out, "{e}");
                        0
                    }
                    ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                        let _ = write!(err, "{e}");
                        EXIT_USAGE
                    }
                    _ => {
                        let _ = write!(err, "{e}");
                        EXIT_USAGE
                    }
                };
            }
        };
        let result = match args.command {
            Command::Functions { json } => list_functions(out, json).map_err(CliError::Output),
            Command::Flows { json } => self.list_flows(out, json).map_err(CliError::Output),
            Command::Run(run) if is_flow_file(&run.flow) => {
                run_file(run, &self.resources, err, tty)
            }
            Command::Run(run) => self.run(run, err, tty),
            Command::Check { file } => check_file(&file, &self.resources, out),
            Command::Schema => {
                writeln!(out, "{}", crate::config::schema_json()).map_err(CliError::Output)
            }
            Command::Channels { store, json } => list_channels(store, json, out),
            Command::Connectors { json } => list_connectors(json, out),
            Command::Test { file } => test_file(&file, &self.resources, out),
        };
        match result {
            Ok(()) => 0,
            Err(CliError::Config(e)) => {
                let _ = writeln!(err, "{e}");
                EXIT_USAGE
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                e.exit_code()
            }
        }
    }

    fn list_flows(&self, out: &mut dyn Write, json: bool) -> std::io::Result<()> {
        let mut flows: Vec<&CliFlow> = self.flows.iter().collect();
        flows.sort_by(|a, b| a.name.cmp(&b.name));
        if json {
            let list: Vec<_> = flows
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "name": f.name,
                        "flow": f.flow_name,
                        "steps": f.steps.iter().map(|s| s.name).collect::<Vec<_>>(),
                        "input": f.input,
                        "output": f.output,
                        "keyed": f.keyed,
                    })
                })
                .collect();
            let text = serde_json::to_string_pretty(&list).map_err(std::io::Error::other)?;
            return writeln!(out, "{text}");
        }
        if flows.is_empty() {
            return writeln!(
                out,
                "no flows are registered in this binary; register them in your own binary with \
                 syncflow::cli::Cli::new().flow(\"name\", || flow!(a -> b)).main()"
            );
        }
        let rows: Vec<[String; 3]> = flows
            .iter()
            .map(|f| {
                [
                    f.name.clone(),
                    format!("{} → {}", short_type(f.input), short_type(f.output)),
                    f.steps
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(" -> "),
                ]
            })
            .collect();
        write_table(out, ["FLOW", "INPUT → OUTPUT", "STEPS"], &rows)
    }

    fn run(self, args: RunArgs, err: &mut dyn Write, tty: Terminals) -> Result<(), CliError> {
        if args.watch || args.admin.is_some() || args.admin_token.is_some() {
            return Err(CliError::Setup(
                "--watch, --admin and --admin-token apply to flow files (`run flows.yaml`), not to flows compiled into this binary".to_string(),
            ));
        }
        let Some(index) = self.flows.iter().position(|f| f.name == args.flow) else {
            return Err(self.unknown_flow(&args.flow));
        };
        let outputs = if args.output.is_empty() {
            vec![Target::Std]
        } else {
            args.output.iter().map(|o| Target::parse(o)).collect()
        };
        let progress = Progress::new();
        let outputs_stdout = outputs.iter().any(|o| matches!(o, Target::Std));
        let options = RunOptions {
            input: Target::parse(&args.input),
            outputs,
            dead_letter: args.dead_letter,
            workers: args.workers as usize,
            batch_size: args.batch_size as usize,
            state_dir: args.state_dir,
            progress: progress.clone(),
        };
        let runtime = async_runtime()?;
        let flow = &self.flows[index];
        let shown = ProgressOptions::new(tty.err, tty.out && outputs_stdout, args.progress_every);
        let result = runtime.block_on(show_while(
            (flow.run)(options),
            vec![(flow.name.clone(), progress)],
            shown,
            err,
        ));
        // Reading standard input blocks a thread that cannot be interrupted:
        // do not wait for it.
        runtime.shutdown_timeout(Duration::from_millis(100));
        let mut summary = result?;
        if summary.flow != flow.name {
            summary.flow = format!("{} ({})", flow.name, summary.flow);
        }
        let _ = write!(err, "{summary}");
        Ok(())
    }

    fn unknown_flow(&self, name: &str) -> CliError {
        if self.flows.is_empty() {
            return CliError::Setup(format!(
                "unknown flow `{name}`: this binary has no flows registered. Flows are static Rust code: \
                 build your own binary with syncflow::cli::Cli::new().flow(\"{name}\", || flow!(...)).main()"
            ));
        }
        let mut names: Vec<&str> = self.flows.iter().map(|f| f.name.as_str()).collect();
        names.sort();
        let closest = crate::registry::closest(name, names.iter().copied());
        let suggestion = crate::registry::did_you_mean(&closest)
            .map(|q| format!("; {q}"))
            .unwrap_or_default();
        CliError::Setup(format!(
            "unknown flow `{name}`{suggestion} (flows in this binary: {}; list them with the `flows` command)",
            names.join(", ")
        ))
    }
}

/// Which of standard output and standard error are terminals.
#[derive(Debug, Clone, Copy, Default)]
struct Terminals {
    out: bool,
    err: bool,
}

/// `-` or a path.
#[derive(Debug, Clone)]
enum Target {
    Std,
    Path(PathBuf),
}

impl Target {
    fn parse(s: &str) -> Target {
        if s == "-" {
            Target::Std
        } else {
            Target::Path(PathBuf::from(s))
        }
    }
}

struct RunOptions {
    input: Target,
    outputs: Vec<Target>,
    dead_letter: Option<PathBuf>,
    workers: usize,
    batch_size: usize,
    state_dir: Option<PathBuf>,
    progress: Progress,
}

async fn run_flow<F, M>(runtime: Runtime<F, M>, options: RunOptions) -> Result<RunSummary, CliError>
where
    F: FlowDef,
    M: Monitor,
    F::Input: DeserializeOwned + 'static,
    F::Output: Serialize + Sync + 'static,
{
    let mut runtime = runtime
        .workers(options.workers)
        .batch_size(options.batch_size)
        .progress(&options.progress);
    if let Some(path) = options.dead_letter {
        runtime = runtime.dead_letter(path);
    }
    let resume = options.state_dir.is_some();
    for output in &options.outputs {
        runtime = match output {
            Target::Std => runtime.sink(StdoutSink::new()),
            Target::Path(path) => {
                let sink = if resume {
                    JsonLinesSink::append(path)
                } else {
                    JsonLinesSink::create(path)
                };
                runtime.sink(sink.map_err(|e| CliError::Setup(e.to_string()))?)
            }
        };
    }
    match options.input {
        Target::Std => {
            if resume {
                tracing::warn!(
                    "--state-dir has no effect when reading standard input: it cannot be replayed"
                );
            }
            finish(runtime.source(StdinSource::new())).await
        }
        Target::Path(path) => {
            let mut source = JsonLinesSource::open(&path).map_err(|e| match e {
                ConnectorError::Io { source, .. } => CliError::Setup(format!(
                    "cannot open input file `{}`: {source}; check the path, or pass `--input -` to read standard input",
                    path.display()
                )),
                other => CliError::Setup(other.to_string()),
            })?;
            if let Some(dir) = &options.state_dir {
                source = source
                    .state_dir(dir)
                    .map_err(|e| CliError::Setup(e.to_string()))?;
            }
            finish(runtime.source(source)).await
        }
    }
}

async fn finish<F, M, S>(runtime: Runtime<F, M, S>) -> Result<RunSummary, CliError>
where
    F: FlowDef,
    M: Monitor,
    S: Source<Item = F::Input>,
    F::Input: 'static,
    F::Output: Sync + 'static,
{
    runtime.run().await.map_err(|e| match e {
        e @ (RunError::Check(_) | RunError::Config(_)) => CliError::Setup(e.to_string()),
        e => CliError::Run(e),
    })
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Setup(String),
    /// Every error of a flow file, each line already prefixed.
    #[error("{0}")]
    Config(crate::config::ConfigErrors),
    /// One or more flows of a flow file failed.
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Run(#[from] RunError),
    #[error("cannot write the listing: {0}")]
    Output(std::io::Error),
}

impl CliError {
    fn exit_code(&self) -> u8 {
        match self {
            CliError::Setup(_) | CliError::Config(_) => EXIT_USAGE,
            CliError::Failed(_) => EXIT_FAILED,
            CliError::Run(_) | CliError::Output(_) => EXIT_FAILED,
        }
    }
}

#[derive(Parser)]
#[command(
    name = "syncflow",
    version,
    about = "Typed, monitored message and change-data-capture flows built from plain Rust functions",
    after_help = "Logs go to standard error; set SYNCFLOW_LOG (e.g. info, debug, syncflow=trace) to see more."
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every registered sync function, sorted by name
    Functions {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// List the flows this binary can run
    Flows {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run a flow of this binary from JSON lines to JSON lines, or every flow of a flow
    /// file (`syncflow run flows.yaml`); prints a summary to standard error
    Run(RunArgs),
    /// Check a flow file against the functions registered in this binary; exit code 2 if it
    /// has errors, each printed as file:line:col
    Check {
        /// The flow file (YAML)
        file: PathBuf,
    },
    /// Print the JSON Schema of flow files (for editor completion)
    Schema,
    /// Run the `tests:` of a flow file (input messages through a flow or a step, with
    /// mocks); exit code 0 if all pass, 1 if one fails, 2 if the file has errors
    Test {
        /// The flow file (YAML)
        file: PathBuf,
    },
    /// List the connectors of flow files: which this binary has, and the cargo feature of
    /// each of the others
    Connectors {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show every Save/Load channel: its length, and each reader's position and lag
    Channels {
        /// The channel store file, or a flow file (its embedded store and its broker channels)
        #[arg(value_name = "STORE_OR_FLOW_FILE", default_value = crate::config::DEFAULT_CHANNELS_PATH)]
        store: PathBuf,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Name of the flow (see the `flows` command), or a flow file (`.yaml`/`.yml`)
    flow: String,
    /// JSON-lines input file, or `-` for standard input
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    input: String,
    /// JSON-lines output file, or `-` for standard output; repeat for several outputs [default: -]
    #[arg(short, long, value_name = "PATH")]
    output: Vec<String>,
    /// Append undecodable records and step failures to this JSON-lines file
    #[arg(long, value_name = "PATH")]
    dead_letter: Option<PathBuf>,
    /// Parallel workers (messages with the same key stay in order on keyed flows)
    #[arg(short, long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    workers: u32,
    /// Records per batch
    #[arg(long, value_name = "N", default_value_t = crate::runtime::DEFAULT_BATCH_SIZE as u32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    batch_size: u32,
    /// Keep the input's checkpoint in this directory and resume from it
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// With a flow file: apply the file again whenever it changes, until Ctrl-C
    #[arg(long)]
    watch: bool,
    /// With a flow file: serve the admin HTTP API on this address (loopback unless a token is set)
    #[arg(long, value_name = "HOST:PORT")]
    admin: Option<String>,
    /// Token the admin API requires (`Authorization: Bearer <token>`) [env: SYNCFLOW_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    admin_token: Option<String>,
    /// How often the progress line on standard error is drawn (`500ms`, `5s`, `1m`), or `off`
    /// [default: 1s on a terminal, 10s otherwise; not with --watch or --admin]
    #[arg(long, value_name = "DURATION", value_parser = progress::parse_every)]
    progress_every: Option<progress::Every>,
}

fn test_file(
    file: &std::path::Path,
    resources: &crate::context::Resources,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::Setup(format!(
            "cannot read the flow file `{}`: {e}; check the path",
            file.display()
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Setup(format!("cannot start the async runtime: {e}")))?;
    let origin = file.display().to_string();
    let report = runtime
        .block_on(crate::config::testing::run_tests(&text, &origin, resources))
        .map_err(CliError::Config)?;
    write!(out, "{report}").map_err(CliError::Output)?;
    if report.passed() {
        Ok(())
    } else {
        let failed = report.tests.iter().filter(|t| !t.passed()).count();
        Err(CliError::Failed(format!(
            "{failed} test{} of {origin} failed",
            if failed == 1 { "" } else { "s" }
        )))
    }
}

fn list_connectors(json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    let list = crate::config::connectors::compiled_in();
    if json {
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        return writeln!(out, "{text}").map_err(CliError::Output);
    }
    let width = list.iter().map(|c| c.key.len()).max().unwrap_or(0);
    for c in &list {
        let status = match (c.compiled_in, c.feature) {
            (true, _) => "yes".to_string(),
            (false, Some(feature)) => format!("no (cargo feature `{feature}`)"),
            (false, None) => "no".to_string(),
        };
        writeln!(
            out,
            "{:width$}  {:12}  {:28}  {}",
            c.key, c.kinds, status, c.what
        )
        .map_err(CliError::Output)?;
    }
    Ok(())
}

fn list_channels(store: PathBuf, json: bool, out: &mut dyn Write) -> Result<(), CliError> {
    use crate::channel::StoreStats;
    // Each group of channels: where they are kept, and their statistics.
    let mut groups: Vec<(String, StoreStats)> = Vec::new();
    let (path, brokers) = if is_flow_file(&store.to_string_lossy()) {
        let plan = crate::config::load(&store).map_err(CliError::Config)?;
        let channels = plan
            .channels
            .ok_or_else(|| CliError::Setup(format!("`{}` uses no channel", store.display())))?;
        // The store file when a flow uses it (or when nothing is on a broker).
        let path = (channels.embedded || channels.brokers.is_empty()).then_some(channels.path);
        (path, channels.brokers)
    } else {
        (Some(store), Vec::new())
    };
    if let Some(path) = path {
        if !path.exists() {
            return Err(CliError::Setup(format!(
                "no channel store at `{}`: a flow that saves or loads a channel creates it; give the store's path or the flow file",
                path.display()
            )));
        }
        let store = crate::channel::ChannelStore::open(&path)
            .map_err(|e| CliError::Setup(e.to_string()))?;
        let stats = store.stats().map_err(|e| CliError::Setup(e.to_string()))?;
        groups.push((path.display().to_string(), stats));
    }
    if !brokers.is_empty() {
        let runtime = async_runtime()?;
        for broker in &brokers {
            let stats = runtime
                .block_on(broker.stats())
                .map_err(|e| CliError::Setup(format!("channel `{}`: {e}", broker.channel())))?;
            let location = broker.location();
            groups.push((
                location.clone(),
                StoreStats::new(PathBuf::from(location), vec![stats]),
            ));
        }
    }
    if json {
        let channels: Vec<_> = groups
            .iter()
            .flat_map(|(kept, stats)| stats.channels.iter().map(move |c| (kept, c)))
            .map(|(kept, c)| {
                serde_json::json!({
                    "name": c.name,
                    "kept_in": kept,
                    "length": c.length,
                    "first": c.first,
                    "next": c.next,
                    "bytes": c.bytes,
                    "readers": c.readers.iter().map(|r| serde_json::json!({
                        "name": r.name, "position": r.position, "lag": r.lag, "skipped": r.skipped,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&channels)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        return writeln!(out, "{text}").map_err(CliError::Output);
    }
    for (_, stats) in &groups {
        write!(out, "{stats}").map_err(CliError::Output)?;
    }
    Ok(())
}

/// The CLI starts its own async runtime: refuse to run inside one.
fn not_in_async_runtime() -> Result<(), CliError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(CliError::Setup(
            "the syncflow CLI was called from inside an async runtime; call `Cli::main` from a plain \
             (non-async) `fn main`, it starts its own runtime"
                .to_string(),
        ));
    }
    Ok(())
}

/// The multi-threaded runtime that runs flows.
fn async_runtime() -> Result<tokio::runtime::Runtime, CliError> {
    not_in_async_runtime()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("syncflow")
        .build()
        .map_err(|e| CliError::Setup(format!("cannot start the async runtime: {e}")))
}

/// Whether a `run` argument names a flow file rather than a flow.
fn is_flow_file(arg: &str) -> bool {
    arg.ends_with(".yaml") || arg.ends_with(".yml")
}

/// A flow file's steps ask for resources this program does not give.
fn missing_resources(plan: &crate::config::Plan) -> Result<(), CliError> {
    let problems = plan.check_resources();
    if problems.is_empty() {
        return Ok(());
    }
    Err(CliError::Setup(format!(
        "`{}` cannot start:\n  - {}\n(give each resource to the CLI with `Cli::new().resource(value)`)",
        plan.origin,
        problems.join("\n  - ")
    )))
}

fn check_file(
    file: &std::path::Path,
    resources: &crate::context::Resources,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let plan = crate::config::load(file)
        .map_err(CliError::Config)?
        .with_resources(resources.clone());
    missing_resources(&plan)?;
    for flow in &plan.flows {
        let steps: Vec<&str> = crate::flow::FlowDef::steps(&flow.flow)
            .iter()
            .map(|s| s.name)
            .collect();
        writeln!(
            out,
            "flow `{}`: {} → {}",
            flow.name,
            short_type(flow.flow.input().name),
            if steps.is_empty() {
                "(no steps)".to_string()
            } else {
                steps.join(" -> ")
            }
        )
        .map_err(CliError::Output)?;
    }
    writeln!(
        out,
        "{}: {} flow{} checked, no errors",
        plan.origin,
        plan.flows.len(),
        if plan.flows.len() == 1 { "" } else { "s" }
    )
    .map_err(CliError::Output)
}

fn run_file(
    args: RunArgs,
    resources: &crate::context::Resources,
    err: &mut dyn Write,
    tty: Terminals,
) -> Result<(), CliError> {
    if args.input != "-"
        || !args.output.is_empty()
        || args.dead_letter.is_some()
        || args.state_dir.is_some()
    {
        return Err(CliError::Setup(format!(
            "`{}` is a flow file: its sources, sinks and dead letters are set in the file, not with --input, --output, --dead-letter or --state-dir",
            args.flow
        )));
    }
    if args.watch || args.admin.is_some() || args.admin_token.is_some() {
        return managed_file(args, resources, err);
    }
    let mut plan = crate::config::load(&args.flow)
        .map_err(CliError::Config)?
        .with_resources(resources.clone());
    missing_resources(&plan)?;
    let runtime = async_runtime()?;
    let progress = plan.track_progress();
    let to_stdout = plan.flows.iter().any(|f| {
        f.sinks
            .iter()
            .any(|s| matches!(s, crate::config::SinkPlan::Stdout))
    });
    let shown = ProgressOptions::new(tty.err, tty.out && to_stdout, args.progress_every);
    let results = runtime.block_on(show_while(
        plan.run(crate::runtime::Shutdown::new(), true),
        progress,
        shown,
        err,
    ));
    runtime.shutdown_timeout(Duration::from_millis(100));
    let mut failed = Vec::new();
    for (name, result) in results {
        match result {
            Ok(mut summary) => {
                if summary.flow != name {
                    summary.flow = name;
                }
                let _ = write!(err, "{summary}");
            }
            Err(e) => failed.push(format!("flow `{name}`: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(failed.join("\n")))
    }
}

/// `run flows.yaml --watch` / `--admin`: the flows run by a flow manager.
fn managed_file(
    args: RunArgs,
    resources: &crate::context::Resources,
    err: &mut dyn Write,
) -> Result<(), CliError> {
    use crate::manage::serve::{ServeError, ServeOptions, run};
    not_in_async_runtime()?;
    let options = ServeOptions {
        file: PathBuf::from(&args.flow),
        watch: args.watch,
        admin: args.admin,
        token: args.admin_token,
    };
    run(options, resources, err).map_err(|e| match e {
        ServeError::Config(errors) => CliError::Config(errors),
        ServeError::Setup(message) => CliError::Setup(message),
        ServeError::Failed(message) => CliError::Failed(message),
    })
}

fn list_functions(out: &mut dyn Write, json: bool) -> std::io::Result<()> {
    let functions = crate::registry::functions();
    if json {
        let list: Vec<_> = functions
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "module": f.module,
                    "input": f.input_type(),
                    "output": f.output_type(),
                    "shape": f.shape.as_str(),
                    "async": f.is_async,
                    "summary": f.summary(),
                    "doc": f.doc,
                    "file": f.file,
                    "line": f.line,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).map_err(std::io::Error::other)?;
        return writeln!(out, "{text}");
    }
    if functions.is_empty() {
        return writeln!(
            out,
            "no sync functions are registered in this binary; annotate functions with #[sync_function] \
             (a crate of functions the binary never names is not linked: add `use that_crate as _;`)"
        );
    }
    let rows: Vec<[String; 6]> = functions
        .iter()
        .map(|f| {
            [
                f.name.to_string(),
                format!(
                    "{} → {}",
                    short_type(f.input_type()),
                    short_type(f.output_type())
                ),
                f.shape.as_str().to_string(),
                if f.is_async { "async" } else { "" }.to_string(),
                f.summary().to_string(),
                format!("{}:{}", f.file, f.line),
            ]
        })
        .collect();
    write_table(
        out,
        [
            "NAME",
            "INPUT → OUTPUT",
            "SHAPE",
            "ASYNC",
            "SUMMARY",
            "LOCATION",
        ],
        &rows,
    )
}

fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&mut header.iter().copied())?;
    for row in rows {
        line(&mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

/// `alloc::vec::Vec<my_crate::Order>` → `Vec<Order>`.
fn short_type(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        out.push_str(token.rsplit("::").next().unwrap_or(token));
        token.clear();
    };
    for c in name.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    const VAR: &str = "SYNCFLOW_LOG";
    let (filter, problem) = match std::env::var(VAR) {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("warn"), Some((spec, e))),
        },
        Err(_) => (EnvFilter::new("warn"), None),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    if let Some((spec, e)) = problem {
        tracing::warn!(
            "{VAR}={spec:?} is not a valid log filter ({e}); using `warn`. Examples: info, debug, syncflow=debug"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_strips_paths() {
        assert_eq!(short_type("alloc::vec::Vec<my_crate::Order>"), "Vec<Order>");
        assert_eq!(
            short_type("core::option::Option<(i64, alloc::string::String)>"),
            "Option<(i64, String)>"
        );
        assert_eq!(short_type("&str"), "&str");
    }

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["A", "B"],
            &[["long name".into(), "x".into()], ["b".into(), "y".into()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A          B\nlong name  x\nb          y\n"
        );
    }
}
