//! [`ChannelError`]: what failed, where, and what to do.

use std::path::PathBuf;

use crate::connector::ConnectorError;

/// A channel store or channel connector failed. Every message names the
/// store file, the channel and reader when there is one, and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// A channel or reader name is not valid.
    #[error(
        "invalid {kind} name `{name}`: it {problem}; use 1 to 128 ASCII letters, digits, `_`, `-` or `.`, starting with a letter or digit"
    )]
    InvalidName {
        /// `channel` or `reader`.
        kind: &'static str,
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The store file could not be opened.
    #[error("cannot open channel store `{}`: {source}; {hint}", path.display())]
    Open {
        /// The store file.
        path: PathBuf,
        /// redb's error.
        source: Box<redb::Error>,
        /// What to do about it.
        hint: &'static str,
    },
    /// The store's directory is missing or the path is unusable.
    #[error("cannot open channel store `{}`: {problem}; {hint}", path.display())]
    Path {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Another process has the store file open.
    #[error(
        "channel store `{}` is already open in another process; by default a store file is used by one process at a time: stop the other process, run the saving and loading flows in one process, or open the store with `ChannelStoreOptions::shared(true)` in every process that uses it",
        path.display()
    )]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The file is not a channel store, or one written by a newer syncflow.
    #[error("`{}` {problem}; {hint}", path.display())]
    Format {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// Reading or writing the store failed.
    #[error("cannot {action} in channel store `{}`: {source}; check free disk space and permissions (a damaged file is repaired when it is opened again)", path.display())]
    Storage {
        /// The store file.
        path: PathBuf,
        /// What was being done, naming the channel and reader.
        action: String,
        /// redb's error.
        source: Box<redb::Error>,
    },
    /// Stored data is not what the store wrote.
    #[error(
        "channel `{channel}` in store `{}` is damaged: {problem}; restore the file from a backup, or delete the channel with `ChannelStore::delete_channel` (its records are lost)",
        path.display()
    )]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// The channel.
        channel: String,
        /// What is wrong.
        problem: String,
    },
    /// A reader name is already being read from in this process.
    #[error(
        "reader `{reader}` of channel `{channel}` in store `{}` is already in use in this process; give each loading flow its own reader name (readers with different names each get every record)",
        path.display()
    )]
    ReaderBusy {
        /// The store file.
        path: PathBuf,
        /// The channel.
        channel: String,
        /// The reader.
        reader: String,
    },
    /// A retention setting is invalid.
    #[error("invalid retention for channel `{channel}`: {problem}")]
    Retention {
        /// The channel.
        channel: String,
        /// What is wrong and what to use instead.
        problem: &'static str,
    },
    /// A record is larger than a channel can hold.
    #[error(
        "a record of {len} bytes is too large for a channel (at most 4 GiB - 1); split it into smaller messages"
    )]
    RecordTooLarge {
        /// The record's size in bytes.
        len: usize,
    },
    /// A background task running a store operation failed.
    #[error("the task that was to {action} in channel store `{}` failed: {message}; this is a bug in syncflow or the store, please report it", path.display())]
    Task {
        /// The store file.
        path: PathBuf,
        /// What the task was doing.
        action: String,
        /// The task's panic message or cancellation.
        message: String,
    },
}

impl From<ChannelError> for ConnectorError {
    fn from(error: ChannelError) -> Self {
        ConnectorError::Other(Box::new(error))
    }
}
