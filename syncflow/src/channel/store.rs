//! [`ChannelStore`]: many channels in one redb file.
//!
//! # Layout
//!
//! - `syncflow/format`: `"channels"` → format version.
//! - `syncflow/channels`: channel → `(first, next, bytes, max_records, max_age_ms)`:
//!   the oldest retained sequence number, the next one to assign, the bytes
//!   stored, and the retention (0 = no limit).
//! - `syncflow/cursors`: `(channel, reader)` → `(position, skipped)`: the
//!   next sequence number the reader has not had acknowledged, and the
//!   records it lost to retention.
//! - `syncflow/channel/<name>/chunks`: first sequence number → a **chunk**:
//!   the records of (part of) one append, each framed as a little-endian
//!   `u32` length and its bytes. One insert per chunk, not per record, is
//!   what makes appends and reads cheap (a B-tree entry per record costs
//!   more than the record's JSON).
//! - `syncflow/channel/<name>/index`: first sequence number →
//!   `(append time in ms since the epoch, records, bytes)`, so retention
//!   never reads chunks.
//!
//! The oldest retained record (`first`) is exact; a chunk is deleted once
//! all its records are below `first`, so up to one partly trimmed chunk
//! stays on disk and readers skip its trimmed records.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::Serialize;
use tokio::sync::Notify;

use super::stats::{ChannelStats, ReaderStats, StoreStats};
use super::{ChannelError, Retention, check_name};

const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("syncflow/format");
const CHANNELS: TableDefinition<&str, (u64, u64, u64, u64, u64)> =
    TableDefinition::new("syncflow/channels");
const CURSORS: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("syncflow/cursors");
const FORMAT_KEY: &str = "channels";
const FORMAT_VERSION: u64 = 1;

/// A chunk is closed once it holds this many bytes...
const CHUNK_BYTES: usize = 256 * 1024;
/// ...or this many records.
const CHUNK_RECORDS: usize = 4096;
/// Chunks deleted by retention in one write transaction at most, so an
/// append never turns into a long trim; the rest goes with later appends.
const TRIM_BUDGET: usize = 256;
/// Memory redb may use for its page cache, by default.
const DEFAULT_CACHE: usize = 64 * 1024 * 1024;

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Store files open in this process: opening one again shares it.
static OPEN: Mutex<Vec<(PathBuf, Weak<Inner>)>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Many durable channels in one embedded database file.
///
/// Cheap to clone (an `Arc`), `Send + Sync`. Opening the same path twice in
/// one process returns the same store, so every saver and loader of a
/// channel shares its wake-ups. The methods **block** (disk I/O, fsync on
/// every write): from async code, call them inside
/// [`tokio::task::spawn_blocking`], as [`SaveSink`](super::SaveSink) and
/// [`LoadSource`](super::LoadSource) do.
///
/// ```
/// use syncflow::channel::{ChannelStore, RecordBatch, RecordBuffer};
///
/// # fn main() -> Result<(), syncflow::channel::ChannelError> {
/// # let dir = tempfile::tempdir().unwrap();
/// let store = ChannelStore::open(dir.path().join("channels.redb"))?;
/// let mut batch = RecordBatch::new();
/// batch.push_json(&serde_json::json!({"id": 1})).unwrap();
/// batch.push(br#"{"id":2}"#)?;
/// let appended = store.append("orders", &batch)?; // one transaction, durable
/// assert_eq!(appended.seqs, 1..3);
///
/// let mut buf = RecordBuffer::new();
/// store.read("orders", 1, 100, &mut buf)?;
/// let got: Vec<_> = buf.iter().map(|(seq, bytes)| (seq, bytes.to_vec())).collect();
/// assert_eq!(got, vec![(1, br#"{"id":1}"#.to_vec()), (2, br#"{"id":2}"#.to_vec())]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChannelStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: redb::Database,
    path: PathBuf,
    shared: bool,
    clock: Clock,
    notify: Mutex<HashMap<String, Arc<Notify>>>,
    readers: Mutex<HashSet<(String, String)>>,
}

impl std::fmt::Debug for ChannelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelStore")
            .field("path", &self.inner.path)
            .field("shared", &self.inner.shared)
            .finish()
    }
}

/// How to open a [`ChannelStore`]: [`ChannelStore::options`].
#[derive(Clone)]
pub struct ChannelStoreOptions {
    shared: bool,
    cache_bytes: usize,
    clock: Option<Clock>,
}

impl std::fmt::Debug for ChannelStoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelStoreOptions")
            .field("shared", &self.shared)
            .field("cache_bytes", &self.cache_bytes)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Default for ChannelStoreOptions {
    fn default() -> Self {
        ChannelStoreOptions {
            shared: false,
            cache_bytes: DEFAULT_CACHE,
            clock: None,
        }
    }
}

