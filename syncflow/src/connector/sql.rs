//! What the SQL sinks ([`PostgresSink`](super::postgres::PostgresSink),
//! [`MysqlSink`](super::mysql_sink::MysqlSink)) share: their options, and
//! the batching of messages into keyed row changes.
//!
//! A sink takes plain JSON objects (one column per field: an upsert) or
//! [`ChangeEvent`](crate::cdc::ChangeEvent) envelopes (`c`, `u`, `r`: an
//! upsert of `after`; `d`: a delete by the key in `before`). Between two
//! flushes, the changes are collected **per primary key**: several changes
//! of one row collapse into the one change that has the same effect (two
//! upserts merge their columns, the later value winning; a delete after an
//! upsert is a delete; an upsert after a delete deletes, then inserts). A
//! flush then writes one multi-row statement per set of columns, all in one
//! transaction. Upserts and deletes by key are idempotent: replaying a batch
//! after a crash leaves exactly the same rows.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use super::netutil::Outage;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ConnectorError, JsonLinesSink, Sink};
use crate::runtime::DeadLetter;

/// What the messages given to a SQL sink are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// A message with a CDC `op` code, a `source` object and `before` or
    /// `after` is a change event; any other object is a row (default).
    #[default]
    Auto,
    /// Every message is a row: its fields are columns (an upsert).
    Rows,
    /// Every message is a [`ChangeEvent`](crate::cdc::ChangeEvent) envelope.
    Cdc,
}

/// What a SQL sink does with a field that is not a column of its table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownColumns {
    /// The message is rejected (dead-lettered) with an error naming the
    /// field and the table (default).
    #[default]
    Reject,
    /// The field is ignored.
    Ignore,
}

/// What a SQL sink does with a change event that carries no row
/// (`op: t`, a truncate, or `op: ddl`, a schema change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoRowEvents {
    /// Skipped (default).
    #[default]
    Ignore,
    /// Truncates: every row of the table is deleted, in the flush's
    /// transaction, before the changes that followed the event. For `ddl`
    /// events this is refused when the sink is created: a schema change of
    /// one database cannot be replayed on another.
    Apply,
    /// Rejected (dead-lettered) like a bad row.
    Reject,
}

/// How a lost connection is retried.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait after a failure, in milliseconds (default 100).
    #[serde(default = "RetryConfig::default_initial_ms")]
    pub initial_ms: u64,
    /// Longest wait between two attempts, in milliseconds (default 5000);
    /// waits double up to it, each shortened at random by up to half.
    #[serde(default = "RetryConfig::default_max_ms")]
    pub max_ms: u64,
    /// Attempts before the operation fails and the run stops (0, the
    /// default: retry until the server is back).
    #[serde(default)]
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_ms: Self::default_initial_ms(),
            max_ms: Self::default_max_ms(),
            max_attempts: 0,
        }
    }
}

impl RetryConfig {
    fn default_initial_ms() -> u64 {
        100
    }
    fn default_max_ms() -> u64 {
        5000
    }

    /// The same backoff as a retry policy (what the connectors' outage
    /// tracker runs on).
    pub(crate) fn to_retry(&self) -> crate::policy::Retry {
        let max = Duration::from_millis(self.max_ms.max(1));
        crate::policy::Retry::new(if self.max_attempts == 0 {
            u32::MAX
        } else {
            self.max_attempts
        })
        .with_initial_backoff(Duration::from_millis(self.initial_ms).min(max))
        .with_max_backoff(max)
        .with_multiplier(2.0)
        .with_jitter(crate::policy::Jitter::EQUAL)
    }

    /// Tracks the outages of the connection to `target` with this backoff.
    pub(crate) fn outage(&self, connector: &'static str, target: &str) -> Outage {
        Outage::new(connector, target).retry(self.to_retry())
    }
}

/// The options of the SQL sinks that say how messages become row changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct IngestOptions {
    pub(crate) input: InputFormat,
    pub(crate) unknown_columns: UnknownColumns,
    pub(crate) on_truncate: NoRowEvents,
    pub(crate) on_ddl: NoRowEvents,
}

/// Shapes (sets of columns) remembered across flushes, at most.
const MAX_SHAPES: usize = 1024;

/// A column of a sink's table.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// Its name.
    pub(crate) name: String,
    /// Its name as a JSON string (with quotes), for building JSON rows.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) json_name: String,
    /// Its SQL type, for messages.
    pub(crate) type_name: String,
    /// Whether values can be written to it (not a generated column).
    pub(crate) writable: bool,
}

