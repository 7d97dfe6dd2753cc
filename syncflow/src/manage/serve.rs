//! `syncflow run flows.yaml --watch --admin 127.0.0.1:8080`: a flow file
//! run by a [`FlowManager`], changed while it runs.

use std::io::Write;
use std::path::PathBuf;

use super::{FlowManager, FlowState, ManageError, watch};
use crate::admin::{AdminServer, TOKEN_ENV};
use crate::config::ConfigErrors;

/// How the CLI runs a managed flow file.
pub(crate) struct ServeOptions {
    pub(crate) file: PathBuf,
    pub(crate) watch: bool,
    pub(crate) admin: Option<String>,
    pub(crate) token: Option<String>,
}

/// Why a managed run ended badly.
pub(crate) enum ServeError {
    /// The file has errors; nothing ran.
    Config(ConfigErrors),
    /// A setting or the environment is wrong; nothing ran.
    Setup(String),
    /// Flows failed.
    Failed(String),
}

/// Runs the file's flows until Ctrl-C or SIGTERM, applying the file again
/// when it changes (`watch`) and serving the admin API (`admin`).
pub(crate) fn run(
    options: ServeOptions,
    resources: &crate::context::Resources,
    err: &mut dyn Write,
) -> Result<(), ServeError> {
    let token = options
        .token
        .or_else(|| std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()));
    let text = std::fs::read_to_string(&options.file).map_err(|e| {
        ServeError::Setup(format!(
            "cannot read the flow file `{}`: {e}; check the path",
            options.file.display()
        ))
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("syncflow")
        .build()
        .map_err(|e| ServeError::Setup(format!("cannot start the async runtime: {e}")))?;
    let manager_resources = resources.clone();
    let result = runtime.block_on(async move {
        // The admin address is checked before any flow starts.
        let admin = match &options.admin {
            Some(addr) => Some(
                AdminServer::bind(addr, token)
                    .await
                    .map_err(|e| ServeError::Setup(e.to_string()))?,
            ),
            None => None,
        };
        let manager = FlowManager::with_resources(manager_resources);
        let origin = options.file.display().to_string();
        let report = match manager.apply_file(&text, &origin).await {
            Ok(report) => report,
            Err(ManageError::Invalid(errors)) => return Err(ServeError::Config(errors)),
            Err(e) => return Err(ServeError::Setup(e.to_string())),
        };
        let _ = writeln!(err, "{origin}: started {}", report.created.join(", "));
        if !report.failed.is_empty() {
            manager.shutdown().await;
            let failed: Vec<String> = report
                .failed
                .iter()
                .map(|(name, why)| format!("flow `{name}`: {why}"))
                .collect();
            return Err(ServeError::Failed(failed.join("\n")));
        }
        let stop = crate::runtime::Shutdown::new();
        let server = match admin {
            Some(server) => {
                if let Ok(addr) = server.local_addr() {
                    let _ = writeln!(err, "admin API on http://{addr}/flows");
                }
                let (manager, stop) = (manager.clone(), stop.clone());
                Some(tokio::spawn(
                    async move { server.serve(manager, stop).await },
                ))
            }
            None => None,
        };
        let watcher = if options.watch {
            let watcher = watch::watch_file(
                manager.clone(),
                &options.file,
                watch::DEFAULT_DEBOUNCE,
                |event| {
                    match &event {
                        watch::WatchEvent::Applied { .. } => tracing::info!("{event}"),
                        _ => tracing::warn!("{event}"),
                    }
                    eprintln!("{event}");
                },
            )
            .map_err(|e| ServeError::Setup(e.to_string()));
            match watcher {
                Ok(w) => {
                    let _ = writeln!(err, "watching {origin} for changes");
                    Some(w)
                }
                Err(e) => {
                    stop.shutdown();
                    manager.shutdown().await;
                    return Err(e);
                }
            }
        } else {
            None
        };

        let signal = crate::runtime::next_signal().await;
        let _ = writeln!(
            err,
            "{}: stopping every flow (finishing the batches in flight)",
            signal.unwrap_or("stop")
        );
        drop(watcher);
        stop.shutdown();
        let statuses = manager.shutdown().await;
        if let Some(server) = server {
            match server.await {
                Ok(Err(e)) => tracing::warn!(error = %e, "the admin API stopped with an error"),
                Err(e) => tracing::warn!(error = %e, "the admin API task failed"),
                Ok(Ok(())) => {}
            }
        }
        let mut failed = Vec::new();
        for status in statuses {
            if let Some(summary) = &status.last_run {
                let _ = write!(err, "{summary}");
            }
            if status.state == FlowState::Failed {
                failed.push(format!(
                    "flow `{}` (version {}): {}",
                    status.name,
                    status.version,
                    status.reason.unwrap_or_default()
                ));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ServeError::Failed(failed.join("\n")))
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}
