//! Helpers shared by the connector tests (`postgres.rs`, `mysql.rs`, `kafka.rs`).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncflow::connector::{Batch, ConnectorError, NoAck, Read, Sink, Source};

/// A sink that keeps everything written, and confirms at once.
#[derive(Clone, Default)]
pub struct Collect<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Collect<T> {
    pub fn new() -> Self {
        Collect(Arc::new(Mutex::new(Vec::new())))
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for Collect<T> {
    fn name(&self) -> String {
        "collect".into()
    }
    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.0.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A sink that sees everything written but never confirms: its flush
/// fails (`fail`) or never returns.
pub struct NeverConfirm<T> {
    pub seen: Collect<T>,
    pub fail: bool,
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for NeverConfirm<T> {
    fn name(&self) -> String {
        "never-confirm".into()
    }
    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.seen.write(items).await
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.fail {
            return Err(ConnectorError::server(
                "test",
                "never-confirm",
                "flush",
                "this sink always fails",
                "",
            ));
        }
        std::future::pending().await
    }
}

/// A source of JSON rows `{"id": n, "v": "row n"}`, `per_batch` a batch,
/// with a pause between batches.
pub struct Rows {
    pub next: u64,
    pub to: u64,
    pub per_batch: u64,
    pub pause: Duration,
}

impl Source for Rows {
    type Item = serde_json::Value;
    type Ack = ();
    type Acker = NoAck;
    fn name(&self) -> Arc<str> {
        Arc::from("rows")
    }
    fn acker(&mut self) -> NoAck {
        NoAck
    }
    async fn read(
        &mut self,
        batch: &mut Batch<serde_json::Value>,
        max: usize,
    ) -> Result<Read<()>, ConnectorError> {
        if self.next > self.to {
            return Ok(Read::End);
        }
        tokio::time::sleep(self.pause).await;
        let mut n = 0;
        while n < self.per_batch && batch.len() < max && self.next <= self.to {
            let row = serde_json::json!({"id": self.next, "v": format!("row {}", self.next)});
            batch.push(self.next, b"", Ok(row));
            self.next += 1;
            n += 1;
        }
        Ok(Read::Batch(()))
    }
}

/// Waits until `check` returns true, polling; panics with `what` after `secs`.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Writes JSON-lines input to a temporary file.
pub fn input_file(dir: &tempfile::TempDir, lines: &[serde_json::Value]) -> std::path::PathBuf {
    let path = dir.path().join("in.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Reads the dead letters written to a file.
pub fn dead_letters(path: &std::path::Path) -> Vec<syncflow::runtime::DeadLetter> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
