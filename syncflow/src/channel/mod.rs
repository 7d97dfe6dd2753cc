//! Durable named channels: the `save:` and `load:` ends of flows.
//!
//! A **channel** is a named, append-only log of records kept in a
//! [`ChannelStore`], one embedded [redb](https://www.redb.org) file that
//! holds any number of channels and needs no server. A flow ends in (or
//! branches into) a [`SaveSink`]; other flows start with a [`LoadSource`]:
//!
//! ```
//! use syncflow::channel::{ChannelStore, LoadSource, SaveSink};
//! use syncflow::prelude::*;
//!
//! /// Doubles a number.
//! #[sync_function]
//! fn double(n: i64) -> i64 { n * 2 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let input = dir.path().join("in.jsonl");
//! # std::fs::write(&input, "1\n2\n3\n")?;
//! # let output = dir.path().join("out.jsonl");
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let store = ChannelStore::open(dir.path().join("channels.redb"))?;
//!
//! // Flow 1: file -> double -> save:doubled
//! Runtime::new(flow!(double))
//!     .source(JsonLinesSource::open(&input)?)
//!     .sink(SaveSink::open(&store, "doubled")?)
//!     .handle_signals(false)
//!     .run()
//!     .await?;
//!
//! // Flow 2: load:doubled (as reader "printer") -> file. `follow(false)`
//! // ends the run once the channel is read to its end.
//! Runtime::new(flow!(double))
//!     .source(LoadSource::<i64>::open(&store, "doubled", "printer")?.follow(false))
//!     .sink(JsonLinesSink::create(&output)?)
//!     .handle_signals(false)
//!     .run()
//!     .await?;
//! assert_eq!(std::fs::read_to_string(&output)?, "4\n8\n12\n");
//! # Ok::<_, Box<dyn std::error::Error>>(()) })?;
//! # Ok(()) }
//! ```
//!
//! # Semantics
//!
//! - **Records and sequence numbers.** Each record is a byte string (the
//!   connectors store one JSON value per record) with a sequence number,
//!   from 1, without gaps. [`ChannelStore::append`] writes a whole batch in
//!   one write transaction: when it returns, the batch is on disk (fsync).
//! - **Readers.** Each loading flow reads through a named **cursor** per
//!   channel (the *reader* name): the sequence number of the next record it
//!   has not yet had acknowledged. Readers are independent: two readers of
//!   one channel each get every record, in parallel.
//! - **At-least-once.** A [`LoadSource`]'s cursor is committed (durably)
//!   only by its [`ChannelAcker`], that is only once the runtime has
//!   acknowledged the batch (every sink confirmed it). After a crash or a
//!   stop, the reader resumes after the last acknowledged batch: nothing is
//!   lost, and only batches read but not yet acknowledged are read again.
//! - **Wake-ups.** A reader at the end of a channel sleeps until a record
//!   is appended in the same process, or until its poll interval passes
//!   (so it also sees appends made by another process in shared mode).
//! - **Retention.** Per channel, by record count and/or age
//!   ([`Retention`]); trimming runs inside each append (bounded work per
//!   append) or on demand ([`ChannelStore::trim`]). Readers never wait for
//!   a trim (redb readers read a snapshot). A reader whose cursor fell
//!   behind the oldest retained record skips to it: the records it missed
//!   are logged as a warning and counted in its cursor (`skipped` in
//!   [`ChannelStore::stats`]).
//! - **Processes.** By default a store file is opened by one process at a
//!   time (a second process gets [`ChannelError::InUse`]); within a process,
//!   opening the same path again returns the same store. With
//!   [`ChannelStoreOptions::shared`], several processes may open it at once
//!   (slower commits).

mod broker;
mod error;
mod sink;
mod source;
mod stats;
mod store;

pub use broker::{BROKER_KEYS, BrokerChannel};
#[cfg_attr(not(any(feature = "nats", feature = "redis")), allow(unused_imports))]
pub(crate) use broker::{ChannelSink, DrainAfter, from_settings as broker_from_settings};
#[cfg(feature = "nats")]
pub use broker::{NatsChannel, NatsChannelConfig};
#[cfg(feature = "redis")]
pub use broker::{RedisChannel, RedisChannelConfig};
pub use error::ChannelError;
pub use sink::{RawSaveSink, SaveSink};
pub use source::{ChannelAck, ChannelAcker, LoadOptions, LoadSource, RawLoadSource};
pub use stats::{ChannelStats, ReaderStats, StoreStats};
pub use store::{
    AppendInfo, ChannelStore, ChannelStoreOptions, Cursor, ReadInfo, RecordBatch, RecordBuffer,
    StartAt,
};

use std::time::Duration;

