//! The `save:` end of a flow: [`SaveSink`] and [`RawSaveSink`].

use std::sync::Arc;

use serde::Serialize;

use super::{ChannelError, ChannelStore, RecordBatch, Retention, check_name};
use crate::connector::{ConnectorError, Sink};

/// What both save sinks share: the channel and the records written since
/// the last flush.
#[derive(Debug)]
struct SaveCore {
    store: ChannelStore,
    channel: Arc<str>,
    name: String,
    pending: RecordBatch,
    appended: u64,
}

impl SaveCore {
    fn open(store: &ChannelStore, channel: &str) -> Result<Self, ChannelError> {
        check_name("channel", channel)?;
        store.create_channel(channel)?;
        Ok(SaveCore {
            store: store.clone(),
            channel: Arc::from(channel),
            name: format!("save:{channel}"),
            pending: RecordBatch::new(),
            appended: 0,
        })
    }

    /// Appends everything written since the last flush in one transaction.
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let store = self.store.clone();
        let channel = self.channel.clone();
        let (batch, result) = tokio::task::spawn_blocking(move || {
            let result = store.append(&channel, &batch);
            (batch, result)
        })
        .await
        .map_err(|e| ChannelError::Task {
            path: self.store.path().to_path_buf(),
            action: format!("append to channel `{}`", self.channel),
            message: e.to_string(),
        })?;
        // Keep the buffer (and, on failure, its records) for the next call.
        self.pending = batch;
        let info = result?;
        self.appended += info.seqs.end - info.seqs.start;
        if info.trimmed > 0 {
            tracing::debug!(channel = %self.channel, trimmed = info.trimmed, "retention removed old records");
        }
        self.pending.clear();
        Ok(())
    }
}

/// Saves a flow's outputs into a channel, one JSON value per record.
///
/// [`Sink::write`] encodes each item into a buffer; [`Sink::flush`]
/// appends everything buffered in one write transaction, which is durable
/// when it returns: so when the runtime acknowledges a batch to its source,
/// its outputs are in the channel. Readers of the channel in this process
/// are woken at once.
///
/// Any `T: Serialize` can be saved. A `Box<serde_json::value::RawValue>`
/// (already-encoded JSON, as the YAML runtime passes around) is written as
/// its text, without being parsed again.
///
/// ```
/// # fn main() -> Result<(), syncflow::channel::ChannelError> {
/// # let dir = tempfile::tempdir().unwrap();
/// use syncflow::channel::{ChannelStore, Retention, SaveSink};
///
/// let store = ChannelStore::open(dir.path().join("channels.redb"))?;
/// let sink = SaveSink::open(&store, "orders")?.retention(Retention::default().max_records(1_000_000))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SaveSink {
    core: SaveCore,
}

impl SaveSink {
    /// A sink appending to `channel` of `store` (the channel is created if
    /// missing, so it shows in the store's statistics at once).
    pub fn open(store: &ChannelStore, channel: &str) -> Result<Self, ChannelError> {
        Ok(SaveSink {
            core: SaveCore::open(store, channel)?,
        })
    }

    /// Sets the channel's retention (stored with the channel: it applies to
    /// every append, by any sink).
    pub fn retention(self, retention: Retention) -> Result<Self, ChannelError> {
        self.core
            .store
            .set_retention(&self.core.channel, retention)?;
        Ok(self)
    }

    /// The channel written.
    pub fn channel(&self) -> &str {
        &self.core.channel
    }

    /// The store written to.
    pub fn store(&self) -> &ChannelStore {
        &self.core.store
    }

    /// Records appended (made durable) by this sink so far.
    pub fn appended(&self) -> u64 {
        self.core.appended
    }
}

impl<T: Serialize + Sync> Sink<T> for SaveSink {
    fn name(&self) -> String {
        self.core.name.clone()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        for item in items {
            self.core
                .pending
                .push_json(item)
                .map_err(|source| ConnectorError::Encode {
                    target: self.core.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.core.flush().await
    }
}

/// Saves byte strings into a channel as they are (no encoding): for
/// payloads that are already serialized. A [`LoadSource`](super::LoadSource)
/// can read them only if they are JSON; a
/// [`RawLoadSource`](super::RawLoadSource) reads anything.
#[derive(Debug)]
pub struct RawSaveSink {
    core: SaveCore,
}

impl RawSaveSink {
    /// A sink appending to `channel` of `store` (created if missing).
    pub fn open(store: &ChannelStore, channel: &str) -> Result<Self, ChannelError> {
        Ok(RawSaveSink {
            core: SaveCore::open(store, channel)?,
        })
    }

    /// Sets the channel's retention.
    pub fn retention(self, retention: Retention) -> Result<Self, ChannelError> {
        self.core
            .store
            .set_retention(&self.core.channel, retention)?;
        Ok(self)
    }

    /// The channel written.
    pub fn channel(&self) -> &str {
        &self.core.channel
    }

    /// Records appended (made durable) by this sink so far.
    pub fn appended(&self) -> u64 {
        self.core.appended
    }
}

impl<B: AsRef<[u8]> + Sync> Sink<B> for RawSaveSink {
    fn name(&self) -> String {
        self.core.name.clone()
    }

    async fn write(&mut self, items: &[B]) -> Result<(), ConnectorError> {
        for item in items {
            self.core.pending.push(item.as_ref())?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.core.flush().await
    }
}
