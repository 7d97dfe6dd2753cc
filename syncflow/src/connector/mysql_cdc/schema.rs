//! Table definitions from `information_schema`: the primary key (for the
//! snapshot's key order), MariaDB's JSON columns (stored as text with a
//! `json_valid` check), and the column names, signedness and ENUM/SET
//! values when the binlog's table maps lack them (`binlog_row_metadata`
//! other than `FULL`).

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

/// One column of a table, as `information_schema` describes it now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SchemaColumn {
    pub(crate) name: String,
    pub(crate) unsigned: bool,
    pub(crate) binary: bool,
    pub(crate) json: bool,
    /// The values of an ENUM or SET column, in order.
    pub(crate) values: Vec<String>,
}

/// A table's columns (in order) and primary key.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TableSchema {
    pub(crate) columns: Vec<SchemaColumn>,
    pub(crate) primary_key: Vec<String>,
}

impl TableSchema {
    pub(crate) fn is_json(&self, column: &str) -> bool {
        self.columns.iter().any(|c| c.json && c.name == column)
    }
}

/// `'a','b''c'` → `["a", "b'c"]` (the values of `enum('a','b''c')`).
pub(crate) fn parse_values(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut values = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    value.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                }
                c => value.push(c),
            }
        }
        values.push(value);
    }
    values
}

/// Reads a table's definition; `None` if the table does not exist (now).
pub(crate) async fn load(
    conn: &mut Conn,
    db: &str,
    table: &str,
    mariadb: bool,
) -> Result<Option<TableSchema>, mysql_async::Error> {
    let rows: Vec<(String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let json_checks: Vec<String> = if mariadb {
        conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CHECK_CLAUSE LIKE 'json_valid(%'",
            (db, table),
        )
        .await?
    } else {
        Vec::new()
    };
    let primary_key: Vec<String> = conn
        .exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await?;
    let columns = rows
        .into_iter()
        .map(|(name, data_type, column_type)| {
            let data_type = data_type.to_ascii_lowercase();
            let check = format!("json_valid(`{}`)", name.replace('`', "``"));
            SchemaColumn {
                unsigned: column_type.to_ascii_lowercase().contains("unsigned"),
                binary: matches!(
                    data_type.as_str(),
                    "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
                ),
                json: data_type == "json" || json_checks.iter().any(|c| c == &check),
                values: if data_type == "enum" || data_type == "set" {
                    parse_values(&column_type)
                } else {
                    Vec::new()
                },
                name,
            }
        })
        .collect();
    Ok(Some(TableSchema {
        columns,
        primary_key,
    }))
}

/// `` `a``b` `` for the identifier ``a`b``.
pub(crate) fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_unquoted() {
        assert_eq!(
            parse_values("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(parse_values("set('x')"), vec!["x"]);
        assert!(parse_values("int(11)").is_empty());
        assert_eq!(quote("we`ird"), "`we``ird`");
    }
}
