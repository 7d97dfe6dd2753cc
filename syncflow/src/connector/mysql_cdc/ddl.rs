//! What a statement of the binlog changes: just enough SQL reading to tell
//! which table a schema change concerns.

/// What a statement found in the binlog outside a transaction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Statement {
    /// A schema change of a table (`CREATE`/`ALTER`/`DROP`/`RENAME TABLE`,
    /// `CREATE`/`DROP INDEX`): the database and table.
    Table(String, String),
    /// `TRUNCATE TABLE`: the database and table.
    Truncate(String, String),
    /// A schema change of a whole database (`CREATE`/`ALTER`/`DROP DATABASE`).
    Database(String),
    /// Anything else (accounts, views, routines, `FLUSH`, `ANALYZE`...):
    /// no change to captured rows or columns.
    Other,
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Dot,
    Other,
}

fn tokens(sql: &str, limit: usize) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if out.len() >= limit {
            break;
        }
        if c.is_whitespace() {
            chars.next();
        } else if c == '/' {
            chars.next();
            if chars.peek() == Some(&'*') {
                // A comment, up to `*/`.
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            } else {
                out.push(Token::Other);
            }
        } else if c == '`' {
            chars.next();
            let mut name = String::new();
            while let Some(c) = chars.next() {
                if c == '`' {
                    if chars.peek() == Some(&'`') {
                        chars.next();
                        name.push('`');
                    } else {
                        break;
                    }
                } else {
                    name.push(c);
                }
            }
            out.push(Token::Quoted(name));
        } else if c == '.' {
            chars.next();
            out.push(Token::Dot);
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_alphanumeric() || c == '_' || c == '$' {
                    word.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Word(word));
        } else {
            chars.next();
            out.push(Token::Other);
        }
    }
    out
}

fn is(token: Option<&Token>, keyword: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
}

/// Reads `name` or `db.name` at `tokens[*at..]`.
fn name(tokens: &[Token], at: &mut usize, default_db: &str) -> Option<(String, String)> {
    let ident = |t: Option<&Token>| match t {
        Some(Token::Word(w)) | Some(Token::Quoted(w)) => Some(w.clone()),
        _ => None,
    };
    let first = ident(tokens.get(*at))?;
    if tokens.get(*at + 1) == Some(&Token::Dot)
        && let Some(second) = ident(tokens.get(*at + 2))
    {
        *at += 3;
        return Some((first, second));
    }
    *at += 1;
    Some((default_db.to_string(), first))
}

/// Classifies a statement run in database `default_db`.
pub(crate) fn classify(default_db: &str, sql: &str) -> Statement {
    let t = tokens(sql, 24);
    let mut at = 0;
    let verb = match t.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return Statement::Other,
    };
    at += 1;
    let skip = |at: &mut usize, words: &[&str]| {
        while words.iter().any(|w| is(t.get(*at), w)) {
            *at += 1;
        }
    };
    match verb.as_str() {
        "TRUNCATE" => {
            skip(&mut at, &["TABLE"]);
            match name(&t, &mut at, default_db) {
                Some((db, table)) => Statement::Truncate(db, table),
                None => Statement::Other,
            }
        }
        "CREATE" | "ALTER" | "DROP" | "RENAME" => {
            skip(
                &mut at,
                &[
                    "OR",
                    "REPLACE",
                    "TEMPORARY",
                    "ONLINE",
                    "OFFLINE",
                    "IGNORE",
                    "UNIQUE",
                    "FULLTEXT",
                    "SPATIAL",
                ],
            );
            if is(t.get(at), "TABLE") || is(t.get(at), "TABLES") {
                at += 1;
                skip(&mut at, &["IF", "NOT", "EXISTS"]);
                match name(&t, &mut at, default_db) {
                    Some((db, table)) => Statement::Table(db, table),
                    None => Statement::Other,
                }
            } else if is(t.get(at), "INDEX") || is(t.get(at), "KEY") {
                // CREATE INDEX i ON t (...) / DROP INDEX i ON t
                while at < t.len() && !is(t.get(at), "ON") {
                    at += 1;
                }
                at += 1;
                match name(&t, &mut at, default_db) {
                    Some((db, table)) => Statement::Table(db, table),
                    None => Statement::Other,
                }
            } else if is(t.get(at), "DATABASE") || is(t.get(at), "SCHEMA") {
                at += 1;
                skip(&mut at, &["IF", "NOT", "EXISTS"]);
                match t.get(at) {
                    Some(Token::Word(w)) | Some(Token::Quoted(w)) => Statement::Database(w.clone()),
                    _ => Statement::Database(default_db.to_string()),
                }
            } else {
                Statement::Other
            }
        }
        _ => Statement::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(db: &str, t: &str) -> Statement {
        Statement::Table(db.into(), t.into())
    }

    #[test]
    fn finds_the_table_of_schema_changes() {
        assert_eq!(
            classify("shop", "ALTER TABLE orders ADD note TEXT"),
            table("shop", "orders")
        );
        assert_eq!(
            classify("x", "alter online table `my db`.`a``b` add c int"),
            table("my db", "a`b")
        );
        assert_eq!(
            classify(
                "shop",
                "DROP TABLE IF EXISTS `t1` /* generated by server */"
            ),
            table("shop", "t1")
        );
        assert_eq!(
            classify("shop", "CREATE TABLE IF NOT EXISTS s2.t (id int)"),
            table("s2", "t")
        );
        assert_eq!(
            classify("shop", "create index i on t (a)"),
            table("shop", "t")
        );
        assert_eq!(classify("shop", "RENAME TABLE a TO b"), table("shop", "a"));
        assert_eq!(
            classify("shop", "TRUNCATE TABLE orders"),
            Statement::Truncate("shop".into(), "orders".into())
        );
        assert_eq!(
            classify("", "CREATE DATABASE IF NOT EXISTS shop"),
            Statement::Database("shop".into())
        );
        assert_eq!(
            classify("shop", "GRANT SELECT ON *.* TO x"),
            Statement::Other
        );
        assert_eq!(
            classify("shop", "CREATE VIEW v AS SELECT 1"),
            Statement::Other
        );
        assert_eq!(
            classify("shop", "/* c */ CREATE OR REPLACE TABLE t (id int)"),
            table("shop", "t")
        );
    }
}
