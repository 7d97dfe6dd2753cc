//! Applying a flow file again whenever it changes: [`watch_file`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{ApplyReport, FlowManager, ManageError};

/// What happened when the watched file changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchEvent {
    /// The file was applied: what changed.
    Applied {
        /// The file.
        file: PathBuf,
        /// The flows created, replaced, deleted.
        report: ApplyReport,
    },
    /// The file has errors: nothing changed, the flows run as they were.
    Rejected {
        /// The file.
        file: PathBuf,
        /// Why (for [`ManageError::Invalid`], every error with its location).
        error: ManageError,
    },
    /// The file could not be read (removed, or not readable); nothing changed.
    Unreadable {
        /// The file.
        file: PathBuf,
        /// Why.
        error: String,
    },
}

impl std::fmt::Display for WatchEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchEvent::Applied { file, report } => {
                write!(f, "{}: change applied: {report}", file.display())
            }
            WatchEvent::Rejected { file, error } => write!(
                f,
                "{}: change rejected, the flows run as they were:\n{error}",
                file.display()
            ),
            WatchEvent::Unreadable { file, error } => write!(
                f,
                "{}: cannot read the flow file ({error}); the flows run as they were",
                file.display()
            ),
        }
    }
}

/// The file could not be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch `{path}` for changes: {message}")]
pub struct WatchError {
    /// The file.
    pub path: PathBuf,
    /// Why, and what to do.
    pub message: String,
}

/// Watches a flow file while it lives; dropping it stops the watching (the
/// flows keep running).
pub struct FileWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FileWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatcher").finish_non_exhaustive()
    }
}

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long the file must stay quiet after a change before it is read:
/// editors write a file in several steps.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(200);

/// Applies `path` through `manager` ([`FlowManager::apply_file`]) each time
/// it changes, once it has been quiet for `debounce`, and tells `on_event`
/// what came of it. A change that leaves the text as it was is ignored; the
/// text the file has when the watch starts is taken as already applied
/// (apply it first).
///
/// The file's directory is watched, so editors that save by writing a new
/// file and renaming it over the old one are seen. Must be called inside a
/// tokio runtime.
pub fn watch_file(
    manager: FlowManager,
    path: impl AsRef<Path>,
    debounce: Duration,
    mut on_event: impl FnMut(WatchEvent) + Send + 'static,
) -> Result<FileWatcher, WatchError> {
    let path = path.as_ref().to_path_buf();
    let fail = |message: String| WatchError {
        path: path.clone(),
        message,
    };
    let absolute =
        std::path::absolute(&path).map_err(|e| fail(format!("cannot resolve the path ({e})")))?;
    let (Some(dir), Some(name)) = (absolute.parent(), absolute.file_name()) else {
        return Err(fail("it names no file".to_string()));
    };
    let (dir, name) = (dir.to_path_buf(), name.to_os_string());
    let mut last = std::fs::read_to_string(&path)
        .map_err(|e| fail(format!("cannot read it ({e}); check the path")))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let _ = tx.send(event);
    })
    .map_err(|e| fail(e.to_string()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            fail(format!(
                "cannot watch its directory `{}` ({e})",
                dir.display()
            ))
        })?;

    let origin = path.display().to_string();
    let concerns = move |event: &notify::Result<notify::Event>| match event {
        Ok(event) => {
            let kind = match event.kind {
                // Reading the file (as this watcher does) is not a change.
                EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                EventKind::Access(_) => false,
                _ => true,
            };
            kind && event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
        }
        // A watcher error (e.g. events lost): look at the file again.
        Err(_) => true,
    };
    let task = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            if !concerns(&event) {
                continue;
            }
            // Wait until the file has been quiet for `debounce`.
            loop {
                match tokio::time::timeout(debounce, rx.recv()).await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) => {
                    on_event(WatchEvent::Unreadable {
                        file: path.clone(),
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            if text == last {
                continue;
            }
            match manager.apply_file(&text, &origin).await {
                Ok(report) => {
                    last = text;
                    on_event(WatchEvent::Applied {
                        file: path.clone(),
                        report,
                    });
                }
                Err(ManageError::ShutDown) => return,
                Err(error) => {
                    on_event(WatchEvent::Rejected {
                        file: path.clone(),
                        error,
                    });
                }
            }
        }
    });
    Ok(FileWatcher {
        _watcher: watcher,
        task,
    })
}
