//! The `load:` end of a flow: [`LoadSource`] and [`RawLoadSource`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::store::ReaderLease;
use super::{ChannelError, ChannelStore, Cursor, StartAt, check_name};
use crate::connector::{
    Acker, Batch, ConnectorError, DecodeError, DecodeFn, Read, Source, serde_decode,
};
use crate::runtime::Shutdown;

/// How a [`LoadSource`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    start: StartAt,
    follow: bool,
    poll: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            start: StartAt::Oldest,
            follow: true,
            poll: LoadOptions::DEFAULT_POLL,
        }
    }
}

impl LoadOptions {
    /// How long a read waits for new records by default before it reports
    /// [`Read::Idle`] (and how often a reader looks for appends made by
    /// another process).
    pub const DEFAULT_POLL: Duration = Duration::from_millis(200);

    /// Where a reader without a cursor starts (default: the oldest record).
    /// A reader with a cursor always resumes at its cursor.
    pub fn start(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    /// Whether to wait for new records at the end of the channel (the
    /// default, like `tail -f`), or to end the run there.
    pub fn follow(mut self, follow: bool) -> Self {
        self.follow = follow;
        self
    }

    /// How long a read waits for new records before reporting that it is
    /// idle (default [`LoadOptions::DEFAULT_POLL`]). Appends in this process
    /// wake the reader at once; appends by another process are seen within
    /// this time.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }
}

/// The acknowledgement of a batch read from a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAck {
    /// The sequence number after the batch's last record: the reader's
    /// cursor once the batch is acknowledged.
    pub next: u64,
    /// Records skipped (lost to retention) just before this batch.
    pub skipped: u64,
}

/// Commits the cursor of a [`LoadSource`]: once per group of acknowledged
/// batches, in one durable write transaction.
pub struct ChannelAcker {
    store: ChannelStore,
    channel: Arc<str>,
    reader: Arc<str>,
    acked: Cursor,
    stored: Cursor,
    _lease: Arc<ReaderLease>,
}

impl std::fmt::Debug for ChannelAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelAcker")
            .field("channel", &self.channel)
            .field("reader", &self.reader)
            .field("acked", &self.acked)
            .field("stored", &self.stored)
            .finish()
    }
}

impl Acker for ChannelAcker {
    type Ack = ChannelAck;

    fn ack(&mut self, ack: ChannelAck) {
        self.acked.position = ack.next;
        self.acked.skipped += ack.skipped;
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.acked == self.stored {
            return Ok(());
        }
        let (store, channel, reader, cursor) = (
            self.store.clone(),
            self.channel.clone(),
            self.reader.clone(),
            self.acked,
        );
        tokio::task::spawn_blocking(move || store.commit_cursor(&channel, &reader, cursor))
            .await
            .map_err(|e| ChannelError::Task {
                path: self.store.path().to_path_buf(),
                action: format!(
                    "commit the cursor of reader `{}` on channel `{}`",
                    self.reader, self.channel
                ),
                message: e.to_string(),
            })??;
        self.stored = cursor;
        Ok(())
    }
}

/// What both load sources share: the cursor and the waiting.
struct LoadCore {
    store: ChannelStore,
    channel: Arc<str>,
    reader: Arc<str>,
    name: Arc<str>,
    options: LoadOptions,
    /// The cursor when the source was opened.
    resumed: Cursor,
    /// The next sequence number to read.
    next: u64,
    /// Records skipped since the last batch handed out.
    skipped_unreported: u64,
    /// Records skipped by this source.
    skipped: Arc<AtomicU64>,
    notify: Arc<Notify>,
    lease: Arc<ReaderLease>,
    /// Follow only until this is triggered (see `LoadSource::follow_until`).
    until: Option<Shutdown>,
}

impl LoadCore {
    fn open(
        store: &ChannelStore,
        channel: &str,
        reader: &str,
        options: LoadOptions,
    ) -> Result<Self, ChannelError> {
        check_name("channel", channel)?;
        check_name("reader", reader)?;
        let lease = Arc::new(store.lease_reader(channel, reader)?);
        let cursor = store.register_reader(channel, reader, options.start)?;
        tracing::info!(
            channel,
            reader,
            position = cursor.position,
            "reading the channel from the reader's cursor"
        );
        Ok(LoadCore {
            store: store.clone(),
            channel: Arc::from(channel),
            reader: Arc::from(reader),
            name: Arc::from(format!("load:{channel}@{reader}")),
            options,
            resumed: cursor,
            next: cursor.position,
            skipped_unreported: 0,
            skipped: Arc::new(AtomicU64::new(0)),
            notify: store.notifier(channel),
            lease,
            until: None,
        })
    }

    fn acker(&self) -> ChannelAcker {
        ChannelAcker {
            store: self.store.clone(),
            channel: self.channel.clone(),
            reader: self.reader.clone(),
            acked: self.resumed,
            stored: self.resumed,
            _lease: self.lease.clone(),
        }
    }