/// A sink's table, as read from the database's catalog.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// `schema.table` (or `db.table`), for messages.
    pub(crate) display: String,
    pub(crate) columns: Vec<Column>,
    /// The primary key's columns (indexes into `columns`), in key order.
    pub(crate) key: Vec<usize>,
    by_name: HashMap<String, usize>,
}

impl Table {
    /// A table of these columns, keyed by the columns named in `key`.
    pub(crate) fn new(
        display: String,
        columns: Vec<Column>,
        key: &[String],
    ) -> Result<Table, String> {
        let by_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        if key.is_empty() {
            return Err(format!(
                "table `{display}` has no primary key; add one, or name the key columns in the sink's `key` option (they need a unique index)"
            ));
        }
        let key = key
            .iter()
            .map(|k| {
                by_name.get(k).copied().ok_or_else(|| {
                    format!(
                        "key column `{k}` is not a column of table `{display}` (columns: {})",
                        column_list(&columns)
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Table {
            display,
            columns,
            key,
            by_name,
        })
    }

    fn column(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn is_key(&self, column: usize) -> bool {
        self.key.contains(&column)
    }
}

fn column_list(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    names.join(", ")
}

/// Turns a column's JSON value into what the sink's database client sends.
pub(crate) trait CellEncoder {
    /// A value ready to be sent.
    type Value: Clone;
    /// Converts `raw` (the value's JSON text, found at `at` in the
    /// collector's input buffer) for column `column`; the error says why the
    /// value does not fit the column.
    fn encode(&mut self, column: usize, raw: &str, at: Range<u32>) -> Result<Self::Value, String>;
}

/// One column's value in a row change.
#[derive(Debug, Clone)]
pub(crate) struct Cell<V> {
    pub(crate) column: u32,
    pub(crate) value: V,
}

/// What a collected row change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Insert or update the row with its cells; with `delete_first`, the row
    /// is deleted first (its columns not in the cells get their defaults).
    Upsert { delete_first: bool },
    /// Delete the row; its cells are the key.
    Delete,
}

/// One collected row change: the last state of one primary key.
#[derive(Debug, Clone)]
pub(crate) struct RowChange {
    pub(crate) change: Change,
    /// Its cells, sorted by column: a range of [`Collector::cells`].
    pub(crate) cells: Range<u32>,
    /// Its set of columns (an index of [`Collector::shape_columns`]).
    pub(crate) shape: u32,
    /// The key's bytes: a range of the key buffer.
    key: Range<u32>,
    /// The last message that changed it: a range of [`Collector::inputs`].
    pub(crate) input: Range<u32>,
    /// That message's number among the sink's inputs (from 1).
    pub(crate) position: u64,
}

/// A message the sink could not apply.
#[derive(Debug, Clone)]
pub(crate) struct Reject {
    pub(crate) position: u64,
    pub(crate) error: String,
    pub(crate) input: String,
}

/// A field of a JSON object: its name and its value's JSON text.
#[derive(Debug, Clone)]
struct Field {
    /// A range of the input buffer, or (when the name has escapes) an
    /// index of the owned names.
    name: FieldName,
    value: Range<u32>,
}

#[derive(Debug, Clone)]
enum FieldName {
    At(Range<u32>),
    Owned(usize),
}

/// Collects the row changes of the messages written between two flushes,
/// one per primary key.
pub(crate) struct Collector<V> {
    /// The JSON text of every message collected.
    pub(crate) inputs: String,
    pub(crate) cells: Vec<Cell<V>>,
    pub(crate) rows: Vec<RowChange>,
    /// Delete every row of the table before applying `rows`.
    pub(crate) truncate: bool,
    pub(crate) rejects: Vec<Reject>,
    /// The columns of each shape (set of columns), in table order.
    pub(crate) shape_columns: Vec<Vec<u32>>,
    shapes: HashMap<Vec<u64>, u32>,
    keys: Vec<u8>,
    index: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    // Scratch space, reused.
    fields: Vec<Field>,
    sub_fields: Vec<Field>,
    owned_names: Vec<String>,
    scratch_cells: Vec<Cell<V>>,
    shape_bits: Vec<u64>,
    key_raw: Vec<Option<Range<u32>>>,
    key_scratch: Vec<u8>,
    encoded: Vec<u8>,
    /// Messages seen so far (positions of rejects).
    seen: u64,
}

impl<V: Clone> Default for Collector<V> {
    fn default() -> Self {
        Collector {
            inputs: String::new(),
            cells: Vec::new(),
            rows: Vec::new(),
            truncate: false,
            rejects: Vec::new(),
            shape_columns: Vec::new(),
            shapes: HashMap::new(),
            keys: Vec::new(),
            index: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            fields: Vec::new(),
            sub_fields: Vec::new(),
            owned_names: Vec::new(),
            scratch_cells: Vec::new(),
            shape_bits: Vec::new(),
            key_raw: Vec::new(),
            key_scratch: Vec::new(),
            encoded: Vec::new(),
            seen: 0,
        }
    }
}

/// A message's verdict before it is collected.
enum Parsed {
    Row,
    Event {
        op: crate::cdc::CdcOp,
        before: Option<Range<u32>>,
        after: Option<Range<u32>>,
    },
}

impl<V: Clone> Collector<V> {
    /// Whether nothing was collected since the last [`Collector::clear`].
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.rejects.is_empty() && !self.truncate
    }

    /// Forgets everything collected, keeping the allocations (and the
    /// shapes, which later batches reuse). Returns `true` when the shapes
    /// were forgotten too (there were too many): statements cached by shape
    /// must then be forgotten.
    pub(crate) fn clear(&mut self) -> bool {
        self.inputs.clear();
        self.cells.clear();
        self.rows.clear();
        self.truncate = false;
        self.rejects.clear();
        self.keys.clear();
        self.index.clear();
        if self.shapes.len() > MAX_SHAPES {
            self.shapes.clear();
            self.shape_columns.clear();
            return true;
        }
        false
    }

    /// The cells of a row change.
    pub(crate) fn row_cells(&self, row: &RowChange) -> &[Cell<V>] {
        &self.cells[row.cells.start as usize..row.cells.end as usize]
    }

    /// The message text of a row change.
    pub(crate) fn row_input(&self, row: &RowChange) -> &str {
        &self.inputs[row.input.start as usize..row.input.end as usize]
    }

    /// Adds one message: encodes it as JSON, then collects its row change
    /// (or rejects it, with the reason).
    pub(crate) fn add<T: Serialize, E: CellEncoder<Value = V>>(
        &mut self,
        item: &T,
        table: &Table,
        options: &IngestOptions,
        encoder: &mut E,
    ) {
        self.seen += 1;
        let start = self.inputs.len();
        self.encoded.clear();
        let encoded = serde_json::to_writer(&mut self.encoded, item)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                // serde_json writes UTF-8 only; checked over this message alone.
                std::str::from_utf8(&self.encoded).map_err(|e| e.to_string())
            });
        match encoded {
            Ok(text) => self.inputs.push_str(text),
            Err(error) => {
                self.reject_text(format!("cannot encode the message as JSON: {error}"), "");
                return;
            }
        }
        let input = start as u32..self.inputs.len() as u32;
        if let Err(error) = self.collect(input.clone(), table, options, encoder) {
            let text = self.inputs[start..].to_string();
            self.inputs.truncate(start);
            self.reject_text(error, &text);
        }
    }

    fn reject_text(&mut self, error: String, input: &str) {
        self.rejects.push(Reject {
            position: self.seen,
            error,
            input: input.to_string(),
        });
    }

    /// Rejects an already collected row (the database refused it).
    pub(crate) fn reject_row(&mut self, row: usize, error: String) {
        let r = &self.rows[row];
        let input = self.row_input(r).to_string();
        self.rejects.push(Reject {
            position: r.position,
            error,
            input,
        });
    }

    fn collect<E: CellEncoder<Value = V>>(
        &mut self,
        input: Range<u32>,
        table: &Table,
        options: &IngestOptions,
        encoder: &mut E,
    ) -> Result<(), String> {
        let mut fields = std::mem::take(&mut self.fields);
        let result = match self.parse_top(input.clone(), &mut fields, table, options) {
            Ok(Parsed::Row) => self
                .cells_of(&fields, table, options, encoder, false)
                .and_then(|()| {
                    self.put(
                        Change::Upsert {
                            delete_first: false,
                        },
                        table,
                        input,
                    )
                }),
            Ok(Parsed::Event { op, before, after }) => {
                self.apply_event(op, before, after, input, table, options, encoder)
            }
            Err(e) => Err(e),
        };
        self.fields = fields;
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_event<E: CellEncoder<Value = V>>(
        &mut self,
        op: crate::cdc::CdcOp,
        before: Option<Range<u32>>,
        after: Option<Range<u32>>,
        input: Range<u32>,
        table: &Table,
        options: &IngestOptions,
        encoder: &mut E,
    ) -> Result<(), String> {
        use crate::cdc::CdcOp;
        let mut fields = std::mem::take(&mut self.sub_fields);
        let result = (|| match op {
            CdcOp::Insert | CdcOp::Update | CdcOp::Snapshot => {
                let Some(after) = after else {
                    return Err(format!(
                        "a change event with op `{}` has no `after` row; it cannot be applied to `{}`",
                        op.code(),
                        table.display
                    ));
                };
                // The old key of an update, when its `before` has one.
                let mut old = None;
                if op == CdcOp::Update
                    && let Some(before) = before
                {
                    self.parse_object(before, &mut fields, "`before` row")?;
                    self.cells_of(&fields, table, options, encoder, true)?;
                    if self.key_raw.iter().all(Option::is_some) {
                        self.write_key(table)?;
                        old = Some((self.key_scratch.clone(), self.scratch_cells.clone()));
                    }
                }
                self.parse_object(after, &mut fields, "`after` row")?;
                self.cells_of(&fields, table, options, encoder, false)?;
                if let Some((old_key, old_cells)) = old {
                    self.write_key(table)?;
                    // An update that changed the key deletes the old row.
                    if old_key != self.key_scratch {
                        let new_cells = std::mem::replace(&mut self.scratch_cells, old_cells);
                        let new_key = std::mem::replace(&mut self.key_scratch, old_key);
                        self.put_keyed(Change::Delete, input.clone());
                        self.scratch_cells = new_cells;
                        self.key_scratch = new_key;
                        self.put_keyed(
                            Change::Upsert {
                                delete_first: false,
                            },
                            input,
                        );
                        return Ok(());
                    }
                }
                self.put(
                    Change::Upsert {
                        delete_first: false,
                    },
                    table,
                    input,
                )
            }
            CdcOp::Delete => {
                let Some(before) = before else {
                    return Err(format!(
                        "a delete event has no `before` row, so its key is unknown; it cannot be applied to `{}` (a PostgreSQL source table needs a replica identity)",
                        table.display
                    ));
                };
                self.parse_object(before, &mut fields, "`before` row")?;
                self.cells_of(&fields, table, options, encoder, true)?;
                self.put(Change::Delete, table, input)
            }
            CdcOp::Truncate => match options.on_truncate {
                NoRowEvents::Ignore => Ok(()),
                NoRowEvents::Reject => Err(format!(
                    "a truncate event (op `t`) was rejected: the sink of `{}` has `on_truncate: reject`",
                    table.display
                )),
                NoRowEvents::Apply => {
                    // Everything before it is void: the flush deletes every
                    // row first, then applies what follows.
                    self.rows.clear();
                    self.cells.clear();
                    self.keys.clear();
                    self.index.clear();
                    self.truncate = true;
                    Ok(())
                }
            },
            CdcOp::Ddl => match options.on_ddl {
                NoRowEvents::Ignore | NoRowEvents::Apply => Ok(()),
                NoRowEvents::Reject => Err(format!(
                    "a schema change event (op `ddl`) was rejected: the sink of `{}` has `on_ddl: reject`",
                    table.display
                )),
            },
        })();
        self.sub_fields = fields;
        result
    }

    /// Reads the top-level object of a message into `fields` and decides
    /// whether it is a row or a change event.
    fn parse_top(
        &mut self,
        input: Range<u32>,
        fields: &mut Vec<Field>,
        table: &Table,
        options: &IngestOptions,
    ) -> Result<Parsed, String> {
        self.parse_object(input, fields, "message")?;
        if options.input == InputFormat::Rows {
            return Ok(Parsed::Row);
        }
        let mut op = None;
        let mut op_text = None;
        let (mut before, mut after, mut source) = (None, None, false);
        for f in fields.iter() {
            let raw = &self.inputs[f.value.start as usize..f.value.end as usize];
            match self.name_of(&f.name) {
                "op" => {
                    op_text = Some(raw.to_string());
                    op = serde_json::from_str::<&str>(raw)
                        .ok()
                        .and_then(crate::cdc::CdcOp::from_code);
                }
                "before" if raw != "null" => before = Some(f.value.clone()),
                "after" if raw != "null" => after = Some(f.value.clone()),
                "source" => source = raw.starts_with('{'),
                _ => {}
            }
        }
        let is_event = options.input == InputFormat::Cdc
            || (op.is_some()
                && source
                && (before.is_some()
                    || after.is_some()
                    || matches!(
                        op,
                        Some(crate::cdc::CdcOp::Truncate | crate::cdc::CdcOp::Ddl)
                    ))
                && table.column("op").is_none());
        if !is_event {
            return Ok(Parsed::Row);
        }
        let Some(op) = op else {
            return Err(match op_text {
                None => "the message is not a change event: it has no `op` field (set the sink's `input` to `auto` or `rows` for plain rows)".to_string(),
                Some(t) => format!(
                    "change event with an unknown `op` {t}; expected one of c, u, d, r, t, ddl"
                ),
            });
        };
        Ok(Parsed::Event { op, before, after })
    }

    fn name_of<'a>(&'a self, name: &FieldName) -> &'a str {
        match name {
            FieldName::At(r) => &self.inputs[r.start as usize..r.end as usize],
            FieldName::Owned(i) => &self.owned_names[*i],
        }
    }

