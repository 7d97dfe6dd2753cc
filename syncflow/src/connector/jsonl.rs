//! JSON-lines files: one JSON value per line.
//!
//! [`JsonLinesSource`] reads a file, decodes each line into the flow's input
//! type, and (with [`JsonLinesSource::state_dir`]) keeps a checkpoint so that
//! a restart resumes after the last line whose outputs were delivered.
//! [`JsonLinesSink`] writes one JSON value per line, buffered, and fsyncs on
//! every flush, before the runtime acknowledges the batch to the source.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Acker, Batch, ConnectorError, DecodeError, Phase, Read, Sink, SourceProgress, Unit};

/// Bytes of input read at once.
const READ_CHUNK: usize = 256 * 1024;
/// Encoded output buffered before it is handed to the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Splits a byte stream into lines and decodes each as JSON into `T`.
///
/// Blank lines are skipped (their line numbers still count). A trailing
/// `\r` and a UTF-8 byte order mark on the first line are removed.
///
/// Input is read in large chunks straight into the batch's raw buffer,
/// newlines are found with `memchr`, and each line is decoded in place: a
/// record's raw bytes are a range of that buffer, never copied. Only the
/// bytes after the batch's last line are carried over to the next batch.
pub(crate) struct LineReader {
    input: Input,
    /// Bytes read but not yet split into lines (after the last batch's last line).
    pending: Vec<u8>,
    /// Lines consumed so far (the last line's number).
    line: u64,
    /// Bytes consumed so far, from the start of the file.
    offset: u64,
    /// How long a read waits for more input before returning what it has.
    linger: Option<Duration>,
    eof: bool,
}

/// Where a [`LineReader`]'s bytes come from.
enum Input {
    /// A stream (standard input, a pipe, test data): read as it comes.
    Stream(Box<dyn AsyncRead + Send + Unpin>),
    /// A regular file: read in large chunks on tokio's blocking pool, one
    /// chunk ahead, so that the next chunk is being read while this one is
    /// decoded.
    File(FileChunks),
}

type ChunkRead = (std::fs::File, Vec<u8>, io::Result<usize>);

struct FileChunks {
    /// The file, when no read is in flight.
    file: Option<std::fs::File>,
    /// The read in flight: the file, the chunk buffer, bytes read.
    ahead: Option<tokio::task::JoinHandle<ChunkRead>>,
    /// The chunk buffer, when no read is in flight.
    chunk: Vec<u8>,
}

impl FileChunks {
    fn new(file: std::fs::File) -> Self {
        FileChunks {
            file: Some(file),
            ahead: None,
            chunk: Vec::new(),
        }
    }

    /// Starts reading the next chunk in the background.
    fn start(&mut self) {
        let (Some(mut file), None) = (self.file.take(), self.ahead.as_ref()) else {
            return;
        };
        let mut chunk = std::mem::take(&mut self.chunk);
        self.ahead = Some(tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            if chunk.len() < READ_CHUNK {
                chunk.resize(READ_CHUNK, 0);
            }
            let read = loop {
                match file.read(&mut chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            (file, chunk, read)
        }));
    }

    /// Appends the next chunk of the file to `out` and starts reading the
    /// one after it. Returns the bytes appended (0 at the end of the file).
    async fn read_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        self.start();
        let Some(ahead) = self.ahead.as_mut() else {
            return Err(io::Error::other("the input file was lost by a failed read"));
        };
        // Awaited through `&mut`: if this future is dropped, the read in
        // flight stays in `self.ahead` and nothing is lost.
        let (file, chunk, read) = ahead.await.map_err(io::Error::other)?;
        self.ahead = None;
        self.file = Some(file);
        self.chunk = chunk;
        let n = read?;
        out.extend_from_slice(&self.chunk[..n]);
        if n > 0 {
            self.start();
        }
        Ok(n)
    }
}

impl LineReader {
    /// Reads a stream as it comes (standard input, pipes, tests).
    pub(crate) fn new(
        reader: Box<dyn AsyncRead + Send + Unpin>,
        line: u64,
        offset: u64,
        linger: Option<Duration>,
    ) -> Self {
        Self::with_input(Input::Stream(reader), line, offset, linger)
    }