    async fn read<T, D>(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
        decode: D,
    ) -> Result<Read<ChannelAck>, ConnectorError>
    where
        T: Send + 'static,
        D: Fn(&[u8]) -> Result<T, DecodeError> + Copy + Send + 'static,
    {
        let mut waited = false;
        loop {
            // Whether the writers this reader follows are done, taken before
            // the read: what they appended before that is then in the read.
            let writers_done = self.until.as_ref().is_some_and(Shutdown::is_shutdown);
            // Register for a wake-up before reading, so that an append
            // between the read and the wait is not missed.
            let notify = self.notify.clone();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            let mut owned = std::mem::take(batch);
            let (store, channel, from) = (self.store.clone(), self.channel.clone(), self.next);
            let (owned, info) = tokio::task::spawn_blocking(move || {
                let info = store.read_with(&channel, from, max, |seq, bytes| {
                    owned.push(seq, bytes, decode(bytes));
                });
                (owned, info)
            })
            .await
            .map_err(|e| ChannelError::Task {
                path: self.store.path().to_path_buf(),
                action: format!("read channel `{}`", self.channel),
                message: e.to_string(),
            })?;
            *batch = owned;
            let info = info?;
            if info.skipped > 0 {
                tracing::warn!(
                    channel = %self.channel,
                    reader = %self.reader,
                    cursor = from,
                    oldest = info.start,
                    skipped = info.skipped,
                    "the reader fell behind the channel's retention: its records {from} to {} were removed before it read them; skipping to the oldest record retained",
                    info.start - 1
                );
                self.skipped.fetch_add(info.skipped, Relaxed);
                self.skipped_unreported += info.skipped;
            }
            self.next = info.next;
            if info.records > 0 || self.skipped_unreported > 0 {
                // An empty batch after a skip still moves the cursor.
                let ack = ChannelAck {
                    next: self.next,
                    skipped: std::mem::take(&mut self.skipped_unreported),
                };
                return Ok(Read::Batch(ack));
            }
            if !self.options.follow || writers_done {
                return Ok(Read::End);
            }
            if waited {
                return Ok(Read::Idle);
            }
            let _ = tokio::time::timeout(self.options.poll, notified).await;
            waited = true;
        }
    }
}

/// Reads a channel from a reader's cursor, decoding each record (one JSON
/// value) into the flow's input type.
///
/// - A record's position is its sequence number; a record that does not
///   decode becomes a [`DecodeError`] with its raw bytes (counted, logged
///   and dead-lettered by the runtime, while the flow goes on).
/// - The acknowledgement of a batch is the sequence number after it; the
///   [`ChannelAcker`] commits it as the reader's cursor, durably, only once
///   the runtime has acknowledged the batch. A restart resumes there.
/// - At the end of the channel a read waits up to the poll interval for an
///   append (woken at once by appends in this process), then reports
///   [`Read::Idle`], so a shutdown stays prompt; with
///   [`LoadSource::follow`]`(false)` the run ends there instead.
/// - A reader whose cursor fell behind the channel's retention skips to
///   the oldest retained record; the records it missed are logged as a
///   warning and counted ([`LoadSource::skipped`], and `skipped` in the
///   store's statistics).
///
/// `Box<serde_json::value::RawValue>` is a fine item type: records are
/// checked to be JSON and kept as text.
pub struct LoadSource<T> {
    core: LoadCore,
    decode: DecodeFn<T>,
}

impl<T> std::fmt::Debug for LoadSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSource")
            .field("channel", &self.core.channel)
            .field("reader", &self.core.reader)
            .field("next", &self.core.next)
            .field("options", &self.core.options)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> LoadSource<T> {
    /// Reads `channel` of `store` as `reader`, from its cursor (a new reader
    /// starts at the oldest record retained), following new appends.
    ///
    /// Fails if the names are invalid, or if this reader is already reading
    /// this channel in this process ([`ChannelError::ReaderBusy`]).
    pub fn open(store: &ChannelStore, channel: &str, reader: &str) -> Result<Self, ChannelError> {
        Self::open_with(store, channel, reader, LoadOptions::default())
    }

    /// Like [`LoadSource::open`], with options.
    pub fn open_with(
        store: &ChannelStore,
        channel: &str,
        reader: &str,
        options: LoadOptions,
    ) -> Result<Self, ChannelError> {
        Self::open_decoding(store, channel, reader, options, serde_decode::<T>)
    }
}

impl<T: Send + 'static> LoadSource<T> {
    /// Like [`LoadSource::open_with`], decoding each record with `decode`
    /// instead of `T`'s `Deserialize` implementation (a config-driven flow
    /// passes its first step's decoder).
    pub fn open_decoding(
        store: &ChannelStore,
        channel: &str,
        reader: &str,
        options: LoadOptions,
        decode: DecodeFn<T>,
    ) -> Result<Self, ChannelError> {
        Ok(LoadSource {
            core: LoadCore::open(store, channel, reader, options)?,
            decode,
        })
    }
}