    /// Reads the JSON object at `at` of the input buffer into `fields`.
    fn parse_object(
        &mut self,
        at: Range<u32>,
        fields: &mut Vec<Field>,
        what: &str,
    ) -> Result<(), String> {
        fields.clear();
        self.owned_names.clear();
        let text = &self.inputs[at.start as usize..at.end as usize];
        let seed = ObjectSeed {
            base: text.as_ptr() as usize,
            offset: at.start,
            fields,
            owned: &mut self.owned_names,
        };
        let mut de = serde_json::Deserializer::from_str(text);
        seed.deserialize(&mut de)
            .and_then(|()| de.end())
            .map_err(|e| {
                if e.is_data() {
                    format!(
                        "the {what} is not a JSON object: a row must be an object of column values (or a change event)"
                    )
                } else {
                    format!("the {what} is not valid JSON: {e}")
                }
            })
    }

    /// Turns fields into cells (into `scratch_cells`, sorted by column) and
    /// notes where the key columns' values are (`key_raw`). With `key_only`,
    /// fields that are not key columns are skipped.
    fn cells_of<E: CellEncoder<Value = V>>(
        &mut self,
        fields: &[Field],
        table: &Table,
        options: &IngestOptions,
        encoder: &mut E,
        key_only: bool,
    ) -> Result<(), String> {
        let mut cells = std::mem::take(&mut self.scratch_cells);
        cells.clear();
        self.key_raw.clear();
        self.key_raw.resize(table.key.len(), None);
        let result = (|| {
            for f in fields {
                let name = self.name_of(&f.name);
                let Some(column) = table.column(name) else {
                    if key_only || options.unknown_columns == UnknownColumns::Ignore {
                        continue;
                    }
                    return Err(format!(
                        "field `{name}` is not a column of table `{}` (columns: {}); remove it from the message, or set the sink's `unknown_columns: ignore`",
                        table.display,
                        column_list(&table.columns)
                    ));
                };
                let key_index = table.key.iter().position(|&k| k == column);
                if key_only && key_index.is_none() {
                    continue;
                }
                let col = &table.columns[column];
                if !col.writable {
                    if options.unknown_columns == UnknownColumns::Ignore {
                        continue;
                    }
                    return Err(format!(
                        "column `{name}` of table `{}` is generated and cannot be written; remove it from the message, or set the sink's `unknown_columns: ignore`",
                        table.display
                    ));
                }
                let raw = &self.inputs[f.value.start as usize..f.value.end as usize];
                let value = encoder.encode(column, raw, f.value.clone()).map_err(|e| {
                    format!(
                        "column `{name}` ({}) of table `{}` cannot take {}: {e}",
                        col.type_name,
                        table.display,
                        shorten(raw)
                    )
                })?;
                if let Some(k) = key_index {
                    self.key_raw[k] = Some(f.value.clone());
                }
                cells.push(Cell {
                    column: column as u32,
                    value,
                });
            }
            // Sorted by column; of a repeated field, the last value wins.
            cells.reverse();
            cells.sort_by_key(|c| c.column);
            cells.dedup_by_key(|c| c.column);
            Ok(())
        })();
        self.scratch_cells = cells;
        result
    }