    /// Reads a regular file from its current position, one chunk ahead.
    pub(crate) fn file(file: std::fs::File, line: u64, offset: u64) -> Self {
        Self::with_input(Input::File(FileChunks::new(file)), line, offset, None)
    }

    fn with_input(input: Input, line: u64, offset: u64, linger: Option<Duration>) -> Self {
        LineReader {
            input,
            pending: Vec::new(),
            line,
            offset,
            linger,
            eof: false,
        }
    }

    pub(crate) fn position(&self) -> (u64, u64) {
        (self.line, self.offset)
    }

    /// Reads more input into `raw`; `None` when the linger time passed first.
    async fn read_more(
        &mut self,
        raw: &mut Vec<u8>,
        deadline: Option<tokio::time::Instant>,
    ) -> io::Result<Option<usize>> {
        match &mut self.input {
            Input::File(chunks) => chunks.read_into(raw).await.map(Some),
            Input::Stream(reader) => {
                raw.reserve(READ_CHUNK);
                match deadline {
                    Some(deadline) => {
                        match tokio::time::timeout_at(deadline, reader.read_buf(raw)).await {
                            Ok(read) => read.map(Some),
                            Err(_elapsed) => Ok(None),
                        }
                    }
                    None => reader.read_buf(raw).await.map(Some),
                }
            }
        }
    }

    /// Reads up to `max` records into `batch`.
    pub(crate) async fn fill<T>(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
        decode: DecodeFn<T>,
    ) -> io::Result<Read<()>> {
        if self.eof && self.pending.is_empty() {
            return Ok(Read::End);
        }
        let deadline = self.linger.map(|l| tokio::time::Instant::now() + l);
        // The carried-over bytes become the start of the batch's buffer.
        let base = batch.raw.len();
        if base == 0 {
            std::mem::swap(&mut batch.raw, &mut self.pending);
        } else {
            batch.raw.extend_from_slice(&self.pending);
            self.pending.clear();
        }
        // `raw[start..scan]` is the start of the next line: no newline in it.
        let mut start = base;
        let mut scan = base;
        let mut any_line = false;
        let mut result = Ok(());
        while batch.records.len() < max {
            if let Some(i) = memchr::memchr(b'\n', &batch.raw[scan..]) {
                let end = scan + i;
                self.line += 1;
                self.offset += (end + 1 - start) as u64;
                decode_line(self.line, start..end, batch, decode);
                start = end + 1;
                scan = start;
                any_line = true;
                continue;
            }
            scan = batch.raw.len();
            if self.eof {
                // The last line, without a newline.
                if start < scan {
                    self.line += 1;
                    self.offset += (scan - start) as u64;
                    decode_line(self.line, start..scan, batch, decode);
                    start = scan;
                    any_line = true;
                }
                break;
            }
            let mut raw = std::mem::take(&mut batch.raw);
            let read = self.read_more(&mut raw, deadline).await;
            batch.raw = raw;
            match read {
                Ok(Some(0)) => self.eof = true,
                Ok(Some(_)) => {}
                // Lingered long enough: hand over what there is.
                Ok(None) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Keep what follows the last line for the next batch.
        self.pending.extend_from_slice(&batch.raw[start..]);
        batch.raw.truncate(start);
        result?;
        if any_line {
            Ok(Read::Batch(()))
        } else if self.eof && self.pending.is_empty() {
            Ok(Read::End)
        } else {
            Ok(Read::Idle)
        }
    }
}

/// Decodes one line of JSON (without its line end) into a payload.
///
/// [`serde_decode`] is the decoder of every `T: Deserialize`; a
/// config-driven flow passes the decoder of its first step's input type.
pub type DecodeFn<T> = fn(&[u8]) -> Result<T, DecodeError>;

/// Decodes a line with serde_json.
///
/// UTF-8 is validated once, over the whole line, and serde_json then reads
/// a `str` (which it does not validate again, string by string). A line that
/// is not UTF-8 goes through `from_slice` for serde_json's own error.
#[inline]
pub fn serde_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str::<T>(text),
        Err(_) => serde_json::from_slice::<T>(bytes),
    }
    .map_err(DecodeError::new)
}

