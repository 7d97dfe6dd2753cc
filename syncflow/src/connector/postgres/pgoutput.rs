//! Decoding of the `pgoutput` logical replication messages (protocol
//! version 1), as returned by `pg_logical_slot_peek_binary_changes`:
//! Begin, Commit, Relation, Insert, Update, Delete, Truncate and Message
//! (Origin and Type are read and skipped).

/// One decoded message. Tuples borrow from the message bytes.
#[derive(Debug, PartialEq)]
pub(crate) enum Message<'a> {
    Begin {
        /// The commit's LSN.
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01.
        commit_ts: i64,
    },
    Commit {
        /// End of the transaction: confirming it moves the slot past it.
        end_lsn: u64,
    },
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple<'a>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or old row (`O`), when sent.
        old: Option<(u8, Tuple<'a>)>,
        new: Tuple<'a>,
    },
    Delete {
        relation: u32,
        old: (u8, Tuple<'a>),
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`).
    Logical {
        transactional: bool,
        prefix: &'a str,
        content: &'a [u8],
    },
    /// Origin, Type and anything else not needed.
    Other,
}

/// A table's description, sent before its first change in each session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relation {
    pub(crate) id: u32,
    pub(crate) schema: String,
    pub(crate) name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub(crate) replica_identity: u8,
    pub(crate) columns: Vec<RelColumn>,
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RelColumn {
    /// Part of the replica identity (the key sent for deletes).
    pub(crate) key: bool,
    pub(crate) name: String,
    pub(crate) type_oid: u32,
}

/// A row's values, in column order.
#[derive(Debug, PartialEq)]
pub(crate) struct Tuple<'a> {
    pub(crate) values: Vec<Value<'a>>,
}

/// One column's value in a [`Tuple`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    /// A TOASTed value that did not change (not sent).
    Unchanged,
    /// The value's text form.
    Text(&'a [u8]),
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err(format!(
                "message ends early (wanted {n} more bytes, {} left)",
                self.data.len()
            ));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(self.i32()? as u32)
    }
    fn i64(&mut self) -> Result<i64, String> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(self.i64()? as u64)
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or("string without its terminating zero")?;
        let s = std::str::from_utf8(&self.data[..end]).map_err(|e| e.to_string())?;
        self.data = &self.data[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple<'a>, String> {
        let n = self.i16()?.max(0) as usize;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::Unchanged,
                b't' => {
                    let len = self.i32()?.max(0) as usize;
                    Value::Text(self.take(len)?)
                }
                b'b' => return Err("binary tuple values are not requested".to_string()),
                other => return Err(format!("unknown tuple value kind {other:#x}")),
            });
        }
        Ok(Tuple { values })
    }
}

/// Decodes one message.
pub(crate) fn decode(data: &[u8]) -> Result<Message<'_>, String> {
    let mut r = Reader { data };
    let message = match r.u8()? {
        b'B' => {
            let final_lsn = r.u64()?;
            let commit_ts = r.i64()?;
            let _xid = r.u32()?;
            Message::Begin {
                final_lsn,
                commit_ts,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            let _commit_ts = r.i64()?;
            Message::Commit { end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let schema = r.str()?.to_string();
            let name = r.str()?.to_string();
            let replica_identity = r.u8()?;
            let n = r.i16()?.max(0) as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8()?;
                let name = r.str()?.to_string();
                let type_oid = r.u32()?;
                let _typmod = r.i32()?;
                columns.push(RelColumn {
                    key: flags & 1 == 1,
                    name,
                    type_oid,
                });
            }
            Message::Relation(Relation {
                id,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut kind = r.u8()?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, r.tuple()?));
                kind = r.u8()?;
            }
            expect(kind, b'N')?;
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(format!("delete with old tuple kind {kind:#x}"));
            }
            Message::Delete {
                relation,
                old: (kind, r.tuple()?),
            }
        }
        b'T' => {
            let n = r.i32()?.max(0) as usize;
            let _options = r.u8()?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32()?);
            }
            Message::Truncate { relations }
        }
        b'M' => {
            let flags = r.u8()?;
            let _lsn = r.u64()?;
            let prefix = r.str()?;
            let len = r.i32()?.max(0) as usize;
            Message::Logical {
                transactional: flags & 1 == 1,
                prefix,
                content: r.take(len)?,
            }
        }
        _ => Message::Other,
    };
    Ok(message)
}

fn expect(got: u8, want: u8) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "expected tuple marker `{}`, got {got:#x}",
            want as char
        ))
    }
}

/// Formats an LSN the PostgreSQL way: `16/B374D848`.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses an LSN written the PostgreSQL way.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_messages_captured_from_postgresql_15() {
        // Captured from pg_logical_slot_peek_binary_changes on PostgreSQL 15.
        let begin = hex("420000000001dc35a8000303fab67677f2000002df");
        assert_eq!(
            decode(&begin).unwrap(),
            Message::Begin {
                final_lsn: 0x1dc35a8,
                commit_ts: 0x0303fab67677f2
            }
        );
        let relation = hex(
            "520000400c7075626c6963007a7a5f74006400020169640000000017ffffffff00760000000019ffffffff",
        );
        let Message::Relation(rel) = decode(&relation).unwrap() else {
            panic!()
        };
        assert_eq!(
            (rel.id, rel.schema.as_str(), rel.name.as_str()),
            (0x400c, "public", "zz_t")
        );
        assert_eq!(rel.replica_identity, b'd');
        assert_eq!(
            rel.columns,
            vec![
                RelColumn {
                    key: true,
                    name: "id".into(),
                    type_oid: 23
                },
                RelColumn {
                    key: false,
                    name: "v".into(),
                    type_oid: 25
                },
            ]
        );
        let insert = hex("490000400c4e0002740000000131740000000161");
        assert_eq!(
            decode(&insert).unwrap(),
            Message::Insert {
                relation: 0x400c,
                new: Tuple {
                    values: vec![Value::Text(b"1"), Value::Text(b"a")]
                }
            }
        );
        let update = hex("550000400c4b00027400000001316e4e0002740000000132740000000161");
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update {
                relation: 0x400c,
                old: Some((
                    b'K',
                    Tuple {
                        values: vec![Value::Text(b"1"), Value::Null]
                    }
                )),
                new: Tuple {
                    values: vec![Value::Text(b"2"), Value::Text(b"a")]
                }
            }
        );
        let delete = hex("440000400c4b00027400000001326e");
        assert_eq!(
            decode(&delete).unwrap(),
            Message::Delete {
                relation: 0x400c,
                old: (
                    b'K',
                    Tuple {
                        values: vec![Value::Text(b"2"), Value::Null]
                    }
                )
            }
        );
        let commit = hex("43000000000001dc36e00000000001dc3710000303fab6767b28");
        assert_eq!(
            decode(&commit).unwrap(),
            Message::Commit { end_lsn: 0x1dc3710 }
        );
        let message = hex(
            "4d010000000001dc349873796e63666c6f7700000000167b22736e617073686f74223a227a7a5f736c6f74227d",
        );
        assert_eq!(
            decode(&message).unwrap(),
            Message::Logical {
                transactional: true,
                prefix: "syncflow",
                content: br#"{"snapshot":"zz_slot"}"#
            }
        );
        assert!(decode(&insert[..10]).unwrap_err().contains("ends early"));
    }

    #[test]
    fn lsns_round_trip() {
        assert_eq!(format_lsn(0x16_B374D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374D848));
        assert_eq!(parse_lsn("0/1DC3440"), Some(0x1DC3440));
        assert_eq!(parse_lsn("x"), None);
    }
}