impl ChannelStoreOptions {
    /// Lets several processes open the file at once (redb's multi-writer
    /// mode, on Linux, macOS and Windows): one process saves while another
    /// loads, and a loader sees another process's appends at its next poll.
    /// Every process must open the file in this mode. Commits are slower
    /// (each takes a file lock and re-reads the database header). Off by
    /// default: then a second process gets [`ChannelError::InUse`].
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Memory redb may use to cache pages (default 64 MiB).
    pub fn cache_size(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// The clock that stamps appends and ages records for retention (tests).
    pub fn clock(mut self, now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Some(Arc::new(now));
        self
    }

    /// Opens (or creates) the store file. Within one process, a path that
    /// is already open returns the store already open (and these options
    /// are ignored).
    pub fn open(self, path: impl AsRef<Path>) -> Result<ChannelStore, ChannelError> {
        let path = resolve(path.as_ref())?;
        let mut open = lock(&OPEN);
        open.retain(|(_, weak)| weak.strong_count() > 0);
        if let Some(inner) = open
            .iter()
            .find(|(p, _)| *p == path)
            .and_then(|(_, weak)| weak.upgrade())
        {
            return Ok(ChannelStore { inner });
        }
        let inner = Arc::new(Inner::open(path.clone(), self)?);
        open.push((path, Arc::downgrade(&inner)));
        Ok(ChannelStore { inner })
    }
}

/// The absolute path of the store, its directory resolved through symlinks
/// (so that two spellings of one file share one store).
fn resolve(path: &Path) -> Result<PathBuf, ChannelError> {
    let fail = |problem: String, hint| ChannelError::Path {
        path: path.to_path_buf(),
        problem,
        hint,
    };
    let Some(name) = path.file_name() else {
        return Err(fail(
            "the path does not name a file".into(),
            "give a file path such as `state/channels.redb`",
        ));
    };
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.canonicalize().map_err(|e| {
        fail(
            format!("its directory `{}` is not usable ({e})", parent.display()),
            "create the directory first, or choose another path",
        )
    })?;
    Ok(dir.join(name))
}

impl Inner {
    fn open(path: PathBuf, options: ChannelStoreOptions) -> Result<Self, ChannelError> {
        if path.is_dir() {
            return Err(ChannelError::Path {
                path,
                problem: "is a directory".into(),
                hint: "give a file path inside it, such as `channels.redb`",
            });
        }
        let mut builder = redb::Builder::new();
        builder.set_cache_size(options.cache_bytes);
        if options.shared {
            builder.set_concurrency_mode(redb::ConcurrencyMode::MultiWriter);
        }
        let db = builder.create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => ChannelError::InUse { path: path.clone() },
            redb::DatabaseError::LockProtocolMismatch => ChannelError::Open {
                path: path.clone(),
                source: Box::new(e.into()),
                hint: "another process opened it with another version of syncflow or redb: use the same version everywhere",
            },
            redb::DatabaseError::UpgradeRequired(_) => ChannelError::Open {
                path: path.clone(),
                source: Box::new(e.into()),
                hint: "it was written by an older redb; export its channels with the syncflow version that wrote it",
            },
            e => ChannelError::Open {
                path: path.clone(),
                source: Box::new(e.into()),
                hint: "the file must be a syncflow channel store (a redb database): choose another path, or move a damaged file away",
            },
        })?;
        let inner = Inner {
            db,
            path,
            shared: options.shared,
            clock: options.clock.unwrap_or_else(|| Arc::new(SystemTime::now)),
            notify: Mutex::new(HashMap::new()),
            readers: Mutex::new(HashSet::new()),
        };
        inner.check_format()?;
        Ok(inner)
    }

    fn storage(&self, action: impl FnOnce() -> String) -> impl FnOnce(redb::Error) -> ChannelError {
        move |source| ChannelError::Storage {
            path: self.path.clone(),
            action: action(),
            source: Box::new(source),
        }
    }

    fn corrupt(&self, channel: &str, problem: String) -> ChannelError {
        ChannelError::Corrupt {
            path: self.path.clone(),
            channel: channel.to_string(),
            problem,
        }
    }

    fn now_ms(&self) -> u64 {
        let now = (self.clock)();
        now.duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Runs `f` in a write transaction and commits it (durably).
    fn write<T>(
        &self,
        action: &dyn Fn() -> String,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, ChannelError>,
    ) -> Result<T, ChannelError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.storage(action)(e.into()))?;
        let out = f(&tx)?;
        tx.commit().map_err(|e| self.storage(action)(e.into()))?;
        Ok(out)
    }

    /// Like [`Inner::write`], but `f` says whether to commit: a transaction
    /// that changed nothing is aborted (no fsync).
    fn write_if<T>(
        &self,
        action: &dyn Fn() -> String,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(T, bool), ChannelError>,
    ) -> Result<T, ChannelError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.storage(action)(e.into()))?;
        let (out, changed) = f(&tx)?;
        if changed {
            tx.commit().map_err(|e| self.storage(action)(e.into()))?;
        } else {
            tx.abort().map_err(|e| self.storage(action)(e.into()))?;
        }
        Ok(out)
    }

    fn check_format(&self) -> Result<(), ChannelError> {
        let action = || "check the format".to_string();
        self.write(&action, |tx| {
            let foreign = tx
                .list_tables()
                .map_err(|e| self.storage(action)(e.into()))?
                .any(|t| !redb::TableHandle::name(&t).starts_with("syncflow/"));
            let mut format = tx
                .open_table(FORMAT)
                .map_err(|e| self.storage(action)(e.into()))?;
            let version = format
                .get(FORMAT_KEY)
                .map_err(|e| self.storage(action)(e.into()))?
                .map(|v| v.value());
            match version {
                Some(FORMAT_VERSION) => Ok(()),
                Some(v) => Err(ChannelError::Format {
                    path: self.path.clone(),
                    problem: format!(
                        "is a channel store of format {v}, but this syncflow reads format {FORMAT_VERSION}"
                    ),
                    hint: "open it with the syncflow version that wrote it",
                }),
                None if foreign => Err(ChannelError::Format {
                    path: self.path.clone(),
                    problem: "is a redb database but not a syncflow channel store".into(),
                    hint: "choose another path for the channel store",
                }),
                None => {
                    format
                        .insert(FORMAT_KEY, FORMAT_VERSION)
                        .map_err(|e| self.storage(action)(e.into()))?;
                    Ok(())
                }
            }
        })
    }
}