    /// Writes the key of the scratch cells into `key_scratch`: each key
    /// column's JSON text (strings without their quotes), separated by 0x1f.
    fn write_key(&mut self, table: &Table) -> Result<(), String> {
        self.key_scratch.clear();
        for (i, &k) in table.key.iter().enumerate() {
            let name = &table.columns[k].name;
            let Some(at) = self.key_raw[i].clone() else {
                return Err(format!(
                    "the row has no value for key column `{name}` of table `{}`",
                    table.display
                ));
            };
            let raw = &self.inputs[at.start as usize..at.end as usize];
            if raw == "null" {
                return Err(format!(
                    "key column `{name}` of table `{}` is null",
                    table.display
                ));
            }
            if i > 0 {
                self.key_scratch.push(0x1f);
            }
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .filter(|r| !r.contains('\\'));
            self.key_scratch
                .extend_from_slice(unquoted.unwrap_or(raw).as_bytes());
        }
        Ok(())
    }

    /// Collects the scratch cells as a change of their key.
    fn put(&mut self, change: Change, table: &Table, input: Range<u32>) -> Result<(), String> {
        self.write_key(table)?;
        self.put_keyed(change, input);
        Ok(())
    }

    /// Collects the scratch cells as a change of the key in `key_scratch`.
    fn put_keyed(&mut self, change: Change, input: Range<u32>) {
        let hash = self.hasher.hash_one(&self.key_scratch[..]);
        let (rows, keys, key) = (&self.rows, &self.keys, &self.key_scratch[..]);
        let found = self
            .index
            .find(hash, |&i| {
                let r = &rows[i as usize].key;
                &keys[r.start as usize..r.end as usize] == key
            })
            .copied();
        let position = self.seen;
        match found {
            None => {
                let key_start = self.keys.len() as u32;
                self.keys.extend_from_slice(&self.key_scratch);
                let cells = self.push_scratch_cells();
                let shape = self.shape_of(cells.clone());
                let index = self.rows.len() as u32;
                self.rows.push(RowChange {
                    change,
                    cells,
                    shape,
                    key: key_start..self.keys.len() as u32,
                    input,
                    position,
                });
                let (rows, keys, hasher) = (&self.rows, &self.keys, &self.hasher);
                self.index.insert_unique(hash, index, |&i| {
                    let r = &rows[i as usize].key;
                    hasher.hash_one(&keys[r.start as usize..r.end as usize])
                });
            }
            Some(i) => {
                let previous = self.rows[i as usize].clone();
                let (change, cells) = match (previous.change, change) {
                    // Upsert after upsert: the columns merge, later values win.
                    (Change::Upsert { delete_first }, Change::Upsert { .. }) => (
                        Change::Upsert { delete_first },
                        self.merge_cells(previous.cells),
                    ),
                    // Upsert after delete: delete, then insert.
                    (Change::Delete, Change::Upsert { .. }) => (
                        Change::Upsert { delete_first: true },
                        self.push_scratch_cells(),
                    ),
                    (_, Change::Delete) => (Change::Delete, self.push_scratch_cells()),
                };
                let shape = self.shape_of(cells.clone());
                let row = &mut self.rows[i as usize];
                row.change = change;
                row.cells = cells;
                row.shape = shape;
                row.input = input;
                row.position = position;
            }
        }
    }

