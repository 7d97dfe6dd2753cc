//! Changing flows while they run: the [`FlowManager`].
//!
//! A manager owns the flows of a process. Each has a name, a definition
//! (its YAML as written), a version number (1 at creation, +1 at each
//! replacement) and a state: `running`, `paused`, `stopped` (it ended on
//! its own: end of input, or a step's `on_error: stop`) or `failed`.
//!
//! ```no_run
//! use syncflow::manage::FlowManager;
//!
//! # async fn example() -> Result<(), syncflow::manage::ManageError> {
//! let manager = FlowManager::new();
//! manager
//!     .create(
//!         "orders",
//!         "source: { load: orders }\nsteps: [parse]\nsinks: [{ file: out.jsonl, append: true }]\n",
//!     )
//!     .await?;
//! // A new version: the old one drains, the new one starts from its cursor.
//! manager
//!     .replace(
//!         "orders",
//!         "source: { load: orders }\nsteps: [parse, enrich]\nsinks: [{ file: out.jsonl, append: true }]\n",
//!     )
//!     .await?;
//! manager.pause("orders").await?;
//! manager.resume("orders").await?;
//! for flow in manager.list() {
//!     println!("{} v{}: {} ({} in)", flow.name, flow.version, flow.state, flow.run.input);
//! }
//! manager.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Every change is checked first
//!
//! A definition is checked exactly as `syncflow check` checks a file
//! (functions exist, types chain, settings are valid), and a rejected
//! change returns every error with its location and changes nothing: the
//! running version keeps running.
//!
//! # What a swap guarantees
//!
//! A replacement stops the running version gracefully (it stops reading,
//! finishes the batches it read, its sinks flush, its source's position is
//! committed), then starts the new version, which resumes from that
//! committed position. For a source that keeps a position — a `load:`
//! channel (its reader's cursor) or a `file:` with `state_dir` (its
//! checkpoint) — nothing is lost and nothing is processed twice, provided
//! the new version reads the same channel with the same reader (or the same
//! file with the same `state_dir`). Pause and resume work the same way.
//!
//! Sources without a position cannot be swapped: a `file:` source without
//! `state_dir` would be read again from its first line, and standard input
//! cannot be read again at all. Replacing, pausing or resuming such a flow
//! is refused ([`ManageError::NotResumable`]); it can be deleted and created
//! again (which starts it over).
//!
//! Limits: a version that *fails* (a sink error) stops without committing
//! the batches it could not finish; the next version reads them again, so
//! outputs the failed sink had already written may be written twice
//! (at-least-once, as after a crash). A file sink without `append: true`
//! is truncated each time a version starts: use `append: true` for flows
//! you change while they run.
//!
//! # Channel stores
//!
//! Flows that save or load channels share one [`ChannelStore`] per file,
//! opened once by the manager and kept open while it lives (opening the
//! same path again in the process returns the same store). A loading flow
//! follows its channel until it is stopped.

mod definition;
pub(crate) mod serve;
pub mod watch;

pub use watch::{FileWatcher, WatchEvent, watch_file};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use tokio::sync::Notify;

use crate::channel::ChannelStore;
use crate::config::{ChannelsPlan, ConfigError, ConfigErrors, Plan, PlannedFlow, SourcePlan};
use crate::context::Resources;
use crate::runtime::{Counts, Progress, RunError, RunSummary, Shutdown, StopReason};

use definition::{Definition, RawFile, Settings, redact};

/// The state of a managed flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    /// Running: reading its source (or waiting for input).
    Running,
    /// Paused: stopped gracefully, its position kept; resume starts it again.
    Paused,
    /// Ended on its own: the end of its input, or a step's `on_error: stop`.
    Stopped,
    /// Stopped by an error, or could not start (see [`FlowStatus::reason`]).
    Failed,
}

impl std::fmt::Display for FlowState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FlowState::Running => "running",
            FlowState::Paused => "paused",
            FlowState::Stopped => "stopped",
            FlowState::Failed => "failed",
        })
    }
}