/// The stored state of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    first: u64,
    next: u64,
    bytes: u64,
    retention: Retention,
}

impl Meta {
    const NEW: Meta = Meta {
        first: 1,
        next: 1,
        bytes: 0,
        retention: Retention::UNLIMITED,
    };

    fn decode((first, next, bytes, max_records, max_age): (u64, u64, u64, u64, u64)) -> Self {
        Meta {
            first,
            next,
            bytes,
            retention: Retention::decode(max_records, max_age),
        }
    }

    fn encode(&self) -> (u64, u64, u64, u64, u64) {
        let (max_records, max_age) = self.retention.encode();
        (self.first, self.next, self.bytes, max_records, max_age)
    }
}

fn chunks_table(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

fn index_table(name: &str) -> TableDefinition<'_, u64, (u64, u64, u64)> {
    TableDefinition::new(name)
}

fn table_names(channel: &str) -> (String, String) {
    (
        format!("syncflow/channel/{channel}/chunks"),
        format!("syncflow/channel/{channel}/index"),
    )
}

/// A reader's stored position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence number of the next record not yet acknowledged.
    pub position: u64,
    /// Records this reader lost to retention (its cursor had fallen behind
    /// the oldest retained record), over its lifetime.
    pub skipped: u64,
}

/// Where a reader without a cursor starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartAt {
    /// At the oldest record retained: it gets everything still in the channel.
    #[default]
    Oldest,
    /// After the last record: it gets only records appended from now on.
    Latest,
}

/// What [`ChannelStore::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendInfo {
    /// The sequence numbers given to the records, in order.
    pub seqs: Range<u64>,
    /// Records removed by the channel's retention in the same transaction.
    pub trimmed: u64,
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadInfo {
    /// The sequence number reading started at (`from`, or the oldest
    /// retained record if `from` was older).
    pub start: u64,
    /// The sequence number after the last record delivered: where the next
    /// read continues (`start` when nothing was delivered).
    pub next: u64,
    /// Records between `from` and `start` that retention had removed.
    pub skipped: u64,
    /// Records delivered.
    pub records: usize,
    /// The channel's next sequence number at the time of the read.
    pub end: u64,
}

/// Records to append, encoded into one reusable buffer.
///
/// The buffer is laid out as the store keeps records (each a 4-byte length
/// and its bytes), so an append copies it into the database once.
#[derive(Debug, Default, Clone)]
pub struct RecordBatch {
    data: Vec<u8>,
    /// The offset just after each record in `data`.
    ends: Vec<usize>,
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a record.
    pub fn push(&mut self, record: &[u8]) -> Result<(), ChannelError> {
        let len = u32::try_from(record.len())
            .map_err(|_| ChannelError::RecordTooLarge { len: record.len() })?;
        self.data.extend_from_slice(&len.to_le_bytes());
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
        Ok(())
    }

    /// Adds a record holding `value` encoded as JSON. On an error, the batch
    /// is left as it was.
    pub fn push_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), serde_json::Error> {
        let start = self.data.len();
        self.data.extend_from_slice(&[0; 4]);
        if let Err(e) = serde_json::to_writer(&mut self.data, value) {
            self.data.truncate(start);
            return Err(e);
        }
        let len = self.data.len() - start - 4;
        let Ok(len32) = u32::try_from(len) else {
            self.data.truncate(start);
            return Err(serde::ser::Error::custom(format!(
                "the encoded record is {len} bytes, more than a channel record can hold (4 GiB - 1)"
            )));
        };
        self.data[start..start + 4].copy_from_slice(&len32.to_le_bytes());
        self.ends.push(self.data.len());
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held (with 4 bytes of framing per record).
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Removes every record, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// The records, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let record = self.data.get(start + 4..end).unwrap_or(&[]);
            start = end;
            record
        })
    }

    /// Splits the batch into chunks: `(byte range, records)`.
    fn chunks(&self) -> impl Iterator<Item = (Range<usize>, u64)> + '_ {
        let mut from = 0usize;
        let mut index = 0usize;
        std::iter::from_fn(move || {
            let start_index = index;
            let start = from;
            while index < self.ends.len() {
                let end = self.ends[index];
                index += 1;
                if end - start >= CHUNK_BYTES || index - start_index >= CHUNK_RECORDS {
                    break;
                }
            }
            if index == start_index {
                return None;
            }
            from = self.ends[index - 1];
            Some((start..from, (index - start_index) as u64))
        })
    }
}

/// Records read from a channel, in one reusable buffer.
#[derive(Debug, Default, Clone)]
pub struct RecordBuffer {
    data: Vec<u8>,
    records: Vec<(u64, Range<usize>)>,
}

impl RecordBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the buffer holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes every record, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.records.clear();
    }

    /// The records: sequence number and bytes.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.records
            .iter()
            .map(|(seq, r)| (*seq, self.data.get(r.clone()).unwrap_or(&[])))
    }
}

/// Walks the framed records of a chunk: `(index in chunk, bytes)`, or the
/// offset at which the framing is broken.
fn walk_chunk(chunk: &[u8]) -> impl Iterator<Item = Result<&[u8], usize>> + '_ {
    let mut offset = 0usize;
    std::iter::from_fn(move || {
        if offset >= chunk.len() {
            return None;
        }
        let record = chunk
            .get(offset..offset + 4)
            .and_then(|len| {
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                chunk.get(offset + 4..offset + 4 + len)
            })
            .ok_or(offset);
        match record {
            Ok(bytes) => offset += 4 + bytes.len(),
            Err(_) => offset = chunk.len(),
        }
        Some(record)
    })
}