    fn push_scratch_cells(&mut self) -> Range<u32> {
        let start = self.cells.len() as u32;
        self.cells.extend(self.scratch_cells.iter().cloned());
        start..self.cells.len() as u32
    }

    /// Appends the union of an earlier row's cells and the scratch cells
    /// (which win), sorted by column.
    fn merge_cells(&mut self, earlier: Range<u32>) -> Range<u32> {
        let start = self.cells.len();
        let (mut a, mut b) = (earlier.start as usize, 0);
        let (a_end, new) = (earlier.end as usize, &self.scratch_cells);
        while a < a_end || b < new.len() {
            let take_new = match (a < a_end, b < new.len()) {
                (true, true) => {
                    let (ca, cb) = (self.cells[a].column, new[b].column);
                    if ca == cb {
                        a += 1;
                        true
                    } else {
                        cb < ca
                    }
                }
                (false, _) => true,
                (true, false) => false,
            };
            if take_new {
                self.cells.push(new[b].clone());
                b += 1;
            } else {
                let cell = self.cells[a].clone();
                self.cells.push(cell);
                a += 1;
            }
        }
        start as u32..self.cells.len() as u32
    }

    /// The shape (set of columns) of a range of cells.
    fn shape_of(&mut self, cells: Range<u32>) -> u32 {
        let columns = &self.cells[cells.start as usize..cells.end as usize];
        self.shape_bits.clear();
        for c in columns {
            let (word, bit) = (c.column as usize / 64, c.column % 64);
            if self.shape_bits.len() <= word {
                self.shape_bits.resize(word + 1, 0);
            }
            self.shape_bits[word] |= 1 << bit;
        }
        if let Some(&id) = self.shapes.get(&self.shape_bits[..]) {
            return id;
        }
        let id = self.shape_columns.len() as u32;
        self.shape_columns
            .push(columns.iter().map(|c| c.column).collect());
        self.shapes.insert(self.shape_bits.clone(), id);
        id
    }

