//! The change event envelope of the CDC sources (MySQL/MariaDB binlog,
//! PostgreSQL logical replication), close to Debezium's so that consumers can
//! migrate:
//!
//! ```json
//! {"op": "u",
//!  "before": {"id": 1, "qty": 2},
//!  "after":  {"id": 1, "qty": 3},
//!  "source": {"connector": "mysql", "db": "shop", "table": "orders",
//!             "pos": "mariadb-bin.000003:1234", "ts_ms": 1700000000000, "snapshot": false},
//!  "ts_ms": 1700000000123}
//! ```
//!
//! The toolbox's `cdc_filter` and `cdc_unwrap` read this envelope, and the
//! SQL sinks apply it (upsert for `c`, `u`, `r`; delete for `d`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One row change (or schema change) read from a database's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// What happened.
    pub op: CdcOp,
    /// The row before the change (updates and deletes), by column name.
    #[serde(default)]
    pub before: Option<Map<String, Value>>,
    /// The row after the change (inserts, updates, snapshot reads).
    #[serde(default)]
    pub after: Option<Map<String, Value>>,
    /// Where the change was read.
    pub source: ChangeSource,
    /// When syncflow read the change (milliseconds since the Unix epoch).
    pub ts_ms: u64,
    /// For `op: ddl`: the statement that changed the schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ddl: Option<String>,
}

/// Where a change was read: enough to find it in the database's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSource {
    /// `mysql` (MySQL and MariaDB) or `postgres`.
    pub connector: String,
    /// The database.
    pub db: String,
    /// The schema (PostgreSQL), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The table.
    pub table: String,
    /// The position in the log: `file:offset` of a binlog, or an LSN such
    /// as `0/16B3748`.
    pub pos: String,
    /// The GTID of the transaction, where the server has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gtid: Option<String>,
    /// When the database committed the change (milliseconds since the Unix
    /// epoch; for snapshot reads, when the snapshot started).
    pub ts_ms: u64,
    /// Whether the event was read by the initial snapshot.
    #[serde(default)]
    pub snapshot: bool,
}

/// A change operation. In flow files, written as its code (`c`) or a
/// readable name (`insert`, `create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CdcOp {
    /// `c`: a row was inserted. Also `insert`, `create`.
    #[serde(rename = "c", alias = "insert", alias = "create")]
    Insert,
    /// `u`: a row was updated. Also `update`.
    #[serde(rename = "u", alias = "update")]
    Update,
    /// `d`: a row was deleted. Also `delete`.
    #[serde(rename = "d", alias = "delete")]
    Delete,
    /// `r`: a row was read by an initial snapshot. Also `snapshot`, `read`.
    #[serde(rename = "r", alias = "snapshot", alias = "read")]
    Snapshot,
    /// `t`: a table was truncated (no row). Also `truncate`.
    #[serde(rename = "t", alias = "truncate")]
    Truncate,
    /// `ddl`: the schema changed; the event's `ddl` holds the statement and
    /// it carries no row. Also `schema_change`.
    #[serde(rename = "ddl", alias = "schema_change")]
    Ddl,
}

impl CdcOp {
    pub(crate) const ALL: [CdcOp; 6] = [
        CdcOp::Insert,
        CdcOp::Update,
        CdcOp::Delete,
        CdcOp::Snapshot,
        CdcOp::Truncate,
        CdcOp::Ddl,
    ];

    /// The code in envelopes: `c`, `u`, `d`, `r`, `t` or `ddl`.
    pub const fn code(self) -> &'static str {
        match self {
            CdcOp::Insert => "c",
            CdcOp::Update => "u",
            CdcOp::Delete => "d",
            CdcOp::Snapshot => "r",
            CdcOp::Truncate => "t",
            CdcOp::Ddl => "ddl",
        }
    }

    /// The readable name: `insert`, `update`, `delete`, `snapshot`,
    /// `truncate`, `schema_change`.
    pub const fn readable(self) -> &'static str {
        match self {
            CdcOp::Insert => "insert",
            CdcOp::Update => "update",
            CdcOp::Delete => "delete",
            CdcOp::Snapshot => "snapshot",
            CdcOp::Truncate => "truncate",
            CdcOp::Ddl => "schema_change",
        }
    }

    /// The operation of an envelope's `op` code.
    pub fn from_code(code: &str) -> Option<CdcOp> {
        CdcOp::ALL.into_iter().find(|op| op.code() == code)
    }

    pub(crate) const fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for CdcOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.readable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_with_debezium_codes() {
        let text = r#"{"op":"u","before":{"id":1,"qty":2},"after":{"id":1,"qty":3},"source":{"connector":"mysql","db":"shop","table":"orders","pos":"mariadb-bin.000003:1234","ts_ms":1700000000000,"snapshot":false},"ts_ms":1700000000123}"#;
        let event: ChangeEvent = serde_json::from_str(text).unwrap();
        assert_eq!(event.op, CdcOp::Update);
        assert_eq!(event.after.as_ref().unwrap()["qty"], 3);
        assert_eq!(serde_json::to_string(&event).unwrap(), text);
        let ddl: ChangeEvent = serde_json::from_str(
            r#"{"op":"ddl","source":{"connector":"mysql","db":"shop","table":"orders","pos":"f:4","ts_ms":1},"ts_ms":2,"ddl":"ALTER TABLE orders ADD note TEXT"}"#,
        )
        .unwrap();
        assert_eq!((ddl.op, ddl.before, ddl.after), (CdcOp::Ddl, None, None));
        assert_eq!(CdcOp::from_code("ddl"), Some(CdcOp::Ddl));
    }
}