/// Longest channel or reader name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// How much of a channel to keep. Without limits (the default), a channel
/// keeps every record.
///
/// Both limits may be set; a record is removed as soon as either says so.
/// Age is measured from the time its batch was appended.
///
/// ```
/// use std::time::Duration;
/// use syncflow::channel::Retention;
///
/// let keep = Retention::default()
///     .max_records(1_000_000)
///     .max_age(Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(keep.records_limit(), Some(1_000_000));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    max_records: Option<u64>,
    max_age: Option<Duration>,
}

impl Retention {
    /// Keeps everything.
    pub const UNLIMITED: Retention = Retention {
        max_records: None,
        max_age: None,
    };

    /// Keeps at most the `n` newest records (`n` ≥ 1).
    pub fn max_records(mut self, n: u64) -> Self {
        self.max_records = Some(n);
        self
    }

    /// Removes records appended more than `age` ago (at least 1 ms).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The record limit, if any.
    pub fn records_limit(&self) -> Option<u64> {
        self.max_records
    }

    /// The age limit, if any.
    pub fn age_limit(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether nothing is ever removed.
    pub fn is_unlimited(&self) -> bool {
        self.max_records.is_none() && self.max_age.is_none()
    }

    pub(crate) fn check(&self, channel: &str) -> Result<(), ChannelError> {
        let problem = if self.max_records == Some(0) {
            "`max_records` is 0, which would keep nothing; use at least 1"
        } else if self.max_age.is_some_and(|a| a.as_millis() == 0) {
            "`max_age` is shorter than 1 ms, which would keep nothing; use at least 1 ms"
        } else {
            return Ok(());
        };
        Err(ChannelError::Retention {
            channel: channel.to_string(),
            problem,
        })
    }

    /// Stored form: 0 means "no limit" (a limit of 0 is refused by `check`).
    pub(crate) fn encode(&self) -> (u64, u64) {
        (
            self.max_records.unwrap_or(0),
            self.max_age
                .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
        )
    }

    pub(crate) fn decode(max_records: u64, max_age_ms: u64) -> Self {
        Retention {
            max_records: (max_records > 0).then_some(max_records),
            max_age: (max_age_ms > 0).then(|| Duration::from_millis(max_age_ms)),
        }
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.max_records, self.max_age) {
            (None, None) => f.write_str("all"),
            (Some(n), None) => write!(f, "{n} records"),
            (None, Some(age)) => write!(f, "{}", stats::human_duration(age)),
            (Some(n), Some(age)) => write!(f, "{n} records, {}", stats::human_duration(age)),
        }
    }
}

/// Whether a name is a valid channel or reader name: 1 to
/// [`MAX_NAME_LEN`] ASCII letters, digits, `_`, `-` and `.`, starting with
/// a letter or digit.
pub fn check_name(kind: &'static str, name: &str) -> Result<(), ChannelError> {
    let problem = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!("is {} bytes long (at most {MAX_NAME_LEN})", name.len())
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        format!("contains {c:?}")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "does not start with a letter or digit".to_string()
    } else {
        return Ok(());
    };
    Err(ChannelError::InvalidName {
        kind,
        name: name.to_string(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_reason() {
        for good in ["orders", "a", "orders.v2", "EU-orders_2026", "9lives"] {
            check_name("channel", good).unwrap();
        }
        let cases = [
            ("", "is empty"),
            ("a b", "contains ' '"),
            ("ä", "contains 'ä'"),
            ("a/b", "contains '/'"),
            ("-x", "does not start with a letter or digit"),
            (".hidden", "does not start with a letter or digit"),
        ];
        for (bad, why) in cases {
            let err = check_name("reader", bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.starts_with("invalid reader name"), "{err}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let err = check_name("channel", &long).unwrap_err().to_string();
        assert!(err.contains("129 bytes long"), "{err}");
        check_name("channel", &"x".repeat(MAX_NAME_LEN)).unwrap();
    }

    #[test]
    fn retention_round_trips_and_refuses_zero() {
        let r = Retention::default()
            .max_records(5)
            .max_age(Duration::from_secs(60));
        let (n, age) = r.encode();
        assert_eq!(Retention::decode(n, age), r);
        assert_eq!(Retention::decode(0, 0), Retention::UNLIMITED);
        assert_eq!(r.to_string(), "5 records, 1m");
        let err = Retention::default().max_records(0).check("c").unwrap_err();
        assert!(err.to_string().contains("use at least 1"), "{err}");
        let err = Retention::default()
            .max_age(Duration::from_micros(10))
            .check("c")
            .unwrap_err();
        assert!(err.to_string().contains("at least 1 ms"), "{err}");
    }
}