    /// The rows to upsert, grouped by shape, in first-seen order within
    /// each group; and the rows to delete first.
    pub(crate) fn plan(&self) -> Plan {
        let mut deletes = Vec::new();
        let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<u32, usize> = HashMap::new();
        for (i, row) in self.rows.iter().enumerate() {
            match row.change {
                Change::Delete => deletes.push(i),
                Change::Upsert { delete_first } => {
                    if delete_first {
                        deletes.push(i);
                    }
                    let g = *group_of.entry(row.shape).or_insert_with(|| {
                        groups.push((row.shape, Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(i);
                }
            }
        }
        Plan { deletes, groups }
    }
}

/// What a flush writes: rows to delete (by key), then rows to upsert by
/// shape. Indexes are of [`Collector::rows`].
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) deletes: Vec<usize>,
    pub(crate) groups: Vec<(u32, Vec<usize>)>,
}

/// Shortens a value for an error message.
fn shorten(raw: &str) -> String {
    if raw.len() <= 80 {
        return format!("`{raw}`");
    }
    let mut end = 77;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    format!("`{}...`", &raw[..end])
}

/// Reads a JSON object's fields as ranges of the input buffer.
struct ObjectSeed<'s> {
    /// Address of the text being parsed, and its offset in the buffer.
    base: usize,
    offset: u32,
    fields: &'s mut Vec<Field>,
    owned: &'s mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = |s: &str| -> Range<u32> {
            let start = (s.as_ptr() as usize - self.base) as u32 + self.offset;
            start..start + s.len() as u32
        };
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value: &'de RawValue = map.next_value()?;
            let name = match name {
                std::borrow::Cow::Borrowed(s) => FieldName::At(at(s)),
                std::borrow::Cow::Owned(s) => {
                    self.owned.push(s);
                    FieldName::Owned(self.owned.len() - 1)
                }
            };
            self.fields.push(Field {
                name,
                value: at(value.get()),
            });
        }
        Ok(())
    }
}