/// What a managed flow is doing, and what it did.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    /// The flow's name.
    pub name: String,
    /// 1 when created, one more at each replacement.
    pub version: u64,
    /// Its state.
    pub state: FlowState,
    /// Why it stopped (`stopped`) or what failed (`failed`); values taken
    /// from the environment are shown as their `${VAR}` reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether it keeps a position, so that it can be replaced, paused and
    /// resumed without losing or repeating messages.
    pub resumable: bool,
    /// The counters of the current run (live), or of the last one.
    pub run: Counts,
    /// The counters of every run of this flow in this process, every
    /// version, pauses and the current run included.
    pub total: Counts,
    /// What the source of the current run reports of its work: a
    /// snapshot's or a file's progress, or `streaming` (absent when the
    /// flow is not running or its source reports nothing). Values taken
    /// from the environment are shown as their `${VAR}` reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::connector::SourceStatus>,
    /// The definition as written (with `${VAR}` references unexpanded).
    pub text: String,
    /// The summary of the last finished run of this flow.
    #[serde(skip)]
    pub last_run: Option<RunSummary>,
}

/// What [`FlowManager::apply_file`] changed, by flow name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Flows started for the first time.
    pub created: Vec<String>,
    /// Flows whose new version replaced the running one.
    pub replaced: Vec<String>,
    /// Flows stopped and removed (they are no longer in the file).
    pub deleted: Vec<String>,
    /// Flows whose definition did not change.
    pub unchanged: Vec<String>,
    /// Flows whose new version was accepted but could not start, with why
    /// (a replaced flow's previous version was started again when it could).
    pub failed: Vec<(String, String)>,
}

impl ApplyReport {
    /// Whether nothing was created, replaced, deleted or failed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.replaced.is_empty()
            && self.deleted.is_empty()
            && self.failed.is_empty()
    }
}

impl std::fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (label, names) in [
            ("created", &self.created),
            ("replaced", &self.replaced),
            ("deleted", &self.deleted),
        ] {
            if !names.is_empty() {
                parts.push(format!("{label} {}", names.join(", ")));
            }
        }
        for (name, why) in &self.failed {
            parts.push(format!("`{name}` did not start: {why}"));
        }
        if parts.is_empty() {
            parts.push("no change".to_string());
        }
        f.write_str(&parts.join("; "))
    }
}

/// Why a change was refused or did not take effect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// The definition has errors (each with its location); nothing changed.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// No flow has this name.
    #[error("no flow is named `{name}`{}", known_names(.known))]
    NotFound {
        /// The name asked for.
        name: String,
        /// The flows there are.
        known: Vec<String>,
    },
    /// `create` of a name already in use.
    #[error(
        "a flow named `{name}` already exists (version {version}): replace it, or delete it first"
    )]
    Exists {
        /// The name.
        name: String,
        /// Its current version.
        version: u64,
    },
    /// The flow's source keeps no position: it cannot be paused, resumed or
    /// replaced without losing or repeating messages.
    #[error("flow `{name}` cannot be {action}: {why}")]
    NotResumable {
        /// The flow.
        name: String,
        /// What was asked (`replaced`, `paused`, `resumed`).
        action: &'static str,
        /// Why, and what to do.
        why: String,
    },
    /// The definition was accepted but the flow could not start.
    #[error("flow `{name}` version {version} could not start: {error}{}", restored_note(*.restored))]
    Start {
        /// The flow.
        name: String,
        /// The version that did not start.
        version: u64,
        /// What went wrong.
        error: String,
        /// The version started again instead, if any.
        restored: Option<u64>,
    },
    /// The manager was shut down.
    #[error("the flow manager is shut down: no change is accepted")]
    ShutDown,
}

fn known_names(known: &[String]) -> String {
    if known.is_empty() {
        " (there are no flows)".to_string()
    } else {
        format!(" (flows: {})", known.join(", "))
    }
}

fn restored_note(restored: Option<u64>) -> String {
    match restored {
        Some(v) => format!("; version {v} was started again"),
        None => String::new(),
    }
}