/// Decodes the line `batch.raw[line]` (without its `\n`) into a record that
/// refers to it in place.
#[inline]
fn decode_line<T>(line_no: u64, line: Range<usize>, batch: &mut Batch<T>, decode: DecodeFn<T>) {
    let Range { mut start, mut end } = line;
    let raw = &batch.raw;
    if end > start && raw[end - 1] == b'\r' {
        end -= 1;
    }
    if line_no == 1 && raw[start..end].starts_with("\u{feff}".as_bytes()) {
        start += 3;
    }
    let bytes = &raw[start..end];
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let payload = decode(bytes);
    batch.push_range(line_no, start..end, payload);
}

/// Reads a JSON-lines file; each line is decoded into the flow's input type.
///
/// A record's position is its line number (from 1). A line that is not
/// valid JSON, or not of the input type's shape, becomes a decode error:
/// counted, logged and dead-lettered by the runtime, while the flow goes on.
///
/// Without [`JsonLinesSource::state_dir`], every run reads the whole file.
/// With it, the source keeps a checkpoint file in that directory and a
/// restart resumes after the last line whose outputs every sink confirmed.
///
/// ```no_run
/// # fn main() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::JsonLinesSource;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let source = JsonLinesSource::<Order>::open("orders.jsonl")?.state_dir(".syncflow")?;
/// # Ok(()) }
/// ```
pub struct JsonLinesSource<T> {
    path: PathBuf,
    name: Arc<str>,
    reader: LineReader,
    checkpoint: Option<PathBuf>,
    resumed: Option<Checkpoint>,
    decode: DecodeFn<T>,
    /// Bytes read of the file's size.
    progress: SourceProgress,
}

impl<T> std::fmt::Debug for JsonLinesSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSource")
            .field("path", &self.path)
            .field("checkpoint", &self.checkpoint)
            .field("position", &self.reader.position())
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> JsonLinesSource<T> {
    /// Opens the file for reading, from its first line.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        Self::open_with(path, serde_decode::<T>)
    }
}

impl<T: Send + 'static> JsonLinesSource<T> {
    /// Opens the file for reading, from its first line, decoding each line
    /// with `decode` instead of `T`'s `Deserialize` implementation.
    pub fn open_with(path: impl AsRef<Path>, decode: DecodeFn<T>) -> Result<Self, ConnectorError> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| {
            ConnectorError::io(
                "open input file",
                &path,
                e,
                "check the path (relative paths start at the current directory), or read standard input instead",
            )
        })?;
        let name: Arc<str> = Arc::from(path.display().to_string());
        // A regular file has a size to show progress against; a pipe or a
        // device has none that means anything.
        let size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let progress = SourceProgress::new();
        progress.begin(Phase::Backfill, name.clone(), Unit::Bytes, size);
        Ok(JsonLinesSource {
            reader: LineReader::file(file, 0, 0),
            path,
            name,
            checkpoint: None,
            resumed: None,
            decode,
            progress,
        })
    }

    /// Keeps a checkpoint of this file in `dir` (created if missing) and
    /// resumes after the checkpointed line if there is one.
    ///
    /// The checkpoint file is named after the input file and a hash of its
    /// absolute path, so one directory can hold the checkpoints of many
    /// inputs. Delete it to process the file from the start again.
    pub fn state_dir(mut self, dir: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            ConnectorError::io(
                "create state directory",
                dir,
                e,
                "choose a directory you can write to",
            )
        })?;
        let checkpoint = dir.join(checkpoint_file_name(&self.path));
        let saved = Checkpoint::load(&checkpoint)?;
        if let Some(saved) = &saved {
            let len = std::fs::metadata(&self.path)
                .map_err(|e| ConnectorError::io("read the size of", &self.path, e, ""))?
                .len();
            if len < saved.offset {
                return Err(ConnectorError::Checkpoint {
                    path: checkpoint,
                    problem: format!(
                        "says {} bytes ({} lines) of `{}` were processed, but the file now has {len} bytes: it was truncated or replaced",
                        saved.offset,
                        saved.line,
                        self.path.display()
                    ),
                    fix: "delete the checkpoint file to process the file from the start".into(),
                });
            }
            let mut file = std::fs::File::open(&self.path).map_err(|e| {
                ConnectorError::io("open input file", &self.path, e, "check the path")
            })?;
            file.seek(SeekFrom::Start(saved.offset))
                .map_err(|e| ConnectorError::io("seek to the checkpoint in", &self.path, e, ""))?;
            tracing::info!(
                input = %self.path.display(),
                checkpoint = %checkpoint.display(),
                line = saved.line,
                "resuming after the checkpointed line"
            );
            self.reader = LineReader::file(file, saved.line, saved.offset);
            self.progress.set_done(saved.offset);
        }
        self.resumed = saved;
        self.checkpoint = Some(checkpoint);
        Ok(self)
    }

    /// The line after which this source resumed, if it resumed from a checkpoint.
    pub fn resumed_after_line(&self) -> Option<u64> {
        self.resumed.as_ref().map(|c| c.line)
    }

    /// The checkpoint file, when [`JsonLinesSource::state_dir`] was given.
    pub fn checkpoint_path(&self) -> Option<&Path> {
        self.checkpoint.as_deref()
    }
}

