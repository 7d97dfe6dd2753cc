//! Column values as JSON: from binlog row images (binary, as the server
//! stores them) and from snapshot rows (the binary client protocol), written
//! the same way so that a snapshot read and a binlog insert of the same row
//! give equal `after` images.
//!
//! | SQL type | JSON |
//! |---|---|
//! | integers, `YEAR`, `BIT` | number (`BIGINT UNSIGNED` up to 2⁶⁴−1) |
//! | `FLOAT`, `DOUBLE` | number |
//! | `DECIMAL` | string, exact (`"12.50"`) |
//! | `DATE` | `"2024-01-31"` |
//! | `DATETIME(n)` | `"2024-01-31T12:34:56.123"` (no zone, as stored) |
//! | `TIMESTAMP(n)` | `"2024-01-31T12:34:56.123Z"` (UTC) |
//! | `TIME(n)` | `"-838:59:59.000000"` |
//! | `CHAR`, `VARCHAR`, `TEXT`, `ENUM`, `SET` | string (`SET`: `"a,b"`) |
//! | `JSON` (MySQL, and MariaDB's `json_valid` text) | the JSON value itself |
//! | `BINARY`, `VARBINARY`, `BLOB`, geometry | base64 string (standard alphabet, padded) |

use std::io::Write as _;

use base64::Engine as _;
use mysql_async::Value;
use mysql_async::consts::ColumnType;

/// The character set number of binary strings.
pub(crate) const BINARY_CHARSET: u16 = 63;

/// How one column's values are read and written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// An integer of `size` bytes (1, 2, 3, 4, 8).
    Int {
        size: u8,
        unsigned: bool,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    /// `TIME` (old format, no fraction).
    TimeOld,
    Time {
        fsp: u8,
    },
    /// `DATETIME` (old format, no fraction).
    DateTimeOld,
    DateTime {
        fsp: u8,
    },
    /// `TIMESTAMP` (old format, no fraction).
    TimestampOld,
    Timestamp {
        fsp: u8,
    },
    /// `CHAR`, `VARCHAR`, `BINARY`, `VARBINARY`: length prefix of `len_bytes`.
    String {
        len_bytes: u8,
        text: Text,
    },
    /// `TINYBLOB`…`LONGBLOB`, `TINYTEXT`…`LONGTEXT`: length prefix of `len_bytes`.
    Blob {
        len_bytes: u8,
        text: Text,
    },
    Enum {
        size: u8,
        names: Vec<String>,
    },
    Set {
        size: u8,
        names: Vec<String>,
    },
    Bit {
        bytes: u8,
    },
    /// MySQL's binary JSON.
    Json {
        len_bytes: u8,
    },
    Geometry {
        len_bytes: u8,
    },
    /// A type this connector cannot read (the raw type code).
    Unsupported(u8),
}

/// What the bytes of a string or blob column hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Text {
    /// Text in a character set (written as UTF-8; invalid bytes replaced).
    Utf8,
    /// Binary data (written as base64).
    Binary,
    /// JSON text (MariaDB's `JSON`): written as the JSON value it holds.
    Json,
}

/// A value could not be read.
#[derive(Debug)]
pub(crate) struct ValueError(pub(crate) String);

impl ValueError {
    fn eof() -> Self {
        ValueError("the row image ends in the middle of a value".into())
    }
}

type Res<T> = Result<T, ValueError>;

/// Reads the little-endian unsigned integer of `n` bytes at `data[*at..]`.
#[inline]
fn le(data: &[u8], at: &mut usize, n: usize) -> Res<u64> {
    let bytes = data.get(*at..*at + n).ok_or_else(ValueError::eof)?;
    *at += n;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= (*b as u64) << (8 * i);
    }
    Ok(v)
}