/// Owns the running flows of a process and changes them while they run;
/// see the [module docs](self). Cheap to clone (every clone manages the
/// same flows); must be used inside a tokio runtime.
///
/// Dropping the last handle asks every flow to stop gracefully; call
/// [`FlowManager::shutdown`] to wait for them.
#[derive(Clone)]
pub struct FlowManager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FlowManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowManager")
            .field("flows", &lock(&self.inner.flows).keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for FlowManager {
    fn default() -> Self {
        Self::new()
    }
}

struct Inner {
    resources: Resources,
    /// Every flow runs with a child of this handle.
    root: Shutdown,
    /// Changes are made one at a time.
    changes: tokio::sync::Mutex<()>,
    flows: Mutex<BTreeMap<String, Entry>>,
    /// The settings of the last file applied: one-flow definitions are
    /// checked with them.
    settings: Mutex<Settings>,
    stores: Mutex<HashMap<PathBuf, ChannelStore>>,
    closed: AtomicBool,
    runs: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.root.shutdown();
    }
}

/// Where a flow came from: a flow file applied whole, or a single change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File,
    Single,
}

struct Entry {
    version: u64,
    def: Definition,
    origin: Origin,
    /// `None` when the source keeps a position; else why it does not.
    not_resumable: Option<String>,
    state: FlowState,
    reason: Option<String>,
    run: Option<Run>,
    last: Option<RunSummary>,
    last_counts: Counts,
    total: Counts,
}

/// One run of one version.
struct Run {
    stop: Shutdown,
    requested: Arc<AtomicBool>,
    progress: Progress,
    cell: Arc<Cell>,
    task: tokio::task::JoinHandle<()>,
}

/// Where a run leaves its outcome.
#[derive(Default)]
struct Cell {
    outcome: Mutex<Option<Result<RunSummary, RunError>>>,
    ended: Notify,
}

impl Cell {
    async fn wait(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.outcome).is_some() {
                return;
            }
            notified.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Entry {
    /// Takes in the outcome of a run that ended on its own.
    fn settle(&mut self) {
        let Some(run) = &self.run else { return };
        let outcome = lock(&run.cell.outcome).take();
        let outcome = match outcome {
            Some(outcome) => outcome,
            None if run.task.is_finished() => Err(RunError::Panicked {
                task: "the flow's task".to_string(),
                message: "it ended without an outcome".to_string(),
            }),
            None => return,
        };
        let requested = run.requested.load(Ordering::Acquire);
        self.run = None;
        self.record(outcome, !requested);
    }

    /// Records a finished run; `own` when it ended without being asked to.
    fn record(&mut self, outcome: Result<RunSummary, RunError>, own: bool) {
        match outcome {
            Ok(summary) => {
                let counts = Counts::of(&summary);
                self.total += counts;
                self.last_counts = counts;
                if own {
                    self.state = FlowState::Stopped;
                    self.reason = Some(
                        match summary.stop {
                            StopReason::EndOfInput => "end of input",
                            StopReason::Shutdown => "a step stopped the flow (`on_error: stop`)",
                            StopReason::Failed => "stopped by an error",
                        }
                        .to_string(),
                    );
                }
                self.last = Some(summary);
            }
            Err(error) => {
                self.state = FlowState::Failed;
                self.reason = Some(redact(&error.to_string(), &self.def.text));
            }
        }
    }

    fn status(&mut self, name: &str) -> FlowStatus {
        self.settle();
        let live = self.run.as_ref().map(|r| r.progress.counts());
        FlowStatus {
            name: name.to_string(),
            version: self.version,
            state: self.state.clone(),
            reason: self.reason.clone(),
            resumable: self.not_resumable.is_none(),
            run: live.unwrap_or(self.last_counts),
            total: self.total + live.unwrap_or_default(),
            source: self
                .run
                .as_ref()
                .and_then(|r| r.progress.source())
                .map(|mut s| {
                    // A path or table may come from the environment.
                    s.what = Arc::from(redact(&s.what, &self.def.text));
                    s
                }),
            text: self.def.text.clone(),
            last_run: self.last.clone(),
        }
    }
}

fn missing(flows: &BTreeMap<String, Entry>, name: &str) -> ManageError {
    ManageError::NotFound {
        name: name.to_string(),
        known: flows.keys().cloned().collect(),
    }
}

/// `None` when the source keeps a position; else why not and what to do.
fn not_resumable(planned: &PlannedFlow) -> Option<String> {
    match &planned.source {
        SourcePlan::File {
            state_dir: None, ..
        } => Some(
            "its `file` source has no `state_dir`, so it keeps no position: another run would read the file again from its first line. Add `state_dir: <dir>` to the source to make it resumable, or delete the flow and create it again to start over".to_string(),
        ),
        SourcePlan::Stdin => Some(
            "it reads standard input, which cannot be read again from a position. Delete it to stop it".to_string(),
        ),
        _ => None,
    }
}

/// A flow of a checked plan, with the plan's channel settings.
struct Checked {
    planned: PlannedFlow,
    channels: Option<ChannelsPlan>,
}

impl Checked {
    fn from_plan(plan: Plan) -> Option<Checked> {
        let channels = plan.channels;
        plan.flows
            .into_iter()
            .next()
            .map(|planned| Checked { planned, channels })
    }
}

impl FlowManager {
    /// A manager with no flows, whose steps get no shared resources.
    pub fn new() -> Self {
        Self::with_resources(Resources::new())
    }