/// `orders.jsonl.1f2e3d4c5b6a7988.checkpoint.json`
fn checkpoint_file_name(input: &Path) -> String {
    let absolute = std::path::absolute(input).unwrap_or_else(|_| input.to_path_buf());
    let mut hasher = DefaultHasher::new();
    absolute.hash(&mut hasher);
    let base: String = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{base}.{:016x}.checkpoint.json", hasher.finish())
}

/// What a checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    /// Format version.
    version: u32,
    /// The input file, as given.
    input: String,
    /// The last line whose outputs were delivered.
    line: u64,
    /// The byte offset just after that line.
    offset: u64,
}

impl Checkpoint {
    const VERSION: u32 = 1;

    fn load(path: &Path) -> Result<Option<Checkpoint>, ConnectorError> {
        super::checkpoint::load(path)
    }

    /// Writes the checkpoint atomically (see [`super::checkpoint::store`]).
    fn store(&self, path: &Path) -> Result<(), ConnectorError> {
        super::checkpoint::store(self, path)
    }
}

/// Acknowledges lines of a [`JsonLinesSource`]: `(line, byte offset after it)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineAck {
    /// The last line of the batch.
    pub line: u64,
    /// The byte offset just after it.
    pub offset: u64,
}

/// Writes the checkpoint of a [`JsonLinesSource`] (nothing without a state dir).
#[derive(Debug)]
pub struct LineAcker {
    input: String,
    path: Option<PathBuf>,
    acked: Option<LineAck>,
    stored: Option<LineAck>,
}

impl Acker for LineAcker {
    type Ack = LineAck;

    fn ack(&mut self, ack: LineAck) {
        self.acked = Some(ack);
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let (Some(path), Some(ack)) = (self.path.clone(), self.acked) else {
            return Ok(());
        };
        if self.stored == Some(ack) {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            version: Checkpoint::VERSION,
            input: self.input.clone(),
            line: ack.line,
            offset: ack.offset,
        };
        let stored_path = path.clone();
        tokio::task::spawn_blocking(move || checkpoint.store(&stored_path))
            .await
            .map_err(|e| ConnectorError::Checkpoint {
                path,
                problem: format!("could not be written: the writing task failed ({e})"),
                fix: "retry the run; the previous checkpoint is intact".into(),
            })??;
        self.stored = Some(ack);
        Ok(())
    }
}