/// Reads the big-endian unsigned integer of `n` bytes at `data[*at..]`.
#[inline]
fn be(data: &[u8], at: &mut usize, n: usize) -> Res<u64> {
    let bytes = data.get(*at..*at + n).ok_or_else(ValueError::eof)?;
    *at += n;
    Ok(bytes.iter().fold(0u64, |v, b| (v << 8) | *b as u64))
}

#[inline]
fn take<'a>(data: &'a [u8], at: &mut usize, n: usize) -> Res<&'a [u8]> {
    let bytes = data.get(*at..*at + n).ok_or_else(ValueError::eof)?;
    *at += n;
    Ok(bytes)
}

/// Writes `text` as a JSON string.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Writes bytes of text as a JSON string (invalid UTF-8 replaced).
#[inline]
fn write_text(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => write_str(out, text),
        Err(_) => write_str(out, &String::from_utf8_lossy(bytes)),
    }
}

fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// Writes the bytes of a string or blob column.
fn write_bytes(out: &mut Vec<u8>, bytes: &[u8], text: Text) {
    match text {
        Text::Utf8 => write_text(out, bytes),
        Text::Binary => write_base64(out, bytes),
        Text::Json => {
            // Embedded as is when it is JSON; as a string otherwise.
            let trimmed = bytes.trim_ascii();
            if !trimmed.is_empty()
                && serde_json::from_slice::<serde::de::IgnoredAny>(trimmed).is_ok()
            {
                out.extend_from_slice(trimmed);
            } else {
                write_text(out, bytes);
            }
        }
    }
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_float32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// `.123` for `micros = 123000` and `fsp = 3`; nothing for `fsp = 0`.
fn write_fraction(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    let fsp = fsp.min(6) as u32;
    let digits = micros / 10u32.pow(6 - fsp);
    let _ = write!(out, ".{:0width$}", digits, width = fsp as usize);
}

#[allow(clippy::too_many_arguments)]
fn write_datetime(
    out: &mut Vec<u8>,
    (y, mo, d): (u32, u32, u32),
    (h, mi, s): (u32, u32, u32),
    micros: u32,
    fsp: u8,
    utc: bool,
) {
    let _ = write!(out, "\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    write_fraction(out, micros, fsp);
    if utc {
        out.push(b'Z');
    }
    out.push(b'"');
}

fn write_time(
    out: &mut Vec<u8>,
    negative: bool,
    hours: u32,
    mi: u32,
    s: u32,
    micros: u32,
    fsp: u8,
) {
    out.push(b'"');
    if negative {
        out.push(b'-');
    }
    let _ = write!(out, "{hours:02}:{mi:02}:{s:02}");
    write_fraction(out, micros, fsp);
    out.push(b'"');
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (u32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (y as u32, m as u32, d as u32)
}

/// Writes a Unix time (seconds, microseconds) as a UTC timestamp.
fn write_unix(out: &mut Vec<u8>, secs: u64, micros: u32, fsp: u8) {
    if secs == 0 && micros == 0 {
        // The zero timestamp, `0000-00-00 00:00:00`.
        write_datetime(out, (0, 0, 0), (0, 0, 0), 0, fsp, true);
        return;
    }
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    write_datetime(
        out,
        civil_from_days(days),
        (rem / 3600, rem / 60 % 60, rem % 60),
        micros,
        fsp,
        true,
    );
}

/// Reads the fractional part of a TIME2/DATETIME2/TIMESTAMP2 value:
/// `(fsp + 1) / 2` big-endian bytes. Returns the raw value, its width in
/// bytes and the factor that turns it into microseconds.
fn read_fraction(data: &[u8], at: &mut usize, fsp: u8) -> Res<(i64, usize, i64)> {
    let n = (fsp.min(6) as usize).div_ceil(2);
    let raw = if n == 0 { 0 } else { be(data, at, n)? as i64 };
    Ok((raw, n, [1, 10_000, 100, 1][n]))
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

/// Reads a `DECIMAL(precision, scale)` in the server's binary format and
/// writes it as a JSON string such as `"-12.50"`.
fn write_decimal(
    out: &mut Vec<u8>,
    data: &[u8],
    at: &mut usize,
    precision: u8,
    scale: u8,
) -> Res<()> {
    let (precision, scale) = (precision as usize, scale as usize);
    if scale > precision || precision == 0 {
        return Err(ValueError(format!(
            "DECIMAL({precision},{scale}) has an invalid precision or scale"
        )));
    }
    let intg = precision - scale;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = take(data, at, size)?;
    let mut bytes = [0u8; 40];
    let bytes = bytes
        .get_mut(..size)
        .ok_or_else(|| ValueError(format!("DECIMAL({precision},{scale}) is too wide")))?;
    bytes.copy_from_slice(raw);
    let negative = bytes[0] & 0x80 == 0;
    bytes[0] ^= 0x80;
    if negative {
        for b in bytes.iter_mut() {
            *b = !*b;
        }
    }
    let mut pos = 0;
    let mut word = |n: usize| -> u32 {
        let v = bytes[pos..pos + n]
            .iter()
            .fold(0u32, |v, b| (v << 8) | *b as u32);
        pos += n;
        v
    };
    let mut digits = String::with_capacity(precision + 2);
    if intg0x > 0 {
        let v = word(DIG2BYTES[intg0x]);
        let _ = std::fmt::Write::write_fmt(&mut digits, format_args!("{v:0w$}", w = intg0x));
    }
    for _ in 0..intg0 {
        let v = word(4);
        let _ = std::fmt::Write::write_fmt(&mut digits, format_args!("{v:09}"));
    }
    let int_part = digits.trim_start_matches('0');
    let mut text = String::with_capacity(precision + 3);
    if negative {
        text.push('-');
    }
    text.push_str(if int_part.is_empty() { "0" } else { int_part });
    if scale > 0 {
        text.push('.');
        for _ in 0..frac0 {
            let v = word(4);
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{v:09}"));
        }
        if frac0x > 0 {
            let v = word(DIG2BYTES[frac0x]);
            let _ = std::fmt::Write::write_fmt(&mut text, format_args!("{v:0w$}", w = frac0x));
        }
    }
    write_str(out, &text);
    Ok(())
}

/// Reads one non-NULL value of a binlog row image at `data[*at..]` and
/// writes it as JSON.
pub(crate) fn write_binlog_value(
    out: &mut Vec<u8>,
    kind: &Kind,
    data: &[u8],
    at: &mut usize,
) -> Res<()> {
    match kind {
        Kind::Int { size, unsigned } => {
            let n = *size as usize;
            let raw = le(data, at, n)?;
            if *unsigned {
                let _ = write!(out, "{raw}");
            } else {
                let shift = 64 - 8 * n as u32;
                let v = ((raw << shift) as i64) >> shift;
                let _ = write!(out, "{v}");
            }
        }
        Kind::Float => {
            let v = f32::from_bits(le(data, at, 4)? as u32);
            write_float32(out, v);
        }
        Kind::Double => write_float(out, f64::from_bits(le(data, at, 8)?)),
        Kind::Decimal { precision, scale } => write_decimal(out, data, at, *precision, *scale)?,
        Kind::Year => {
            let y = le(data, at, 1)?;
            let _ = write!(out, "{}", if y == 0 { 0 } else { 1900 + y });
        }
        Kind::Date => {
            let v = le(data, at, 3)? as u32;
            let _ = write!(out, "\"{:04}-{:02}-{:02}\"", v >> 9, (v >> 5) & 15, v & 31);
        }
        Kind::TimeOld => {
            let v = le(data, at, 3)? as u32;
            write_time(out, false, v / 10_000, v / 100 % 100, v % 100, 0, 0);
        }
        Kind::Time { fsp } => {
            // 3 bytes of hour/minute/second, offset by 0x800000, then the fraction.
            let mut int = be(data, at, 3)? as i64 - 0x80_0000;
            let (mut frac, n, factor) = read_fraction(data, at, *fsp)?;
            // A negative time with a fraction of 1 or 2 bytes borrows from
            // the integer part (the server's own encoding).
            if int < 0 && frac != 0 && n < 3 {
                int += 1;
                frac -= 1 << (8 * n);
            }
            // packed = int * 2^24 + fraction in microseconds.
            let packed = (int << 24) + frac * factor;
            let negative = packed < 0;
            let packed = packed.unsigned_abs();
            let hms = packed >> 24;
            let micros = (packed % (1 << 24)) as u32;
            write_time(
                out,
                negative,
                ((hms >> 12) % (1 << 10)) as u32,
                ((hms >> 6) % 64) as u32,
                (hms % 64) as u32,
                micros,
                *fsp,
            );
        }
        Kind::DateTimeOld => {
            let v = le(data, at, 8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            write_datetime(
                out,
                (
                    (d / 10_000) as u32,
                    (d / 100 % 100) as u32,
                    (d % 100) as u32,
                ),
                (
                    (t / 10_000) as u32,
                    (t / 100 % 100) as u32,
                    (t % 100) as u32,
                ),
                0,
                0,
                false,
            );
        }
        Kind::DateTime { fsp } => {
            let int = be(data, at, 5)? as i64 - 0x80_0000_0000;
            let (frac, _, factor) = read_fraction(data, at, *fsp)?;
            let micros = (frac * factor) as u32;
            let int = int.unsigned_abs();
            let ymd = int >> 17;
            let ym = ymd >> 5;
            let hms = int % (1 << 17);
            write_datetime(
                out,
                ((ym / 13) as u32, (ym % 13) as u32, (ymd % 32) as u32),
                (
                    (hms >> 12) as u32,
                    ((hms >> 6) % 64) as u32,
                    (hms % 64) as u32,
                ),
                micros,
                *fsp,
                false,
            );
        }
        Kind::TimestampOld => {
            let secs = le(data, at, 4)?;
            write_unix(out, secs, 0, 0);
        }
        Kind::Timestamp { fsp } => {
            let secs = be(data, at, 4)?;
            let (frac, _, factor) = read_fraction(data, at, *fsp)?;
            let micros = (frac * factor) as u32;
            write_unix(out, secs, micros, *fsp);
        }
        Kind::String { len_bytes, text } | Kind::Blob { len_bytes, text } => {
            let n = le(data, at, *len_bytes as usize)? as usize;
            let bytes = take(data, at, n)?;
            write_bytes(out, bytes, *text);
        }
        Kind::Enum { size, names } => {
            let index = le(data, at, *size as usize)? as usize;
            match index.checked_sub(1).and_then(|i| names.get(i)) {
                Some(name) => write_str(out, name),
                // 0 is the empty "error" value of an ENUM.
                None if index == 0 => write_str(out, ""),
                None => {
                    let _ = write!(out, "{index}");
                }
            }
        }
        Kind::Set { size, names } => {
            let bits = le(data, at, *size as usize)?;
            write_set(out, bits, names);
        }
        Kind::Bit { bytes } => {
            let v = be(data, at, *bytes as usize)?;
            let _ = write!(out, "{v}");
        }
        Kind::Json { len_bytes } => {
            let n = le(data, at, *len_bytes as usize)? as usize;
            let bytes = take(data, at, n)?;
            write_mysql_json(out, bytes)?;
        }
        Kind::Geometry { len_bytes } => {
            let n = le(data, at, *len_bytes as usize)? as usize;
            let bytes = take(data, at, n)?;
            write_base64(out, bytes);
        }
        Kind::Unsupported(code) => {
            return Err(ValueError(format!(
                "column type {code} is not supported by the binlog reader"
            )));
        }
    }
    Ok(())
}

fn write_set(out: &mut Vec<u8>, bits: u64, names: &[String]) {
    let mut text = String::new();
    for (i, name) in names.iter().enumerate().take(64) {
        if bits & (1 << i) != 0 {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(name);
        }
    }
    write_str(out, &text);
}

/// MySQL's binary JSON, as JSON text.
fn write_mysql_json(out: &mut Vec<u8>, bytes: &[u8]) -> Res<()> {
    use mysql_common::binlog::jsonb;
    use mysql_common::io::ParseBuf;
    if bytes.is_empty() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    let value: jsonb::Value<'_> = ParseBuf(bytes)
        .parse(())
        .map_err(|e| ValueError(format!("binary JSON value: {e}")))?;
    let json = serde_json::Value::try_from(value)
        .map_err(|e| ValueError(format!("binary JSON value: {e}")))?;
    let _ = serde_json::to_writer(&mut *out, &json);
    Ok(())
}

/// The kind of a table-map column: its real type, metadata bytes, whether
/// it is unsigned, its character set and whether it holds JSON text.
pub(crate) fn binlog_kind(
    ty: ColumnType,
    raw_type: u8,
    meta: &[u8],
    unsigned: bool,
    charset: Option<u16>,
    json_text: bool,
    enum_names: Option<Vec<String>>,
) -> Kind {
    use ColumnType::*;
    let m0 = meta.first().copied().unwrap_or(0);
    let m1 = meta.get(1).copied().unwrap_or(0);
    let text = |charset: Option<u16>| match charset {
        Some(BINARY_CHARSET) => Text::Binary,
        _ if json_text => Text::Json,
        _ => Text::Utf8,
    };
    match ty {
        MYSQL_TYPE_TINY => Kind::Int { size: 1, unsigned },
        MYSQL_TYPE_SHORT => Kind::Int { size: 2, unsigned },
        MYSQL_TYPE_INT24 => Kind::Int { size: 3, unsigned },
        MYSQL_TYPE_LONG => Kind::Int { size: 4, unsigned },
        MYSQL_TYPE_LONGLONG => Kind::Int { size: 8, unsigned },
        MYSQL_TYPE_FLOAT => Kind::Float,
        MYSQL_TYPE_DOUBLE => Kind::Double,
        MYSQL_TYPE_NEWDECIMAL => Kind::Decimal {
            precision: m0,
            scale: m1,
        },
        MYSQL_TYPE_YEAR => Kind::Year,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Kind::Date,
        MYSQL_TYPE_TIME => Kind::TimeOld,
        MYSQL_TYPE_TIME2 => Kind::Time { fsp: m0 },
        MYSQL_TYPE_DATETIME => Kind::DateTimeOld,
        MYSQL_TYPE_DATETIME2 => Kind::DateTime { fsp: m0 },
        MYSQL_TYPE_TIMESTAMP => Kind::TimestampOld,
        MYSQL_TYPE_TIMESTAMP2 => Kind::Timestamp { fsp: m0 },
        MYSQL_TYPE_VARCHAR | MYSQL_TYPE_VAR_STRING => {
            let max = u16::from_le_bytes([m0, m1]);
            Kind::String {
                len_bytes: if max < 256 { 1 } else { 2 },
                text: text(charset),
            }
        }
        MYSQL_TYPE_STRING => {
            // CHAR(n): metadata packs the real type and the maximum length.
            let max = if m0 & 0x30 != 0x30 {
                m1 as u16 | ((((m0 & 0x30) ^ 0x30) as u16) << 4)
            } else {
                m1 as u16
            };
            Kind::String {
                len_bytes: if max < 256 { 1 } else { 2 },
                text: text(charset),
            }
        }
        MYSQL_TYPE_ENUM => Kind::Enum {
            size: m1.max(1),
            names: enum_names.unwrap_or_default(),
        },
        MYSQL_TYPE_SET => Kind::Set {
            size: m1.max(1),
            names: enum_names.unwrap_or_default(),
        },
        MYSQL_TYPE_BLOB | MYSQL_TYPE_TINY_BLOB | MYSQL_TYPE_MEDIUM_BLOB | MYSQL_TYPE_LONG_BLOB => {
            Kind::Blob {
                len_bytes: m0.clamp(1, 4),
                text: text(charset),
            }
        }
        MYSQL_TYPE_JSON => Kind::Json {
            len_bytes: m0.clamp(1, 4),
        },
        MYSQL_TYPE_GEOMETRY => Kind::Geometry {
            len_bytes: m0.clamp(1, 4),
        },
        MYSQL_TYPE_BIT => Kind::Bit {
            bytes: (m1 as u16 * 8 + m0 as u16).div_ceil(8) as u8,
        },
        _ => Kind::Unsupported(raw_type),
    }
}

/// A snapshot column: how values of the binary protocol are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SnapKind {
    Number,
    Float,
    Double,
    Decimal,
    Date,
    Time { fsp: u8 },
    DateTime { fsp: u8 },
    Timestamp { fsp: u8 },
    Text(Text),
    Json,
    Bit,
    Base64,
}

/// The kind of a result-set column of the snapshot.
pub(crate) fn snapshot_kind(column: &mysql_async::Column, json_text: bool) -> SnapKind {
    use ColumnType::*;
    let fsp = column.decimals().min(6);
    let binary = column.character_set() == BINARY_CHARSET;
    match column.column_type() {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
        | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_YEAR => SnapKind::Number,
        MYSQL_TYPE_FLOAT => SnapKind::Float,
        MYSQL_TYPE_DOUBLE => SnapKind::Double,
        MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => SnapKind::Decimal,
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => SnapKind::Date,
        MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => SnapKind::Time { fsp },
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => SnapKind::DateTime { fsp },
        MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => SnapKind::Timestamp { fsp },
        MYSQL_TYPE_JSON => SnapKind::Json,
        MYSQL_TYPE_BIT => SnapKind::Bit,
        MYSQL_TYPE_GEOMETRY => SnapKind::Base64,
        MYSQL_TYPE_ENUM | MYSQL_TYPE_SET => SnapKind::Text(Text::Utf8),
        _ if binary => SnapKind::Text(Text::Binary),
        _ if json_text => SnapKind::Text(Text::Json),
        _ => SnapKind::Text(Text::Utf8),
    }
}

/// Writes one snapshot value (binary protocol) as JSON.
pub(crate) fn write_snapshot_value(out: &mut Vec<u8>, kind: SnapKind, value: &Value) {
    match (kind, value) {
        (_, Value::NULL) => out.extend_from_slice(b"null"),
        (_, Value::Int(v)) => {
            let _ = write!(out, "{v}");
        }
        (_, Value::UInt(v)) => {
            let _ = write!(out, "{v}");
        }
        (SnapKind::Float, Value::Float(v)) => write_float32(out, *v),
        (_, Value::Float(v)) => write_float(out, *v as f64),
        (_, Value::Double(v)) => write_float(out, *v),
        (SnapKind::Date, Value::Date(y, m, d, ..)) => {
            let _ = write!(out, "\"{y:04}-{m:02}-{d:02}\"");
        }
        (SnapKind::DateTime { fsp }, Value::Date(y, mo, d, h, mi, s, us)) => write_datetime(
            out,
            (*y as u32, *mo as u32, *d as u32),
            (*h as u32, *mi as u32, *s as u32),
            *us,
            fsp,
            false,
        ),
        (SnapKind::Timestamp { fsp }, Value::Date(y, mo, d, h, mi, s, us)) => write_datetime(
            out,
            (*y as u32, *mo as u32, *d as u32),
            (*h as u32, *mi as u32, *s as u32),
            *us,
            fsp,
            true,
        ),
        (_, Value::Date(y, mo, d, h, mi, s, us)) => write_datetime(
            out,
            (*y as u32, *mo as u32, *d as u32),
            (*h as u32, *mi as u32, *s as u32),
            *us,
            6,
            false,
        ),
        (kind, Value::Time(negative, days, h, mi, s, us)) => {
            let fsp = match kind {
                SnapKind::Time { fsp } => fsp,
                _ => 6,
            };
            write_time(
                out,
                *negative,
                days * 24 + *h as u32,
                *mi as u32,
                *s as u32,
                *us,
                fsp,
            );
        }
        (SnapKind::Number, Value::Bytes(b))
        | (SnapKind::Float, Value::Bytes(b))
        | (SnapKind::Double, Value::Bytes(b)) => match std::str::from_utf8(b)
            .ok()
            .filter(|t| serde_json::from_str::<serde_json::Number>(t).is_ok())
        {
            Some(t) => out.extend_from_slice(t.as_bytes()),
            None => write_text(out, b),
        },
        (SnapKind::Bit, Value::Bytes(b)) => {
            let v = b.iter().take(8).fold(0u64, |v, x| (v << 8) | *x as u64);
            let _ = write!(out, "{v}");
        }
        (SnapKind::Json, Value::Bytes(b)) => write_bytes(out, b, Text::Json),
        (SnapKind::Base64, Value::Bytes(b)) => write_base64(out, b),
        (SnapKind::Text(text), Value::Bytes(b)) => write_bytes(out, b, text),
        (_, Value::Bytes(b)) => write_text(out, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binlog(kind: Kind, data: &[u8]) -> String {
        let mut out = Vec::new();
        let mut at = 0;
        write_binlog_value(&mut out, &kind, data, &mut at).unwrap();
        assert_eq!(at, data.len(), "consumed the whole value");
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn integers_keep_sign_and_width() {
        assert_eq!(
            binlog(
                Kind::Int {
                    size: 1,
                    unsigned: false
                },
                &[0xff]
            ),
            "-1"
        );
        assert_eq!(
            binlog(
                Kind::Int {
                    size: 1,
                    unsigned: true
                },
                &[0xff]
            ),
            "255"
        );
        assert_eq!(
            binlog(
                Kind::Int {
                    size: 3,
                    unsigned: false
                },
                &[0xfe, 0xff, 0xff]
            ),
            "-2"
        );
        assert_eq!(
            binlog(
                Kind::Int {
                    size: 8,
                    unsigned: true
                },
                &[0xff; 8]
            ),
            "18446744073709551615"
        );
    }

    #[test]
    fn decimals_are_exact_strings() {
        // DECIMAL(10,2) 1234.56 and -1234.56, as the server stores them.
        let kind = Kind::Decimal {
            precision: 10,
            scale: 2,
        };
        assert_eq!(
            binlog(kind.clone(), &[0x80, 0x00, 0x04, 0xd2, 0x38]),
            "\"1234.56\""
        );
        assert_eq!(
            binlog(kind.clone(), &[0x7f, 0xff, 0xfb, 0x2d, 0xc7]),
            "\"-1234.56\""
        );
        assert_eq!(binlog(kind, &[0x80, 0x00, 0x00, 0x00, 0x00]), "\"0.00\"");
    }

    #[test]
    fn dates_and_times() {
        // 2024-01-31 = 2024 << 9 | 1 << 5 | 31
        let v: u32 = (2024 << 9) | (1 << 5) | 31;
        assert_eq!(binlog(Kind::Date, &v.to_le_bytes()[..3]), "\"2024-01-31\"");
        assert_eq!(
            binlog(Kind::Timestamp { fsp: 0 }, &1_700_000_000u32.to_be_bytes()),
            "\"2023-11-14T22:13:20Z\""
        );
        let mut out = Vec::new();
        write_unix(&mut out, 951_782_400, 5000, 3); // 2000-02-29
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"2000-02-29T00:00:00.005Z\""
        );
    }
}
