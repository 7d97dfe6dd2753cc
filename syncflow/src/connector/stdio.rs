//! Standard input and output, as JSON lines.
//!
//! [`StdinSource`] reads JSON lines from standard input; it returns what it
//! has after a short wait ([`StdinSource::linger`]) so interactive and
//! trickling input flows promptly and shutdown stays prompt. Standard input
//! cannot be replayed, so it keeps no checkpoint. [`StdoutSink`] writes JSON
//! lines to standard output and flushes it before a batch is acknowledged.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::jsonl::{DecodeFn, LineReader, LineWriter, serde_decode};
use super::{Batch, ConnectorError, NoAck, Read, Sink, Source};

/// Reads JSON lines from standard input; each line is decoded into the
/// flow's input type. Positions are line numbers, from 1.
pub struct StdinSource<T> {
    reader: LineReader,
    decode: DecodeFn<T>,
}

impl<T> std::fmt::Debug for StdinSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinSource")
            .field("line", &self.reader.position().0)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> Default for StdinSource<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned + Send + 'static> StdinSource<T> {
    /// Reads the process's standard input.
    pub fn new() -> Self {
        Self::with_decoder(serde_decode::<T>)
    }
}

impl<T: Send + 'static> StdinSource<T> {
    /// How long a read waits for more lines before handing over what it has.
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(100);

    /// Reads the process's standard input, decoding each line with `decode`
    /// instead of `T`'s `Deserialize` implementation.
    pub fn with_decoder(decode: DecodeFn<T>) -> Self {
        StdinSource {
            reader: LineReader::new(
                Box::new(tokio::io::stdin()),
                0,
                0,
                Some(Self::DEFAULT_LINGER),
            ),
            decode,
        }
    }

    /// Sets how long a read waits for more lines before handing over a
    /// partial batch (default 100 ms).
    pub fn linger(mut self, linger: Duration) -> Self {
        let (line, offset) = self.reader.position();
        self.reader = LineReader::new(Box::new(tokio::io::stdin()), line, offset, Some(linger));
        self
    }
}

impl<T: Send + 'static> Source for StdinSource<T> {
    type Item = T;
    type Ack = ();
    type Acker = NoAck;

    fn name(&self) -> Arc<str> {
        Arc::from("stdin")
    }

    fn acker(&mut self) -> NoAck {
        NoAck
    }

    async fn read(&mut self, batch: &mut Batch<T>, max: usize) -> Result<Read<()>, ConnectorError> {
        self.reader
            .fill(batch, max, self.decode)
            .await
            .map_err(|e| ConnectorError::io("read", "stdin", e, ""))
    }
}

/// Writes each output as one line of JSON to standard output.
pub struct StdoutSink {
    out: LineWriter<tokio::io::Stdout>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdoutSink")
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl StdoutSink {
    /// Writes to the process's standard output.
    pub fn new() -> Self {
        StdoutSink {
            out: LineWriter::new(tokio::io::stdout()),
        }
    }
}

const STDOUT_HINT: &str = "standard output was closed (e.g. the reading end of a pipe exited)";

impl<T: Serialize + Sync> Sink<T> for StdoutSink {
    fn name(&self) -> String {
        "stdout".to_string()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.out.write(items).await.map_err(|e| match e {
            super::jsonl::WriteError::Io(e) => {
                ConnectorError::io("write to", "stdout", e, STDOUT_HINT)
            }
            e => e.into_connector(Path::new("stdout"), "write to"),
        })
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        self.out
            .flush()
            .await
            .map_err(|e| ConnectorError::io("write to", "stdout", e, STDOUT_HINT))
    }
}