impl<T: Send + 'static> super::Source for JsonLinesSource<T> {
    type Item = T;
    type Ack = LineAck;
    type Acker = LineAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> LineAcker {
        let start = self.resumed.as_ref().map(|c| LineAck {
            line: c.line,
            offset: c.offset,
        });
        LineAcker {
            input: self.path.display().to_string(),
            path: self.checkpoint.clone(),
            acked: start,
            stored: start,
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<LineAck>, ConnectorError> {
        let read = self
            .reader
            .fill(batch, max, self.decode)
            .await
            .map_err(|e| ConnectorError::io("read input file", &self.path, e, ""))?;
        Ok(match read {
            Read::Batch(()) => {
                let (line, offset) = self.reader.position();
                self.progress.set_done(offset);
                Read::Batch(LineAck { line, offset })
            }
            Read::Idle => Read::Idle,
            Read::End => Read::End,
        })
    }

    fn progress(&self) -> Option<SourceProgress> {
        Some(self.progress.clone())
    }
}

pub(crate) enum WriteError {
    Encode(serde_json::Error),
    Io(io::Error),
}

impl WriteError {
    pub(crate) fn into_connector(self, target: &Path, action: &'static str) -> ConnectorError {
        match self {
            WriteError::Encode(source) => ConnectorError::Encode {
                target: target.display().to_string(),
                source,
            },
            WriteError::Io(e) => ConnectorError::io(action, target, e, "check free disk space"),
        }
    }
}

/// Encodes items as JSON lines into a buffer and writes it out in large chunks.
pub(crate) struct LineWriter<W> {
    writer: W,
    buf: Vec<u8>,
}

impl<W: AsyncWrite + Unpin + Send> LineWriter<W> {
    pub(crate) fn new(writer: W) -> Self {
        LineWriter {
            writer,
            buf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    /// Encodes the items; on an encoding error, nothing of the failing item stays buffered.
    pub(crate) async fn write<T: Serialize>(&mut self, items: &[T]) -> Result<(), WriteError> {
        for item in items {
            let start = self.buf.len();
            if let Err(e) = serde_json::to_writer(&mut self.buf, item) {
                self.buf.truncate(start);
                return Err(WriteError::Encode(e));
            }
            self.buf.push(b'\n');
            if self.buf.len() >= WRITE_BUFFER {
                self.writer
                    .write_all(&self.buf)
                    .await
                    .map_err(WriteError::Io)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Hands everything buffered to the writer and flushes it.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.writer.write_all(&self.buf).await?;
            self.buf.clear();
        }
        self.writer.flush().await
    }

    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.writer
    }
}

/// Writes each output as one line of JSON to a file.
///
/// Output is buffered; [`Sink::flush`] writes the buffer, then fsyncs the
/// file (`fdatasync`), so a batch is acknowledged to the source only once
/// its outputs are on disk.
///
/// ```no_run
/// # fn main() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::JsonLinesSink;
/// let fresh = JsonLinesSink::create("out.jsonl")?; // truncates
/// let resumed = JsonLinesSink::append("out.jsonl")?; // keeps what is there
/// # Ok(()) }
/// ```
pub struct JsonLinesSink {
    path: PathBuf,
    out: LineWriter<tokio::fs::File>,
    fsync: bool,
}

impl std::fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("path", &self.path)
            .finish()
    }
}

impl JsonLinesSink {
    /// Creates the file, or truncates it if it exists.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        Self::open_with(path.as_ref(), false)
    }

    /// Opens the file for appending, creating it if missing: use it when a
    /// run resumes from a checkpoint, so earlier outputs are kept.
    pub fn append(path: impl AsRef<Path>) -> Result<Self, ConnectorError> {
        Self::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, append: bool) -> Result<Self, ConnectorError> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(ConnectorError::io(
                "create output file",
                path,
                io::Error::new(io::ErrorKind::NotFound, "its directory does not exist"),
                "create the directory first, or choose another path",
            ));
        }
        let file = options.open(path).map_err(|e| {
            ConnectorError::io(
                "create output file",
                path,
                e,
                "check that the directory exists and is writable",
            )
        })?;
        Ok(JsonLinesSink {
            path: path.to_path_buf(),
            out: LineWriter::new(tokio::fs::File::from_std(file)),
            fsync: true,
        })
    }

    /// Skips the fsync at each flush (faster, but a power loss may lose
    /// acknowledged outputs). On by default.
    pub fn fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl<T: Serialize + Sync> Sink<T> for JsonLinesSink {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.out
            .write(items)
            .await
            .map_err(|e| e.into_connector(&self.path, "write to output file"))
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let path = &self.path;
        let fail = |e| ConnectorError::io("write to output file", path, e, "check free disk space");
        self.out.flush().await.map_err(fail)?;
        if self.fsync {
            self.out.get_mut().sync_data().await.map_err(fail)?;
        }
        Ok(())
    }
}