    /// A manager whose flows' steps get these shared resources (`Res<T>`).
    pub fn with_resources(resources: Resources) -> Self {
        FlowManager {
            inner: Arc::new(Inner {
                resources,
                root: Shutdown::new(),
                changes: tokio::sync::Mutex::new(()),
                flows: Mutex::new(BTreeMap::new()),
                settings: Mutex::new(Settings::default()),
                stores: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// Every flow, by name.
    pub fn list(&self) -> Vec<FlowStatus> {
        lock(&self.inner.flows)
            .iter_mut()
            .map(|(name, entry)| entry.status(name))
            .collect()
    }

    /// One flow.
    pub fn get(&self, name: &str) -> Option<FlowStatus> {
        lock(&self.inner.flows)
            .get_mut(name)
            .map(|entry| entry.status(name))
    }

    /// Checks and starts a new flow. `text` is one flow (`source:`,
    /// `steps:`, `sinks:`, ...), checked with the `policies` and `channels`
    /// of the last file applied, or a whole flow file that defines exactly
    /// this flow.
    pub async fn create(&self, name: &str, text: &str) -> Result<FlowStatus, ManageError> {
        self.put_with(name, text, &format!("flow `{name}`"), Some(false))
            .await
            .map(|(status, _)| status)
    }

    /// Checks a new version of a flow, then swaps it in: the running
    /// version drains, the new one starts from the committed position (see
    /// the [module docs](self)). A paused flow stays paused, with the new
    /// definition; a stopped or failed one starts.
    pub async fn replace(&self, name: &str, text: &str) -> Result<FlowStatus, ManageError> {
        self.put_with(name, text, &format!("flow `{name}`"), Some(true))
            .await
            .map(|(status, _)| status)
    }

    /// Creates the flow, or replaces it if it exists; `true` when created.
    /// `origin` names the text in error locations.
    pub async fn put(
        &self,
        name: &str,
        text: &str,
        origin: &str,
    ) -> Result<(FlowStatus, bool), ManageError> {
        self.put_with(name, text, origin, None).await
    }

    async fn put_with(
        &self,
        name: &str,
        text: &str,
        origin: &str,
        exists: Option<bool>,
    ) -> Result<(FlowStatus, bool), ManageError> {
        let _changes = self.begin().await?;
        let settings = lock(&self.inner.settings).clone();
        let (def, plan) =
            Definition::from_text(name, text, origin, &settings).map_err(ManageError::Invalid)?;
        let checked = self.ready(name, plan)?;
        let current = lock(&self.inner.flows).get(name).map(|e| e.version);
        match (exists, current) {
            (Some(false), Some(version)) => {
                return Err(ManageError::Exists {
                    name: name.to_string(),
                    version,
                });
            }
            (Some(true), None) => return Err(self.not_found(name)),
            _ => {}
        }
        if current.is_none() {
            self.start_new(name, def, Origin::Single, checked).await?;
            return Ok((self.status(name)?, true));
        }
        self.swap(name, def, Origin::Single, checked).await?;
        Ok((self.status(name)?, false))
    }

    /// Stops a flow gracefully and removes it; returns its last status. A
    /// loading flow's cursor stays in the channel store: a flow created
    /// again with the same reader resumes there.
    pub async fn delete(&self, name: &str) -> Result<FlowStatus, ManageError> {
        let _changes = self.begin().await?;
        self.delete_locked(name).await
    }

    async fn delete_locked(&self, name: &str) -> Result<FlowStatus, ManageError> {
        self.stop_run(name).await?;
        let mut flows = lock(&self.inner.flows);
        let mut entry = flows.remove(name).ok_or_else(|| missing(&flows, name))?;
        if entry.state == FlowState::Running {
            entry.state = FlowState::Stopped;
            entry.reason = Some("deleted".to_string());
        }
        tracing::info!(flow = name, version = entry.version, "flow deleted");
        Ok(entry.status(name))
    }

    /// Stops a flow gracefully, keeping its position; [`FlowManager::resume`]
    /// starts it again from there. Pausing a paused flow does nothing.
    pub async fn pause(&self, name: &str) -> Result<FlowStatus, ManageError> {
        let _changes = self.begin().await?;
        self.check_resumable(name, "paused")?;
        self.stop_run(name).await?;
        {
            let mut flows = lock(&self.inner.flows);
            let Some(entry) = flows.get_mut(name) else {
                return Err(missing(&flows, name));
            };
            if entry.state == FlowState::Running {
                entry.state = FlowState::Paused;
                entry.reason = None;
                tracing::info!(flow = name, version = entry.version, "flow paused");
            }
        }
        self.status(name)
    }

    /// Starts a paused (or stopped, or failed) flow again, from its
    /// position; its definition is checked again first. Resuming a running
    /// flow does nothing.
    pub async fn resume(&self, name: &str) -> Result<FlowStatus, ManageError> {
        let _changes = self.begin().await?;
        let (def, running, version) = {
            let mut flows = lock(&self.inner.flows);
            let Some(entry) = flows.get_mut(name) else {
                return Err(missing(&flows, name));
            };
            entry.settle();
            (entry.def.clone(), entry.run.is_some(), entry.version)
        };
        if running {
            return self.status(name);
        }
        self.check_resumable(name, "resumed")?;
        let plan = def.check(name).map_err(ManageError::Invalid)?;
        let checked = self.ready(name, plan)?;
        let run = self
            .start(name, checked)
            .await
            .map_err(|error| ManageError::Start {
                name: name.to_string(),
                version,
                error: redact(&error, &def.text),
                restored: None,
            })?;
        if let Some(entry) = lock(&self.inner.flows).get_mut(name) {
            entry.run = Some(run);
            entry.state = FlowState::Running;
            entry.reason = None;
        }
        tracing::info!(flow = name, version, "flow resumed");
        self.status(name)
    }

    /// Makes the flows match a flow file: checks the whole file first
    /// (nothing changes if it has an error), then deletes the flows that
    /// came from a file and are no longer in it, replaces those whose
    /// definition (or the policies and channel settings they use) changed,
    /// and creates the new ones. Flows created one by one
    /// ([`FlowManager::create`], `PUT /flows/{name}`) that the file does
    /// not name are kept; those it names are replaced by its version if it
    /// differs.
    pub async fn apply_file(&self, text: &str, origin: &str) -> Result<ApplyReport, ManageError> {
        let _changes = self.begin().await?;
        let plan = crate::config::load_str(text, origin).map_err(ManageError::Invalid)?;
        let raw = RawFile::parse(text, origin).map_err(ManageError::Invalid)?;
        let settings = raw.settings();
        let channels = plan.channels.clone();
        let mut report = ApplyReport::default();

        // What to do with each flow, decided before anything changes.
        let mut todo = Vec::new();
        let mut refused = ConfigErrors::default();
        {
            let mut flows = lock(&self.inner.flows);
            for planned in plan.flows {
                let name = planned.name.clone();
                let Some(spanned) = raw.flows.get(&name) else {
                    continue;
                };
                let def = Definition::cut_from_file(&name, text, origin, spanned, &settings);
                match flows.get_mut(&name) {
                    Some(entry) if entry.def.raw == def.raw => {
                        entry.origin = Origin::File;
                        entry.def = def;
                        report.unchanged.push(name);
                    }
                    Some(entry) => {
                        if let Some(why) = &entry.not_resumable {
                            refused.errors.push(ConfigError {
                                file: origin.to_string(),
                                line: spanned.referenced.line(),
                                column: spanned.referenced.column(),
                                message: format!("flow `{name}` cannot be replaced: {why}"),
                            });
                        }
                        todo.push((name, def, planned, true));
                    }
                    None => todo.push((name, def, planned, false)),
                }
            }
        }
        if !refused.errors.is_empty() {
            return Err(ManageError::Invalid(refused));
        }
        let problems: Vec<String> = todo
            .iter()
            .flat_map(|(name, _, planned, _)| self.missing_resources(name, planned))
            .collect();
        if !problems.is_empty() {
            return Err(ManageError::Invalid(ConfigErrors {
                errors: problems
                    .into_iter()
                    .map(|message| ConfigError {
                        file: origin.to_string(),
                        line: 0,
                        column: 0,
                        message,
                    })
                    .collect(),
            }));
        }
        *lock(&self.inner.settings) = settings;

        let removed: Vec<String> = lock(&self.inner.flows)
            .iter()
            .filter(|(name, e)| e.origin == Origin::File && !raw.flows.contains_key(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in removed {
            self.delete_locked(&name).await?;
            report.deleted.push(name);
        }
        for (name, def, planned, exists) in todo {
            let checked = Checked {
                planned,
                channels: channels.clone(),
            };
            let done = if exists {
                self.swap(&name, def, Origin::File, checked).await
            } else {
                self.start_new(&name, def, Origin::File, checked).await
            };
            match done {
                Ok(()) if exists => report.replaced.push(name),
                Ok(()) => report.created.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        tracing::info!(file = origin, changes = %report, "flow file applied");
        Ok(report)
    }

    /// Stops every flow gracefully (in parallel) and refuses any further
    /// change; returns their statuses once they all stopped.
    pub async fn shutdown(&self) -> Vec<FlowStatus> {
        self.inner.closed.store(true, Ordering::Release);
        let _changes = self.inner.changes.lock().await;
        let names: Vec<String> = lock(&self.inner.flows).keys().cloned().collect();
        let stops = names.iter().map(|name| self.stop_run(name));
        for (name, stopped) in names.iter().zip(futures_join_all(stops).await) {
            if stopped.is_ok()
                && let Some(entry) = lock(&self.inner.flows).get_mut(name)
                && entry.state == FlowState::Running
            {
                entry.state = FlowState::Stopped;
                entry.reason = Some("the process is stopping".to_string());
            }
        }
        self.list()
    }

    /// The handle every flow of this manager stops with: triggering it stops
    /// them all (without marking them paused), like [`FlowManager::shutdown`]
    /// without waiting.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.inner.root.clone()
    }

    async fn begin(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, ManageError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ManageError::ShutDown);
        }
        let guard = self.inner.changes.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ManageError::ShutDown);
        }
        Ok(guard)
    }

    fn status(&self, name: &str) -> Result<FlowStatus, ManageError> {
        self.get(name).ok_or_else(|| self.not_found(name))
    }

    fn not_found(&self, name: &str) -> ManageError {
        missing(&lock(&self.inner.flows), name)
    }

    fn check_resumable(&self, name: &str, action: &'static str) -> Result<(), ManageError> {
        let flows = lock(&self.inner.flows);
        let Some(entry) = flows.get(name) else {
            return Err(missing(&flows, name));
        };
        match &entry.not_resumable {
            Some(why) => Err(ManageError::NotResumable {
                name: name.to_string(),
                action,
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }

    fn missing_resources(&self, name: &str, planned: &PlannedFlow) -> Vec<String> {
        let mut found = Vec::new();
        crate::flow::FlowDef::check(&planned.flow, &self.inner.resources, &mut found);
        found
            .into_iter()
            .map(|p| format!("flow `{name}`: {p} (give it to the manager with `FlowManager::with_resources`, or to the CLI with `Cli::resource`)"))
            .collect()
    }

    /// The one flow of a checked plan, with its resources checked.
    fn ready(&self, name: &str, plan: Plan) -> Result<Checked, ManageError> {
        let checked = Checked::from_plan(plan).ok_or_else(|| {
            ManageError::Invalid(definition::one(
                name,
                format!("the definition of flow `{name}` holds no flow"),
            ))
        })?;
        let problems = self.missing_resources(name, &checked.planned);
        if !problems.is_empty() {
            return Err(ManageError::Invalid(ConfigErrors {
                errors: problems
                    .into_iter()
                    .map(|message| ConfigError {
                        file: name.to_string(),
                        line: 0,
                        column: 0,
                        message,
                    })
                    .collect(),
            }));
        }
        Ok(checked)
    }

    async fn start_new(
        &self,
        name: &str,
        def: Definition,
        origin: Origin,
        checked: Checked,
    ) -> Result<(), ManageError> {
        let not_resumable = not_resumable(&checked.planned);
        let run = self
            .start(name, checked)
            .await
            .map_err(|error| ManageError::Start {
                name: name.to_string(),
                version: 1,
                error: redact(&error, &def.text),
                restored: None,
            })?;
        lock(&self.inner.flows).insert(
            name.to_string(),
            Entry {
                version: 1,
                def,
                origin,
                not_resumable,
                state: FlowState::Running,
                reason: None,
                run: Some(run),
                last: None,
                last_counts: Counts::default(),
                total: Counts::default(),
            },
        );
        tracing::info!(flow = name, "flow created");
        Ok(())
    }

    /// Replaces a flow's definition: drains the running version, starts the
    /// new one (unless the flow is paused); if the new one cannot start,
    /// starts the previous one again.
    async fn swap(
        &self,
        name: &str,
        def: Definition,
        origin: Origin,
        checked: Checked,
    ) -> Result<(), ManageError> {
        self.check_resumable(name, "replaced")?;
        let new_not_resumable = not_resumable(&checked.planned);
        let was_running = self.stop_run(name).await?;
        let (version, paused, old_def) = {
            let mut flows = lock(&self.inner.flows);
            let Some(entry) = flows.get_mut(name) else {
                return Err(missing(&flows, name));
            };
            entry.version += 1;
            let old_def = std::mem::replace(&mut entry.def, def.clone());
            entry.origin = origin;
            entry.not_resumable = new_not_resumable;
            (entry.version, entry.state == FlowState::Paused, old_def)
        };
        if paused {
            tracing::info!(
                flow = name,
                version,
                "paused flow replaced; resume it to start the new version"
            );
            return Ok(());
        }
        match self.start(name, checked).await {
            Ok(run) => {
                if let Some(entry) = lock(&self.inner.flows).get_mut(name) {
                    entry.run = Some(run);
                    entry.state = FlowState::Running;
                    entry.reason = None;
                }
                tracing::info!(flow = name, version, "flow replaced by a new version");
                Ok(())
            }
            Err(error) => {
                let error = redact(&error, &def.text);
                tracing::warn!(flow = name, version, %error, "the new version did not start");
                let restored = if was_running {
                    self.restore(name, old_def, version - 1).await
                } else {
                    None
                };
                if restored.is_none()
                    && let Some(entry) = lock(&self.inner.flows).get_mut(name)
                {
                    entry.state = FlowState::Failed;
                    entry.reason = Some(format!("version {version} could not start: {error}"));
                }
                Err(ManageError::Start {
                    name: name.to_string(),
                    version,
                    error,
                    restored,
                })
            }
        }
    }

    /// Starts a previous definition again after its replacement failed to start.
    async fn restore(&self, name: &str, def: Definition, version: u64) -> Option<u64> {
        let plan = def.check(name).ok()?;
        let checked = Checked::from_plan(plan)?;
        let not_resumable = not_resumable(&checked.planned);
        let run = self.start(name, checked).await.ok()?;
        let mut flows = lock(&self.inner.flows);
        let entry = flows.get_mut(name)?;
        entry.run = Some(run);
        entry.def = def;
        entry.version = version;
        entry.not_resumable = not_resumable;
        entry.state = FlowState::Running;
        entry.reason = None;
        tracing::warn!(flow = name, version, "previous version started again");
        Some(version)
    }

    /// Stops the flow's run gracefully, if it has one, and records its
    /// outcome; `true` if it was running.
    async fn stop_run(&self, name: &str) -> Result<bool, ManageError> {
        let run = {
            let mut flows = lock(&self.inner.flows);
            let Some(entry) = flows.get_mut(name) else {
                return Err(missing(&flows, name));
            };
            entry.settle();
            entry.run.take()
        };
        let Some(run) = run else { return Ok(false) };
        run.requested.store(true, Ordering::Release);
        run.stop.shutdown();
        run.cell.wait().await;
        let outcome = lock(&run.cell.outcome).take();
        let _ = run.task.await;
        if let Some(entry) = lock(&self.inner.flows).get_mut(name) {
            match outcome {
                Some(outcome) => entry.record(outcome, false),
                None => entry.record(
                    Err(RunError::Panicked {
                        task: "the flow's task".to_string(),
                        message: "it ended without an outcome".to_string(),
                    }),
                    false,
                ),
            }
        }
        Ok(true)
    }

    /// The channel store of this file, opened once.
    fn store(&self, plan: &ChannelsPlan) -> Result<ChannelStore, String> {
        let mut stores = lock(&self.inner.stores);
        if let Some(store) = stores.get(&plan.path) {
            for (channel, retention) in &plan.retention {
                store
                    .set_retention(channel, *retention)
                    .map_err(|e| e.to_string())?;
            }
            return Ok(store.clone());
        }
        let store = crate::config::open_store(plan).map_err(|e| e.0)?;
        stores.insert(plan.path.clone(), store.clone());
        Ok(store)
    }

    /// Starts a run and waits until it has started reading (or failed to).
    async fn start(&self, name: &str, checked: Checked) -> Result<Run, String> {
        let store = checked
            .channels
            .as_ref()
            .filter(|plan| plan.embedded)
            .map(|plan| self.store(plan))
            .transpose()?;
        let brokers = match &checked.channels {
            Some(plan) => crate::config::prepare_brokers(plan)
                .await
                .map_err(|e| e.0)?,
            None => std::sync::Arc::from(Vec::new()),
        };
        let stop = self.inner.root.child();
        let progress = Progress::new();
        let cell = Arc::new(Cell::default());
        let run_number = self.inner.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let task = tokio::spawn({
            let (stop, progress, cell) = (stop.clone(), progress.clone(), cell.clone());
            let resources = self.inner.resources.clone();
            let planned = checked.planned;
            async move {
                let result = planned
                    .run_managed(stop, (store, brokers), resources, progress)
                    .await;
                *lock(&cell.outcome) = Some(result);
                cell.ended.notify_waiters();
            }
        });
        tokio::select! {
            () = progress.started() => {}
            () = cell.wait() => {
                let outcome = lock(&cell.outcome).take();
                match outcome {
                    Some(Err(e)) => return Err(e.to_string()),
                    // It ended at once (an empty input): keep its outcome.
                    Some(ok) => *lock(&cell.outcome) = Some(ok),
                    None => return Err("the run ended without an outcome".to_string()),
                }
            }
        }
        tracing::debug!(flow = name, run = run_number, "run started");
        Ok(Run {
            stop,
            requested: Arc::new(AtomicBool::new(false)),
            progress,
            cell,
            task,
        })
    }
}

/// Awaits futures concurrently, keeping their order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let futures: Vec<_> = futures.map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> =
        futures.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(out) => {
                results[*i] = Some(out);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    results.into_iter().flatten().collect()
}
