//! Stopping a run: the [`Shutdown`] handle and the signal listener.

use tokio_util::sync::CancellationToken;

/// Asks a running flow to stop gracefully: stop reading, finish the batches
/// already read, flush the sinks, commit the source's position, and return
/// the summary.
///
/// Cheap to clone; every clone controls the same run. Get one with
/// [`Runtime::shutdown_handle`](super::Runtime::shutdown_handle), or make one
/// and hand it over with [`Runtime::with_shutdown`](super::Runtime::with_shutdown)
/// (one handle can stop several runs). It can also be registered as a flow
/// resource, so a step can stop the run.
///
/// ```
/// use syncflow::runtime::Shutdown;
///
/// let shutdown = Shutdown::new();
/// let for_admin_api = shutdown.clone();
/// assert!(!shutdown.is_shutdown());
/// for_admin_api.shutdown();
/// assert!(shutdown.is_shutdown());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A handle that has not been triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a graceful stop. Idempotent.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Whether a stop was requested.
    pub fn is_shutdown(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits until a stop is requested.
    pub async fn wait(&self) {
        self.token.cancelled().await;
    }

    /// A handle that is triggered with this one, and can also be triggered
    /// alone (one flow of several stopping on its own).
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
        }
    }

    pub(crate) fn child_token(&self) -> CancellationToken {
        self.token.child_token()
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; the first requests a graceful stop,
/// the second cancels `abort` (stop at once, without draining).
pub(crate) async fn listen(flow: &'static str, shutdown: Shutdown, abort: CancellationToken) {
    let Some(signal) = next_signal().await else {
        return;
    };
    tracing::warn!(
        flow,
        signal,
        "stopping: finishing the batches already read, then flushing and committing (interrupt again to abort at once)"
    );
    shutdown.shutdown();
    if let Some(signal) = next_signal().await {
        tracing::warn!(flow, signal, "aborting without draining");
        abort.cancel();
    }
}

/// The name of the next termination signal, or `None` if signals cannot be
/// listened to (then it never returns).
pub(crate) async fn next_signal() -> Option<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the flow gracefully");
                return match tokio::signal::ctrl_c().await {
                    Ok(()) => Some("SIGINT"),
                    Err(_) => std::future::pending().await,
                };
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => Some("SIGINT"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                    term.recv().await.map(|()| "SIGTERM")
                }
            },
            r = term.recv() => r.map(|()| "SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        match tokio::signal::ctrl_c().await {
            Ok(()) => Some("Ctrl-C"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                None
            }
        }
    }
}