impl super::checkpoint::Versioned for Checkpoint {
    const VERSION: u32 = Checkpoint::VERSION;
    const WHAT: &'static str = "checkpoint";
    const FIX: &'static str = "delete it to process the input from the start";
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(text: &'static [u8], max: usize) -> Vec<(u64, String, Result<i64, String>)> {
        let mut reader = LineReader::new(Box::new(text), 0, 0, None);
        let mut out = Vec::new();
        loop {
            let mut batch = Batch::<i64>::default();
            match reader.fill(&mut batch, max, serde_decode).await.unwrap() {
                Read::End => break,
                Read::Idle => panic!("a byte slice never idles"),
                Read::Batch(()) => {}
            }
            assert!(batch.len() <= max);
            for (pos, raw, payload) in batch.iter() {
                out.push((
                    pos,
                    String::from_utf8(raw.to_vec()).unwrap(),
                    payload.clone().map_err(|e| e.to_string()),
                ));
            }
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_keeps_numbers_and_skips_blank_lines() {
        let got = read_all(b"\xef\xbb\xbf1\n2\r\n\n  \nx\n4", 2).await;
        let got: Vec<_> = got
            .into_iter()
            .map(|(p, raw, v)| (p, raw, v.is_ok()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "1".into(), true),
                (2, "2".into(), true),
                (5, "x".into(), false),
                (6, "4".into(), true),
            ]
        );
    }

    #[tokio::test]
    async fn offsets_point_after_the_last_line() {
        let text: &'static [u8] = b"1\n22\n333\n";
        let mut reader = LineReader::new(Box::new(text), 0, 0, None);
        let mut batch = Batch::<i64>::default();
        reader.fill(&mut batch, 2, serde_decode).await.unwrap();
        assert_eq!(reader.position(), (2, 5));
        batch.clear();
        reader.fill(&mut batch, 2, serde_decode).await.unwrap();
        assert_eq!(reader.position(), (3, 9));
        assert_eq!(
            reader.fill(&mut batch, 2, serde_decode).await.unwrap(),
            Read::End
        );
    }

    #[tokio::test]
    async fn a_lingering_reader_hands_over_what_it_has() {
        use tokio::io::AsyncWriteExt;
        let (mut writer, reader) = tokio::io::duplex(1024);
        let linger = Duration::from_millis(20);
        let mut reader = LineReader::new(Box::new(reader), 0, 0, Some(linger));
        let mut batch = Batch::<i64>::default();
        // Nothing arrives: idle after the linger time.
        assert_eq!(
            reader.fill(&mut batch, 10, serde_decode).await.unwrap(),
            Read::Idle
        );
        // One line and a half: the line is handed over, the half is kept.
        writer.write_all(b"1\n2").await.unwrap();
        assert_eq!(
            reader.fill(&mut batch, 10, serde_decode).await.unwrap(),
            Read::Batch(())
        );
        assert_eq!(batch.len(), 1);
        batch.clear();
        writer.write_all(b"2\n").await.unwrap();
        drop(writer);
        assert_eq!(
            reader.fill(&mut batch, 10, serde_decode).await.unwrap(),
            Read::Batch(())
        );
        let values: Vec<_> = batch
            .iter()
            .map(|(p, _, v)| (p, v.clone().unwrap()))
            .collect();
        assert_eq!(values, vec![(2, 22)]);
        assert_eq!(
            reader.fill(&mut batch, 10, serde_decode).await.unwrap(),
            Read::End
        );
    }

    #[tokio::test]
    async fn a_file_is_read_in_chunks_with_lines_across_chunk_boundaries() {
        // Lines of varying length, over several read chunks, a CRLF line, a
        // blank line, a bad line and no newline at the end.
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0u64;
        while text.len() < 3 * READ_CHUNK + 1000 {
            line += 1;
            let value = line * 7919 % 1_000_003;
            let pad = " ".repeat((line % 97) as usize);
            match line % 500 {
                7 => text.push_str(&format!("{value}{pad}\r\n")),
                8 => {
                    text.push_str("   \n");
                    continue;
                }
                9 => {
                    text.push_str("{oops\n");
                    expected.push((line, "{oops".to_string(), None));
                    continue;
                }
                _ => text.push_str(&format!("{value}{pad}\n")),
            }
            expected.push((line, format!("{value}{pad}"), Some(value as i64)));
        }
        line += 1;
        text.push_str("42");
        expected.push((line, "42".to_string(), Some(42)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, &text).unwrap();

        let mut reader = LineReader::file(std::fs::File::open(&path).unwrap(), 0, 0);
        let mut got = Vec::new();
        let mut batch = Batch::<i64>::default();
        loop {
            batch.clear();
            match reader.fill(&mut batch, 1000, serde_decode).await.unwrap() {
                Read::End => break,
                Read::Idle => panic!("a file never idles"),
                Read::Batch(()) => {}
            }
            assert!(batch.len() <= 1000);
            for (pos, raw, payload) in batch.iter() {
                let raw = String::from_utf8(raw.to_vec()).unwrap();
                got.push((pos, raw, payload.as_ref().ok().copied()));
            }
        }
        assert_eq!(got.len(), expected.len());
        assert_eq!(got, expected);
        assert_eq!(reader.position(), (line, text.len() as u64));
    }

    #[test]
    fn invalid_utf8_gets_serde_json_s_own_error() {
        let mut batch = Batch::<String>::default();
        batch.raw.extend_from_slice(b"\"a\xff\"");
        let len = batch.raw.len();
        decode_line(1, 0..len, &mut batch, serde_decode);
        let (_, _, payload) = batch.iter().next().unwrap();
        let expected = serde_json::from_slice::<String>(b"\"a\xff\"").unwrap_err();
        assert_eq!(
            payload.as_ref().unwrap_err().message(),
            expected.to_string()
        );
    }

    #[tokio::test]
    async fn a_file_source_reports_bytes_read_of_its_size() {
        use crate::connector::Source;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.jsonl");
        let text: String = (1..=1000).map(|i| format!("{i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let size = text.len() as u64;
        let mut source = JsonLinesSource::<i64>::open(&path).unwrap();
        let progress = source.progress().unwrap();
        let status = progress.status();
        assert_eq!(status.phase, Phase::Backfill);
        assert_eq!(
            (status.done, status.total, status.unit),
            (0, Some(size), Unit::Bytes)
        );
        assert_eq!(&*status.what, path.display().to_string());
        let mut batch = Batch::default();
        assert!(matches!(
            source.read(&mut batch, 10).await.unwrap(),
            Read::Batch(_)
        ));
        // Ten lines of `1\n` … `9\n`, `10\n`.
        assert_eq!(progress.status().done, 9 * 2 + 3);
        loop {
            batch.clear();
            if let Read::End = source.read(&mut batch, 300).await.unwrap() {
                break;
            }
        }
        assert_eq!(progress.status().done, size);
        assert_eq!(progress.status().fraction(), Some(1.0));

        // Resumed from a checkpoint: what was done before counts as done.
        let state = dir.path().join("state");
        let cp = state.join(checkpoint_file_name(&path));
        std::fs::create_dir_all(&state).unwrap();
        let c = Checkpoint {
            version: 1,
            input: "n".into(),
            line: 9,
            offset: 18,
        };
        c.store(&cp).unwrap();
        let source = JsonLinesSource::<i64>::open(&path)
            .unwrap()
            .state_dir(&state)
            .unwrap();
        let status = source.progress().unwrap().status();
        assert_eq!((status.done, status.total), (18, Some(size)));
    }

    #[test]
    fn checkpoint_names_are_stable_and_safe() {
        let a = checkpoint_file_name(Path::new("data/my orders.jsonl"));
        assert_eq!(a, checkpoint_file_name(Path::new("data/my orders.jsonl")));
        assert!(a.starts_with("my_orders.jsonl."), "{a}");
        assert_ne!(a, checkpoint_file_name(Path::new("other/my orders.jsonl")));
    }

    #[test]
    fn checkpoint_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let c = Checkpoint {
            version: 1,
            input: "x".into(),
            line: 7,
            offset: 99,
        };
        c.store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(c));
        std::fs::write(&path, "{").unwrap();
        let err = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(err.contains("delete it"), "{err}");
    }
}