/// A field name, borrowed from the input when it has no escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = std::borrow::Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = std::borrow::Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(v.to_string()))
    }
}

/// Where a SQL sink's rejected messages go: a dead-letter file of
/// [`DeadLetter`] lines when one is configured, and a `warn` log line each.
pub(crate) struct Rejects {
    file: Option<JsonLinesSink>,
    sink: String,
    stage: &'static str,
    letters: Vec<DeadLetter>,
    /// Messages rejected so far.
    pub(crate) total: u64,
}

impl Rejects {
    /// Opens (appends to) the dead-letter file, if any.
    pub(crate) fn open(
        path: Option<&PathBuf>,
        sink: String,
        stage: &'static str,
    ) -> Result<Rejects, ConnectorError> {
        let file = path.map(JsonLinesSink::append).transpose()?;
        Ok(Rejects {
            file,
            sink,
            stage,
            letters: Vec::new(),
            total: 0,
        })
    }

    /// Logs the rejected messages and makes them durable in the
    /// dead-letter file; empties `rejects`.
    pub(crate) async fn write(&mut self, rejects: &mut Vec<Reject>) -> Result<(), ConnectorError> {
        if rejects.is_empty() {
            return Ok(());
        }
        self.letters.clear();
        for r in rejects.drain(..) {
            tracing::warn!(
                sink = %self.sink,
                position = r.position,
                error = %r.error,
                "message rejected by the sink; dead-lettered"
            );
            self.letters.push(DeadLetter {
                source: self.sink.clone(),
                position: r.position,
                stage: self.stage.to_string(),
                step_index: None,
                error: r.error,
                input: r.input,
            });
        }
        self.total += self.letters.len() as u64;
        if let Some(file) = &mut self.file {
            Sink::<DeadLetter>::write(file, &self.letters).await?;
            Sink::<DeadLetter>::flush(file).await?;
        }
        Ok(())
    }
}

/// How a failed database operation is handled.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection is lost or unusable: reconnect, then try again.
    Connection(String),
    /// A transient conflict (deadlock, serialization failure): try again.
    Transient(String),
    /// The data of some row was refused (SQLSTATE classes 22 and 23): apply
    /// the rows one by one and reject those refused.
    Data(String),
    /// Anything else (missing table, permissions...): the flush fails.
    Fatal(String),
}

/// Classifies a SQLSTATE code.
pub(crate) fn classify_state(state: &str, message: String) -> Failure {
    match state.get(..2) {
        Some("08") => Failure::Connection(message),
        Some("22" | "23") => Failure::Data(message),
        Some("40") => Failure::Transient(message),
        Some("57") if state != "57014" => Failure::Connection(message),
        _ => Failure::Fatal(message),
    }
}