impl<T> LoadSource<T> {
    /// Follows new appends until `writers_done` is triggered, then reads
    /// to the end of the channel and ends the run: for a loading flow whose
    /// saving flows run in the same process and end.
    pub fn follow_until(mut self, writers_done: Shutdown) -> Self {
        self.core.until = Some(writers_done);
        self
    }

    /// Whether to wait for new records at the end of the channel (default),
    /// or end the run once everything in the channel was read.
    pub fn follow(mut self, follow: bool) -> Self {
        self.core.options.follow = follow;
        self
    }

    /// How long a read waits for new records before reporting idle.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.core.options.poll = poll;
        self
    }

    /// The cursor this source resumed at.
    pub fn resumed(&self) -> Cursor {
        self.core.resumed
    }

    /// The sequence number of the next record to read.
    pub fn position(&self) -> u64 {
        self.core.next
    }

    /// A counter of the records this source skipped because retention had
    /// removed them before they were read (readable while the flow runs).
    pub fn skipped(&self) -> Arc<AtomicU64> {
        self.core.skipped.clone()
    }

    /// The channel read.
    pub fn channel(&self) -> &str {
        &self.core.channel
    }

    /// The reader name.
    pub fn reader(&self) -> &str {
        &self.core.reader
    }
}

impl<T: Send + 'static> Source for LoadSource<T> {
    type Item = T;
    type Ack = ChannelAck;
    type Acker = ChannelAcker;

    fn name(&self) -> Arc<str> {
        self.core.name.clone()
    }

    fn acker(&mut self) -> ChannelAcker {
        self.core.acker()
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<ChannelAck>, ConnectorError> {
        self.core.read(batch, max, self.decode).await
    }
}

/// Reads a channel's records as byte strings, without decoding: the
/// counterpart of [`RawSaveSink`](super::RawSaveSink). Same cursors,
/// acknowledgements and waiting as [`LoadSource`].
pub struct RawLoadSource {
    core: LoadCore,
}

impl std::fmt::Debug for RawLoadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLoadSource")
            .field("channel", &self.core.channel)
            .field("reader", &self.core.reader)
            .field("next", &self.core.next)
            .finish()
    }
}

impl RawLoadSource {
    /// Reads `channel` of `store` as `reader`, from its cursor.
    pub fn open(store: &ChannelStore, channel: &str, reader: &str) -> Result<Self, ChannelError> {
        Self::open_with(store, channel, reader, LoadOptions::default())
    }

    /// Like [`RawLoadSource::open`], with options.
    pub fn open_with(
        store: &ChannelStore,
        channel: &str,
        reader: &str,
        options: LoadOptions,
    ) -> Result<Self, ChannelError> {
        Ok(RawLoadSource {
            core: LoadCore::open(store, channel, reader, options)?,
        })
    }

    /// Whether to wait for new records at the end of the channel.
    pub fn follow(mut self, follow: bool) -> Self {
        self.core.options.follow = follow;
        self
    }

    /// The sequence number of the next record to read.
    pub fn position(&self) -> u64 {
        self.core.next
    }
}

impl Source for RawLoadSource {
    type Item = Vec<u8>;
    type Ack = ChannelAck;
    type Acker = ChannelAcker;

    fn name(&self) -> Arc<str> {
        self.core.name.clone()
    }

    fn acker(&mut self) -> ChannelAcker {
        self.core.acker()
    }

    async fn read(
        &mut self,
        batch: &mut Batch<Vec<u8>>,
        max: usize,
    ) -> Result<Read<ChannelAck>, ConnectorError> {
        self.core
            .read(batch, max, |bytes: &[u8]| Ok(bytes.to_vec()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChannelStoreOptions, RecordBatch};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_by_another_process_are_seen_by_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.redb");
        let options = ChannelStoreOptions::default().shared(true);
        let here = options.clone().open(&path).unwrap();
        // Another handle on the file, with its own wake-ups: like another process.
        let there = ChannelStore::open_separately(here.path(), options).unwrap();
        let poll = Duration::from_millis(100);
        let mut source = LoadSource::<u64>::open_with(
            &here,
            "shared",
            "follower",
            LoadOptions::default().poll_interval(poll),
        )
        .unwrap();
        let mut batch = Batch::default();
        assert_eq!(source.read(&mut batch, 10).await.unwrap(), Read::Idle);
        let mut records = RecordBatch::new();
        records.push(b"7").unwrap();
        // The append lands while the reader waits: no wake-up comes from the
        // other handle, the read after the poll interval finds it.
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            tokio::task::spawn_blocking(move || there.append("shared", &records))
                .await
                .unwrap()
                .unwrap();
        });
        let started = std::time::Instant::now();
        let read = source.read(&mut batch, 10).await.unwrap();
        append.await.unwrap();
        assert_eq!(
            read,
            Read::Batch(ChannelAck {
                next: 2,
                skipped: 0
            })
        );
        assert!(started.elapsed() >= poll, "woken without a notification?");
        let got: Vec<_> = batch
            .iter()
            .map(|(seq, _, v)| (seq, v.clone().unwrap()))
            .collect();
        assert_eq!(got, vec![(1, 7)]);
    }
}
