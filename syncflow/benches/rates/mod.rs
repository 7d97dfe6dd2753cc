//! Shared support for the connector rate benchmarks (`amqp_rate`,
//! `mqtt_rate`, `kafka_rate`): a counting sink, a service check and medians.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncflow::connector::{ConnectorError, Sink};

/// Whether something listens at `addr` (`127.0.0.1:5672`).
pub fn up(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("valid address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A sink that counts what it gets, and when its first and last writes came.
#[derive(Clone, Default)]
pub struct Count {
    n: Arc<AtomicU64>,
    /// The number of items of the first write.
    first: Arc<AtomicU64>,
    times: Arc<Mutex<Option<(Instant, Instant)>>>,
}

impl Count {
    pub fn get(&self) -> u64 {
        self.n.load(Ordering::Relaxed)
    }

    /// The number of items of the first write.
    pub fn first_write(&self) -> u64 {
        self.first.load(Ordering::Relaxed)
    }

    /// The times of the first and the last write.
    pub fn span(&self) -> Option<(Instant, Instant)> {
        *self.times.lock().unwrap()
    }

    /// Waits until `n` items arrived; panics after `limit`.
    pub async fn wait(&self, n: u64, limit: Duration, what: &str) {
        let deadline = Instant::now() + limit;
        while self.get() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} messages after {limit:?}",
                self.get()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl<T: Sync> Sink<T> for Count {
    fn name(&self) -> String {
        "count".into()
    }
    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        if self.n.fetch_add(items.len() as u64, Ordering::Relaxed) == 0 {
            self.first.store(items.len() as u64, Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut times = self.times.lock().unwrap();
        let first = times.map_or(now, |(first, _)| first);
        *times = Some((first, now));
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// Reads `--rounds N` (default `rounds`) from the command line.
pub fn rounds(default: usize) -> usize {
    let mut args = std::env::args().skip(1);
    let mut rounds = default;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a number")
            }
            "--quick" => rounds = 1,
            // Passed by `cargo bench`; filters are not supported.
            _ => {}
        }
    }
    rounds.max(1)
}

/// Prints one line per measure: each round's rates and the median ratio.
pub struct Table {
    pub name: &'static str,
    rows: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl Table {
    pub fn new(name: &'static str) -> Self {
        Table {
            name,
            rows: Vec::new(),
        }
    }

    /// Records one round of `what`: the raw client's and syncflow's
    /// messages per second.
    pub fn add(&mut self, what: &str, raw: f64, syncflow: f64) {
        eprintln!(
            "  {what}: raw client {raw:>9.0} msg/s   syncflow {syncflow:>9.0} msg/s   syncflow/raw rate {:.2}",
            syncflow / raw
        );
        match self.rows.iter_mut().find(|(w, _, _)| w == what) {
            Some((_, r, s)) => {
                r.push(raw);
                s.push(syncflow);
            }
            None => self
                .rows
                .push((what.to_string(), vec![raw], vec![syncflow])),
        }
    }

    pub fn print(self) {
        for (what, raw, syncflow) in self.rows {
            let ratios: Vec<f64> = raw.iter().zip(&syncflow).map(|(r, s)| s / r).collect();
            let rounds = ratios.len();
            println!(
                "{} {what}: raw client {:.0} msg/s, syncflow {:.0} msg/s; syncflow rate / raw rate = {:.2} (median of {rounds} rounds)",
                self.name,
                median(raw),
                median(syncflow),
                median(ratios),
            );
        }
    }
}