/// Quotes an identifier the SQL standard way (PostgreSQL).
#[cfg(feature = "postgres")]
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the raw JSON range of each value.
    struct Raw;
    impl CellEncoder for Raw {
        type Value = Range<u32>;
        fn encode(&mut self, _: usize, raw: &str, at: Range<u32>) -> Result<Range<u32>, String> {
            if raw == "\"bad\"" {
                return Err("bad value".into());
            }
            Ok(at)
        }
    }

    fn table() -> Table {
        let col = |n: &str| Column {
            name: n.into(),
            json_name: serde_json::to_string(n).unwrap(),
            type_name: "text".into(),
            writable: n != "gen",
        };
        Table::new(
            "public.t".into(),
            vec![col("id"), col("a"), col("b"), col("gen")],
            &["id".to_string()],
        )
        .unwrap()
    }

    fn rows(c: &Collector<Range<u32>>) -> Vec<(Change, String)> {
        c.rows
            .iter()
            .map(|r| {
                let cells: Vec<String> = c
                    .row_cells(r)
                    .iter()
                    .map(|cell| {
                        format!(
                            "{}={}",
                            cell.column,
                            &c.inputs[cell.value.start as usize..cell.value.end as usize]
                        )
                    })
                    .collect();
                (r.change, cells.join(","))
            })
            .collect()
    }

    fn add(c: &mut Collector<Range<u32>>, json: &str) {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        c.add(&v, &table(), &IngestOptions::default(), &mut Raw);
    }

    const UP: Change = Change::Upsert {
        delete_first: false,
    };

    #[test]
    fn collapses_changes_per_key_with_the_same_effect() {
        let mut c = Collector::default();
        add(&mut c, r#"{"id":1,"a":"x"}"#);
        add(&mut c, r#"{"id":2,"a":"y"}"#);
        add(&mut c, r#"{"id":"1","b":"z"}"#); // same key as 1
        add(&mut c, r#"{"op":"d","before":{"id":2},"source":{}}"#);
        add(&mut c, r#"{"op":"c","after":{"id":2,"b":"w"},"source":{}}"#);
        add(&mut c, r#"{"id":3,"a":"q"}"#);
        add(
            &mut c,
            r#"{"op":"d","before":{"id":3,"a":"q"},"source":{}}"#,
        );
        assert!(c.rejects.is_empty(), "{:?}", c.rejects);
        assert_eq!(
            rows(&c),
            vec![
                // The later message's key value ("1") is the one written.
                (UP, r#"0="1",1="x",2="z""#.to_string()),
                (
                    Change::Upsert { delete_first: true },
                    r#"0=2,2="w""#.to_string()
                ),
                (Change::Delete, "0=3".to_string()),
            ]
        );
        let plan = c.plan();
        assert_eq!(plan.deletes, vec![1, 2]);
        assert_eq!(plan.groups.len(), 2, "two shapes: (id,a,b) and (id,b)");
    }

    #[test]
    fn an_update_that_changes_the_key_deletes_the_old_row() {
        let mut c = Collector::default();
        add(
            &mut c,
            r#"{"op":"u","before":{"id":1,"a":"x"},"after":{"id":5,"a":"x"},"source":{}}"#,
        );
        assert_eq!(
            rows(&c),
            vec![
                (Change::Delete, "0=1".to_string()),
                (UP, r#"0=5,1="x""#.to_string())
            ]
        );
    }

    #[test]
    fn rejects_say_what_and_where() {
        let mut c = Collector::default();
        add(&mut c, r#"{"id":1,"nope":2}"#);
        add(&mut c, r#"{"a":2}"#);
        add(&mut c, r#"{"id":null}"#);
        add(&mut c, r#"[1]"#);
        add(&mut c, r#"{"id":1,"a":"bad"}"#);
        add(&mut c, r#"{"id":1,"gen":1}"#);
        add(&mut c, r#"{"op":"d","after":{"id":1},"source":{}}"#);
        add(&mut c, r#"{"id":4}"#);
        let errors: Vec<_> = c
            .rejects
            .iter()
            .map(|r| (r.position, r.error.as_str()))
            .collect();
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert!(
            errors[0].1.starts_with(
                "field `nope` is not a column of table `public.t` (columns: id, a, b, gen)"
            ),
            "{}",
            errors[0].1
        );
        assert_eq!(
            errors[1].1,
            "the row has no value for key column `id` of table `public.t`"
        );
        assert_eq!(errors[2].1, "key column `id` of table `public.t` is null");
        assert!(errors[3].1.contains("not a JSON object"));
        assert_eq!(
            errors[4].1,
            "column `a` (text) of table `public.t` cannot take `\"bad\"`: bad value"
        );
        assert!(errors[5].1.contains("generated"));
        assert!(errors[6].1.contains("no `before` row"));
        assert_eq!(c.rejects[0].input, r#"{"id":1,"nope":2}"#);
        assert_eq!(c.rejects[6].position, 7);
        assert_eq!(rows(&c), vec![(UP, "0=4".to_string())]);
    }

    #[test]
    fn truncate_voids_what_came_before() {
        let mut c = Collector::default();
        let opts = IngestOptions {
            on_truncate: NoRowEvents::Apply,
            ..Default::default()
        };
        for json in [r#"{"id":1}"#, r#"{"op":"t","source":{}}"#, r#"{"id":2}"#] {
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            c.add(&v, &table(), &opts, &mut Raw);
        }
        assert!(c.truncate);
        assert_eq!(rows(&c), vec![(UP, "0=2".to_string())]);
    }
}
