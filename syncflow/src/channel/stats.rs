//! What a store holds: [`StoreStats`], printed as a table.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::Retention;

/// Every channel of a store, from [`ChannelStore::stats`](super::ChannelStore::stats).
///
/// `Display` prints a table (what `syncflow channels` shows):
///
/// ```text
/// channel store /data/channels.redb
/// CHANNEL  RECORDS  FIRST  NEXT  BYTES    RETENTION    READER   POSITION  LAG  SKIPPED
/// orders   1000     1      1001  199 KiB  all          audit    1001      0    0
///                                                      billing  901       100  0
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// The store file.
    pub path: PathBuf,
    /// The channels, by name.
    pub channels: Vec<ChannelStats>,
}

/// One channel: its records and its readers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// The channel's name.
    pub name: String,
    /// Records retained (`next - first`).
    pub length: u64,
    /// Sequence number of the oldest retained record (`next` when empty).
    pub first: u64,
    /// Sequence number the next record appended will get.
    pub next: u64,
    /// Bytes on disk for the retained records (4 bytes of framing per
    /// record included; a partly trimmed chunk counts whole).
    pub bytes: u64,
    /// What the channel keeps.
    pub retention: Retention,
    /// Its readers, by name.
    pub readers: Vec<ReaderStats>,
}

/// One reader of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReaderStats {
    /// The reader's name.
    pub name: String,
    /// The next sequence number it has not had acknowledged (its cursor).
    pub position: u64,
    /// Records retained that it has not yet had acknowledged:
    /// `next - position` (from `first` if the cursor fell behind it).
    pub lag: u64,
    /// Records it lost to retention, over its lifetime.
    pub skipped: u64,
}

impl StoreStats {
    /// The statistics of `channels`, kept at `path` (a store file, or a
    /// broker's address for a broker channel).
    pub fn new(path: PathBuf, channels: Vec<ChannelStats>) -> Self {
        StoreStats { path, channels }
    }

    /// The statistics of one channel.
    pub fn channel(&self, name: &str) -> Option<&ChannelStats> {
        self.channels.iter().find(|c| c.name == name)
    }
}

impl ChannelStats {
    /// The statistics of one reader.
    pub fn reader(&self, name: &str) -> Option<&ReaderStats> {
        self.readers.iter().find(|r| r.name == name)
    }
}

/// `1.5 KiB`, `12 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// `90s`, `15m`, `36h`, `7d`: the largest unit that divides the duration.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for StoreStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "channel store {}", self.path.display())?;
        if self.channels.is_empty() {
            return writeln!(f, "no channels");
        }
        let header = [
            "CHANNEL",
            "RECORDS",
            "FIRST",
            "NEXT",
            "BYTES",
            "RETENTION",
            "READER",
            "POSITION",
            "LAG",
            "SKIPPED",
        ];
        let mut rows: Vec<[String; 10]> = Vec::new();
        for c in &self.channels {
            let channel = [
                c.name.clone(),
                c.length.to_string(),
                c.first.to_string(),
                c.next.to_string(),
                human_bytes(c.bytes),
                c.retention.to_string(),
            ];
            if c.readers.is_empty() {
                let [a, b, d, e, g, h] = channel;
                rows.push([
                    a,
                    b,
                    d,
                    e,
                    g,
                    h,
                    "-".into(),
                    "".into(),
                    "".into(),
                    "".into(),
                ]);
                continue;
            }
            for (i, r) in c.readers.iter().enumerate() {
                let [a, b, d, e, g, h] = if i == 0 {
                    channel.clone()
                } else {
                    Default::default()
                };
                rows.push([
                    a,
                    b,
                    d,
                    e,
                    g,
                    h,
                    r.name.clone(),
                    r.position.to_string(),
                    r.lag.to_string(),
                    r.skipped.to_string(),
                ]);
            }
        }
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut line = |cells: &[&str]| -> fmt::Result {
            let mut text = String::new();
            for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
            }
            writeln!(f, "{}", text.trim_end())
        };
        line(&header)?;
        for row in &rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            line(&cells)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200 * 1024), "200 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_table_aligns_columns_and_lists_every_reader() {
        let stats = StoreStats {
            path: PathBuf::from("/data/channels.redb"),
            channels: vec![
                ChannelStats {
                    name: "orders".into(),
                    length: 1000,
                    first: 1,
                    next: 1001,
                    bytes: 204_000,
                    retention: Retention::UNLIMITED,
                    readers: vec![
                        ReaderStats {
                            name: "audit".into(),
                            position: 1001,
                            lag: 0,
                            skipped: 0,
                        },
                        ReaderStats {
                            name: "billing".into(),
                            position: 901,
                            lag: 100,
                            skipped: 7,
                        },
                    ],
                },
                ChannelStats {
                    name: "events".into(),
                    length: 0,
                    first: 1,
                    next: 1,
                    bytes: 0,
                    retention: Retention::default().max_records(10),
                    readers: vec![],
                },
            ],
        };
        let expected = "\
channel store /data/channels.redb
CHANNEL  RECORDS  FIRST  NEXT  BYTES    RETENTION   READER   POSITION  LAG  SKIPPED
orders   1000     1      1001  199 KiB  all         audit    1001      0    0
                                                    billing  901       100  7
events   0        1      1     0 B      10 records  -
";
        assert_eq!(stats.to_string(), expected);
        let empty = StoreStats {
            path: PathBuf::from("c.redb"),
            channels: vec![],
        };
        assert_eq!(empty.to_string(), "channel store c.redb\nno channels\n");
    }
}