/// Releases a reader name when the source and its acker are gone.
pub(crate) struct ReaderLease {
    store: ChannelStore,
    key: (String, String),
}

impl Drop for ReaderLease {
    fn drop(&mut self) {
        lock(&self.store.inner.readers).remove(&self.key);
    }
}

impl ChannelStore {
    /// Opens (or creates) a store file for this process alone, with the
    /// default options. See [`ChannelStore::options`] for the others.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ChannelError> {
        ChannelStoreOptions::default().open(path)
    }

    /// Options to open a store with: `ChannelStore::options().shared(true).open(path)`.
    pub fn options() -> ChannelStoreOptions {
        ChannelStoreOptions::default()
    }

    /// The store file (absolute).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether several processes may have the file open ([`ChannelStoreOptions::shared`]).
    pub fn is_shared(&self) -> bool {
        self.inner.shared
    }

    /// A second, independent handle on the file (as another process would
    /// have): for tests of the shared mode.
    #[cfg(test)]
    pub(crate) fn open_separately(
        path: &Path,
        options: ChannelStoreOptions,
    ) -> Result<Self, ChannelError> {
        Ok(ChannelStore {
            inner: Arc::new(Inner::open(path.to_path_buf(), options)?),
        })
    }

    /// The wake-up of a channel: notified after every append in this process.
    pub(crate) fn notifier(&self, channel: &str) -> Arc<Notify> {
        let mut map = lock(&self.inner.notify);
        if let Some(n) = map.get(channel) {
            return n.clone();
        }
        let n = Arc::new(Notify::new());
        map.insert(channel.to_string(), n.clone());
        n
    }

    /// Claims a reader name in this process.
    pub(crate) fn lease_reader(
        &self,
        channel: &str,
        reader: &str,
    ) -> Result<ReaderLease, ChannelError> {
        let key = (channel.to_string(), reader.to_string());
        if !lock(&self.inner.readers).insert(key.clone()) {
            return Err(ChannelError::ReaderBusy {
                path: self.inner.path.clone(),
                channel: key.0,
                reader: key.1,
            });
        }
        Ok(ReaderLease {
            store: self.clone(),
            key,
        })
    }

    fn meta_in<T: ReadableTable<&'static str, (u64, u64, u64, u64, u64)>>(
        &self,
        table: &T,
        channel: &str,
        action: &dyn Fn() -> String,
    ) -> Result<Option<Meta>, ChannelError> {
        Ok(table
            .get(channel)
            .map_err(|e| self.inner.storage(action)(e.into()))?
            .map(|v| Meta::decode(v.value())))
    }

    /// Appends the records of `batch` to `channel` (created if missing), in
    /// one write transaction: when this returns, they are durable. Applies
    /// the channel's retention in the same transaction, and wakes the
    /// readers waiting in this process. An empty batch writes nothing.
    pub fn append(&self, channel: &str, batch: &RecordBatch) -> Result<AppendInfo, ChannelError> {
        check_name("channel", channel)?;
        if batch.is_empty() {
            let next = self.channel_meta(channel)?.map_or(1, |m| m.next);
            return Ok(AppendInfo {
                seqs: next..next,
                trimmed: 0,
            });
        }
        let inner = &self.inner;
        let action = || format!("append to channel `{channel}`");
        let now = inner.now_ms();
        let (chunks_name, index_name) = table_names(channel);
        let info = inner.write(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
            let mut meta = self
                .meta_in(&channels, channel, &action)?
                .unwrap_or(Meta::NEW);
            let mut chunks = tx
                .open_table(chunks_table(&chunks_name))
                .map_err(|e| st(e.into()))?;
            let mut index = tx
                .open_table(index_table(&index_name))
                .map_err(|e| st(e.into()))?;
            let first = meta.next;
            for (bytes, records) in batch.chunks() {
                let data = &batch.data[bytes.clone()];
                chunks.insert(meta.next, data).map_err(|e| st(e.into()))?;
                index
                    .insert(meta.next, (now, records, data.len() as u64))
                    .map_err(|e| st(e.into()))?;
                meta.next += records;
                meta.bytes += data.len() as u64;
            }
            let seqs = first..meta.next;
            let (trimmed, _) = trim_in(
                inner,
                channel,
                &mut meta,
                &mut chunks,
                &mut index,
                now,
                TRIM_BUDGET,
            )?;
            channels
                .insert(channel, meta.encode())
                .map_err(|e| st(e.into()))?;
            Ok(AppendInfo { seqs, trimmed })
        })?;
        self.notifier(channel).notify_waiters();
        Ok(info)
    }

    /// Reads up to `max` records of `channel` from sequence number `from`
    /// into `buf` (cleared first). A channel that does not exist reads as
    /// empty. If retention removed records at or after `from`, reading
    /// starts at the oldest retained record and [`ReadInfo::skipped`] says
    /// how many were missed.
    pub fn read(
        &self,
        channel: &str,
        from: u64,
        max: usize,
        buf: &mut RecordBuffer,
    ) -> Result<ReadInfo, ChannelError> {
        buf.clear();
        let RecordBuffer { data, records } = buf;
        self.read_with(channel, from, max, |seq, bytes| {
            let start = data.len();
            data.extend_from_slice(bytes);
            records.push((seq, start..data.len()));
        })
    }

    /// Like [`ChannelStore::read`], but hands each record to `each` (its
    /// sequence number and bytes, borrowed from the database page: no copy).
    pub fn read_with(
        &self,
        channel: &str,
        from: u64,
        max: usize,
        mut each: impl FnMut(u64, &[u8]),
    ) -> Result<ReadInfo, ChannelError> {
        check_name("channel", channel)?;
        let inner = &self.inner;
        let action = || format!("read channel `{channel}`");
        let st = |e: redb::Error| inner.storage(action)(e);
        let from = from.max(1);
        let tx = inner.db.begin_read().map_err(|e| st(e.into()))?;
        let meta = match tx.open_table(CHANNELS) {
            Ok(channels) => self.meta_in(&channels, channel, &action)?,
            Err(TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(st(e.into())),
        }
        .unwrap_or(Meta::NEW);
        let start = from.max(meta.first);
        let mut info = ReadInfo {
            start,
            next: start,
            skipped: start - from,
            records: 0,
            end: meta.next,
        };
        if start >= meta.next || max == 0 {
            return Ok(info);
        }
        let (chunks_name, _) = table_names(channel);
        let chunks = tx
            .open_table(chunks_table(&chunks_name))
            .map_err(|e| st(e.into()))?;
        let holder = chunks
            .range(..=start)
            .map_err(|e| st(e.into()))?
            .next_back()
            .transpose()
            .map_err(|e| st(e.into()))?
            .map(|(k, _)| k.value());
        let Some(mut seq) = holder else {
            return Err(inner.corrupt(channel, format!("no chunk holds record {start}")));
        };
        'chunks: for entry in chunks.range(seq..).map_err(|e| st(e.into()))? {
            let (key, chunk) = entry.map_err(|e| st(e.into()))?;
            if key.value() != seq {
                return Err(inner.corrupt(
                    channel,
                    format!("records {seq} to {} are missing", key.value() - 1),
                ));
            }
            for record in walk_chunk(chunk.value()) {
                let bytes = record.map_err(|offset| {
                    inner.corrupt(
                        channel,
                        format!(
                            "the chunk starting at record {} has a broken record frame at byte {offset}",
                            key.value()
                        ),
                    )
                })?;
                if seq >= start {
                    each(seq, bytes);
                    info.records += 1;
                }
                seq += 1;
                if info.records == max || seq >= meta.next {
                    break 'chunks;
                }
            }
        }
        info.next = seq.max(start);
        if info.next < meta.next && info.records < max {
            return Err(inner.corrupt(
                channel,
                format!("records {} to {} are missing", info.next, meta.next - 1),
            ));
        }
        Ok(info)
    }

    /// The stored cursor of `reader` on `channel`, if it has one.
    pub fn cursor(&self, channel: &str, reader: &str) -> Result<Option<Cursor>, ChannelError> {
        check_name("channel", channel)?;
        check_name("reader", reader)?;
        let inner = &self.inner;
        let action = || format!("read the cursor of reader `{reader}` on channel `{channel}`");
        let st = |e: redb::Error| inner.storage(action)(e);
        let tx = inner.db.begin_read().map_err(|e| st(e.into()))?;
        let cursors = match tx.open_table(CURSORS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(st(e.into())),
        };
        Ok(cursors
            .get((channel, reader))
            .map_err(|e| st(e.into()))?
            .map(|v| {
                let (position, skipped) = v.value();
                Cursor { position, skipped }
            }))
    }

    /// Returns the cursor of `reader` on `channel`, creating it (and the
    /// channel) if missing, at the oldest retained record or at the end.
    pub fn register_reader(
        &self,
        channel: &str,
        reader: &str,
        start: StartAt,
    ) -> Result<Cursor, ChannelError> {
        check_name("channel", channel)?;
        check_name("reader", reader)?;
        let inner = &self.inner;
        let action = || format!("register reader `{reader}` on channel `{channel}`");
        inner.write_if(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
            let (meta, created) = match self.meta_in(&channels, channel, &action)? {
                Some(meta) => (meta, false),
                None => {
                    channels
                        .insert(channel, Meta::NEW.encode())
                        .map_err(|e| st(e.into()))?;
                    (Meta::NEW, true)
                }
            };
            let mut cursors = tx.open_table(CURSORS).map_err(|e| st(e.into()))?;
            let existing = cursors
                .get((channel, reader))
                .map_err(|e| st(e.into()))?
                .map(|v| v.value());
            if let Some((position, skipped)) = existing {
                if position > meta.next {
                    return Err(inner.corrupt(
                        channel,
                        format!(
                            "the cursor of reader `{reader}` is at record {position}, after the channel's end ({})",
                            meta.next
                        ),
                    ));
                }
                return Ok((Cursor { position, skipped }, created));
            }
            let position = match start {
                StartAt::Oldest => meta.first,
                StartAt::Latest => meta.next,
            };
            cursors
                .insert((channel, reader), (position, 0))
                .map_err(|e| st(e.into()))?;
            Ok((
                Cursor {
                    position,
                    skipped: 0,
                },
                true,
            ))
        })
    }

    /// Stores the cursor of `reader` on `channel`, durably. Used by the
    /// acker of a [`LoadSource`](super::LoadSource) after each acknowledged
    /// batch; also a way to rewind or skip a reader (while it is stopped).
    pub fn commit_cursor(
        &self,
        channel: &str,
        reader: &str,
        cursor: Cursor,
    ) -> Result<(), ChannelError> {
        check_name("channel", channel)?;
        check_name("reader", reader)?;
        let inner = &self.inner;
        let action = || format!("commit the cursor of reader `{reader}` on channel `{channel}`");
        inner.write(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut cursors = tx.open_table(CURSORS).map_err(|e| st(e.into()))?;
            cursors
                .insert((channel, reader), (cursor.position, cursor.skipped))
                .map_err(|e| st(e.into()))?;
            Ok(())
        })
    }

    /// Removes the cursor of `reader` on `channel`; returns whether it existed.
    pub fn remove_reader(&self, channel: &str, reader: &str) -> Result<bool, ChannelError> {
        check_name("channel", channel)?;
        check_name("reader", reader)?;
        let inner = &self.inner;
        let action = || format!("remove reader `{reader}` of channel `{channel}`");
        inner.write(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut cursors = tx.open_table(CURSORS).map_err(|e| st(e.into()))?;
            let removed = cursors
                .remove((channel, reader))
                .map_err(|e| st(e.into()))?
                .is_some();
            Ok(removed)
        })
    }

    /// Creates `channel` if it does not exist (appends and readers create it
    /// too); returns whether it was created.
    pub fn create_channel(&self, channel: &str) -> Result<bool, ChannelError> {
        check_name("channel", channel)?;
        let inner = &self.inner;
        let action = || format!("create channel `{channel}`");
        inner.write_if(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
            if self.meta_in(&channels, channel, &action)?.is_some() {
                return Ok((false, false));
            }
            channels
                .insert(channel, Meta::NEW.encode())
                .map_err(|e| st(e.into()))?;
            Ok((true, true))
        })
    }

    /// Sets the retention of `channel` (created if missing) and applies it now.
    pub fn set_retention(&self, channel: &str, retention: Retention) -> Result<(), ChannelError> {
        check_name("channel", channel)?;
        retention.check(channel)?;
        let inner = &self.inner;
        let action = || format!("set the retention of channel `{channel}`");
        inner.write(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
            let mut meta = self
                .meta_in(&channels, channel, &action)?
                .unwrap_or(Meta::NEW);
            meta.retention = retention;
            channels
                .insert(channel, meta.encode())
                .map_err(|e| st(e.into()))?;
            Ok(())
        })?;
        self.trim(channel)?;
        Ok(())
    }

    /// Applies the retention of `channel` now (appends do it too); returns
    /// the records removed. Runs in transactions of bounded size, so
    /// appends are never held up for long. Call it periodically for
    /// channels with an age limit that are rarely appended to.
    pub fn trim(&self, channel: &str) -> Result<u64, ChannelError> {
        check_name("channel", channel)?;
        let inner = &self.inner;
        let action = || format!("trim channel `{channel}`");
        let (chunks_name, index_name) = table_names(channel);
        let mut total = 0;
        loop {
            let now = inner.now_ms();
            let (removed, done) = inner.write_if(&action, |tx| {
                let st = |e: redb::Error| inner.storage(action)(e);
                let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
                let Some(mut meta) = self.meta_in(&channels, channel, &action)? else {
                    return Ok(((0, true), false));
                };
                let mut chunks = tx
                    .open_table(chunks_table(&chunks_name))
                    .map_err(|e| st(e.into()))?;
                let mut index = tx
                    .open_table(index_table(&index_name))
                    .map_err(|e| st(e.into()))?;
                let before = meta;
                let out = trim_in(
                    inner,
                    channel,
                    &mut meta,
                    &mut chunks,
                    &mut index,
                    now,
                    TRIM_BUDGET,
                )?;
                let changed = meta != before;
                if changed {
                    channels
                        .insert(channel, meta.encode())
                        .map_err(|e| st(e.into()))?;
                }
                // Deleting a chunk lowers `meta.bytes`: an unchanged `meta`
                // means nothing was deleted either, and nothing to commit.
                Ok((out, changed))
            })?;
            total += removed;
            if done {
                return Ok(total);
            }
        }
    }

    /// Applies the retention of every channel; returns the records removed.
    pub fn trim_all(&self) -> Result<u64, ChannelError> {
        let mut total = 0;
        for channel in self.channels()? {
            total += self.trim(&channel)?;
        }
        Ok(total)
    }

    /// Applies every channel's retention now and then every `interval`, in
    /// a background task (on the current tokio runtime), until the returned
    /// handle is aborted. For channels with an age limit that may go long
    /// without appends (appends trim as they go). Failures are logged as
    /// warnings and retried at the next interval.
    pub fn trim_every(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let each = store.clone();
                match tokio::task::spawn_blocking(move || each.trim_all()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => {
                        tracing::debug!(store = %store.path().display(), removed, "retention removed old records")
                    }
                    Ok(Err(error)) => tracing::warn!(%error, "periodic trim failed"),
                    Err(error) => tracing::warn!(%error, "periodic trim task failed"),
                }
            }
        })
    }

    /// The names of the channels, sorted.
    pub fn channels(&self) -> Result<Vec<String>, ChannelError> {
        let inner = &self.inner;
        let action = || "list the channels".to_string();
        let st = |e: redb::Error| inner.storage(action)(e);
        let tx = inner.db.begin_read().map_err(|e| st(e.into()))?;
        let channels = match tx.open_table(CHANNELS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(st(e.into())),
        };
        let mut names = Vec::new();
        for entry in channels.range::<&str>(..).map_err(|e| st(e.into()))? {
            let (name, _) = entry.map_err(|e| st(e.into()))?;
            names.push(name.value().to_string());
        }
        Ok(names)
    }

    /// Deletes a channel: its records, retention and reader cursors.
    /// Returns whether it existed. Stop its savers and loaders first.
    pub fn delete_channel(&self, channel: &str) -> Result<bool, ChannelError> {
        check_name("channel", channel)?;
        let inner = &self.inner;
        let action = || format!("delete channel `{channel}`");
        let (chunks_name, index_name) = table_names(channel);
        inner.write(&action, |tx| {
            let st = |e: redb::Error| inner.storage(action)(e);
            let mut channels = tx.open_table(CHANNELS).map_err(|e| st(e.into()))?;
            let existed = channels
                .remove(channel)
                .map_err(|e| st(e.into()))?
                .is_some();
            tx.delete_table(chunks_table(&chunks_name))
                .map_err(|e| st(e.into()))?;
            tx.delete_table(index_table(&index_name))
                .map_err(|e| st(e.into()))?;
            let mut cursors = tx.open_table(CURSORS).map_err(|e| st(e.into()))?;
            let mut readers = Vec::new();
            for entry in cursors.range((channel, "")..).map_err(|e| st(e.into()))? {
                let (key, _) = entry.map_err(|e| st(e.into()))?;
                let (c, r) = key.value();
                if c != channel {
                    break;
                }
                readers.push(r.to_string());
            }
            for r in &readers {
                cursors
                    .remove((channel, r.as_str()))
                    .map_err(|e| st(e.into()))?;
            }
            Ok(existed)
        })
    }

    fn channel_meta(&self, channel: &str) -> Result<Option<Meta>, ChannelError> {
        let inner = &self.inner;
        let action = || format!("read channel `{channel}`");
        let st = |e: redb::Error| inner.storage(action)(e);
        let tx = inner.db.begin_read().map_err(|e| st(e.into()))?;
        match tx.open_table(CHANNELS) {
            Ok(channels) => self.meta_in(&channels, channel, &action),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(st(e.into())),
        }
    }

    /// The retention of `channel` (`None` if the channel does not exist).
    pub fn retention(&self, channel: &str) -> Result<Option<Retention>, ChannelError> {
        check_name("channel", channel)?;
        Ok(self.channel_meta(channel)?.map(|m| m.retention))
    }

    /// Every channel with its readers: length, sequence numbers, bytes,
    /// and each reader's position and lag. One consistent snapshot.
    pub fn stats(&self) -> Result<StoreStats, ChannelError> {
        self.stats_of(None)
    }

    /// The statistics of one channel (`None` if it does not exist).
    pub fn channel_stats(&self, channel: &str) -> Result<Option<ChannelStats>, ChannelError> {
        check_name("channel", channel)?;
        Ok(self.stats_of(Some(channel))?.channels.pop())
    }

    fn stats_of(&self, only: Option<&str>) -> Result<StoreStats, ChannelError> {
        let inner = &self.inner;
        let action = || "read the statistics".to_string();
        let st = |e: redb::Error| inner.storage(action)(e);
        let mut stats = StoreStats {
            path: inner.path.clone(),
            channels: Vec::new(),
        };
        let tx = inner.db.begin_read().map_err(|e| st(e.into()))?;
        let channels = match tx.open_table(CHANNELS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(stats),
            Err(e) => return Err(st(e.into())),
        };
        let mut by_name = Vec::new();
        for entry in channels.range::<&str>(..).map_err(|e| st(e.into()))? {
            let (name, meta) = entry.map_err(|e| st(e.into()))?;
            let name = name.value();
            if only.is_some_and(|o| o != name) {
                continue;
            }
            by_name.push((name.to_string(), Meta::decode(meta.value())));
        }
        let mut readers: HashMap<String, Vec<ReaderStats>> = HashMap::new();
        match tx.open_table(CURSORS) {
            Ok(cursors) => {
                for entry in cursors
                    .range::<(&str, &str)>(..)
                    .map_err(|e| st(e.into()))?
                {
                    let (key, value) = entry.map_err(|e| st(e.into()))?;
                    let (channel, reader) = key.value();
                    let (position, skipped) = value.value();
                    readers
                        .entry(channel.to_string())
                        .or_default()
                        .push(ReaderStats {
                            name: reader.to_string(),
                            position,
                            lag: 0,
                            skipped,
                        });
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(st(e.into())),
        }
        for (name, meta) in by_name {
            let mut reader_stats = readers.remove(&name).unwrap_or_default();
            for r in &mut reader_stats {
                // A cursor behind `first` will skip to it: its lag is what
                // it can still read.
                r.lag = meta.next.saturating_sub(r.position.max(meta.first));
            }
            stats.channels.push(ChannelStats {
                name,
                length: meta.next - meta.first,
                first: meta.first,
                next: meta.next,
                bytes: meta.bytes,
                retention: meta.retention,
                readers: reader_stats,
            });
        }
        Ok(stats)
    }
}

/// Applies the retention of a channel inside a write transaction: moves
/// `meta.first` up to the oldest record to keep and deletes up to `budget`
/// chunks that lie wholly before it. Returns (records removed from the
/// channel, whether every removable chunk was deleted).
#[allow(clippy::too_many_arguments)]
fn trim_in(
    inner: &Inner,
    channel: &str,
    meta: &mut Meta,
    chunks: &mut redb::Table<u64, &'static [u8]>,
    index: &mut redb::Table<u64, (u64, u64, u64)>,
    now_ms: u64,
    budget: usize,
) -> Result<(u64, bool), ChannelError> {
    let action = || format!("apply the retention of channel `{channel}`");
    let st = |e: redb::Error| inner.storage(action)(e);
    let mut cut = meta.first;
    if let Some(n) = meta.retention.records_limit() {
        cut = cut.max(meta.next.saturating_sub(n));
    }
    if let Some(age) = meta.retention.age_limit() {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms.saturating_sub(age_ms);
        for entry in index.range::<u64>(..).map_err(|e| st(e.into()))? {
            let (key, value) = entry.map_err(|e| st(e.into()))?;
            let (appended, records, _) = value.value();
            if appended >= cutoff {
                break;
            }
            cut = cut.max(key.value() + records);
        }
    }
    let cut = cut.min(meta.next);
    let removed = cut.saturating_sub(meta.first);
    meta.first = meta.first.max(cut);

    let mut deleted = 0;
    loop {
        let oldest = index
            .first()
            .map_err(|e| st(e.into()))?
            .map(|(k, v)| (k.value(), v.value()));
        let Some((key, (_, records, bytes))) = oldest else {
            return Ok((removed, true));
        };
        if key + records > meta.first {
            return Ok((removed, true));
        }
        if deleted == budget {
            return Ok((removed, false));
        }
        index.remove(key).map_err(|e| st(e.into()))?;
        chunks.remove(key).map_err(|e| st(e.into()))?;
        meta.bytes = meta.bytes.saturating_sub(bytes);
        deleted += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_chunks_at_record_boundaries() {
        let mut batch = RecordBatch::new();
        let big = vec![b'x'; CHUNK_BYTES / 3];
        for _ in 0..7 {
            batch.push(&big).unwrap();
        }
        let chunks: Vec<_> = batch.chunks().collect();
        // Three records pass the byte limit: chunks of 3, 3 and 1 records.
        assert_eq!(
            chunks.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        assert_eq!(chunks[0].0.start, 0);
        assert_eq!(chunks[2].0.end, batch.bytes());
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].0.end, pair[1].0.start);
        }
        let mut small = RecordBatch::new();
        for i in 0..(CHUNK_RECORDS + 5) {
            small.push(format!("{i}").as_bytes()).unwrap();
        }
        let counts: Vec<_> = small.chunks().map(|(_, n)| n).collect();
        assert_eq!(counts, vec![CHUNK_RECORDS as u64, 5]);
    }

    #[test]
    fn broken_frames_are_reported_not_panicked_on() {
        let mut chunk = Vec::new();
        chunk.extend_from_slice(&3u32.to_le_bytes());
        chunk.extend_from_slice(b"abc");
        chunk.extend_from_slice(&10u32.to_le_bytes());
        chunk.extend_from_slice(b"short");
        let got: Vec<_> = walk_chunk(&chunk).collect();
        assert_eq!(got, vec![Ok(&b"abc"[..]), Err(7)]);
        let got: Vec<_> = walk_chunk(&[1, 0]).collect();
        assert_eq!(got, vec![Err(0)]);
    }

    #[test]
    fn push_json_failure_leaves_the_batch_unchanged() {
        use std::collections::HashMap;
        let mut batch = RecordBatch::new();
        batch.push_json(&1).unwrap();
        let bad: HashMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!(batch.push_json(&bad).is_err());
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&b"1"[..]]);
        batch.push_json("two").unwrap();
        assert_eq!(
            batch.iter().collect::<Vec<_>>(),
            vec![&b"1"[..], &b"\"two\""[..]]
        );
    }

    #[test]
    fn a_second_open_of_the_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = ChannelStore::open(&path).unwrap();
        // Bypass the in-process sharing, as another process would.
        let err = Inner::open(store.path().to_path_buf(), ChannelStoreOptions::default())
            .err()
            .unwrap();
        assert!(matches!(err, ChannelError::InUse { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&path.file_name().unwrap().to_string_lossy().to_string()),
            "{text}"
        );
        assert!(text.contains("already open in another process"), "{text}");
        assert!(text.contains("shared(true)"), "{text}");
        // In-process, the same path (spelt differently) is the same store.
        let again = ChannelStore::open(dir.path().join(".").join("c.redb")).unwrap();
        assert!(Arc::ptr_eq(&store.inner, &again.inner));
    }

    #[test]
    fn shared_stores_can_be_opened_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let store = ChannelStore::options().shared(true).open(&path).unwrap();
        let other = Inner::open(
            store.path().to_path_buf(),
            ChannelStoreOptions::default().shared(true),
        )
        .unwrap();
        let other = ChannelStore {
            inner: Arc::new(other),
        };
        let mut batch = RecordBatch::new();
        batch.push(b"1").unwrap();
        other.append("c", &batch).unwrap();
        let mut buf = RecordBuffer::new();
        store.read("c", 1, 10, &mut buf).unwrap();
        assert_eq!(buf.iter().collect::<Vec<_>>(), vec![(1, &b"1"[..])]);
    }

    #[test]
    fn a_foreign_redb_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let def: TableDefinition<u64, u64> = TableDefinition::new("theirs");
                tx.open_table(def).unwrap().insert(1, 2).unwrap();
            }
            tx.commit().unwrap();
        }
        let err = ChannelStore::open(&path).unwrap_err().to_string();
        assert!(err.contains("not a syncflow channel store"), "{err}");
        let text_file = dir.path().join("notes.txt");
        std::fs::write(
            &text_file,
            "hello, this is not a database at all".repeat(200),
        )
        .unwrap();
        let err = ChannelStore::open(&text_file).unwrap_err().to_string();
        assert!(err.starts_with("cannot open channel store"), "{err}");
        assert!(err.contains("notes.txt"), "{err}");
        let err = ChannelStore::open(dir.path().join("missing/c.redb"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("create the directory first"), "{err}");
    }
}
