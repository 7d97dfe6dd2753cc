//! Which tables a CDC source captures: `db.table` glob patterns.

/// Schemas of the server itself, never captured.
const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// Include and exclude patterns such as `shop.*`, `*.audit_log`,
/// `shop.order_?`; a pattern without a dot names a whole database.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableFilter {
    include: Vec<(String, String)>,
    exclude: Vec<(String, String)>,
}

fn split(pattern: &str) -> Result<(String, String), String> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err("an empty table pattern".into());
    }
    match pattern.split_once('.') {
        Some((db, table)) if !db.is_empty() && !table.is_empty() && !table.contains('.') => {
            Ok((db.to_string(), table.to_string()))
        }
        Some(_) => Err(format!(
            "table pattern `{pattern}` must be `database.table` (globs `*` and `?` allowed), e.g. `shop.*`"
        )),
        None => Ok((pattern.to_string(), "*".to_string())),
    }
}

/// Whether `text` matches the glob `pattern` (`*` any run, `?` one character).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl TableFilter {
    /// A filter from include patterns (none: every table) and exclude patterns.
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        Ok(TableFilter {
            include: include.iter().map(|p| split(p)).collect::<Result<_, _>>()?,
            exclude: exclude.iter().map(|p| split(p)).collect::<Result<_, _>>()?,
        })
    }

    /// Whether changes of `db.table` are captured.
    pub(crate) fn includes(&self, db: &str, table: &str) -> bool {
        if SYSTEM_SCHEMAS.contains(&db) {
            return false;
        }
        let hit = |(d, t): &(String, String)| glob(d, db) && glob(t, table);
        (self.include.is_empty() || self.include.iter().any(hit)) && !self.exclude.iter().any(hit)
    }

    /// Whether a schema change of database `db` whose table is unknown
    /// (`CREATE DATABASE`, `DROP VIEW`...) concerns the captured tables.
    pub(crate) fn includes_db(&self, db: &str) -> bool {
        if SYSTEM_SCHEMAS.contains(&db) {
            return false;
        }
        self.include.is_empty() || self.include.iter().any(|(d, _)| glob(d, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("order_*", "order_lines"));
        assert!(glob("o?der", "order"));
        assert!(!glob("order_*", "orders"));
        assert!(glob("*_log", "audit_log"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

    #[test]
    fn include_and_exclude() {
        let f =
            TableFilter::new(&["shop.*".into(), "*.audit".into()], &["shop.tmp_*".into()]).unwrap();
        assert!(f.includes("shop", "orders"));
        assert!(f.includes("crm", "audit"));
        assert!(!f.includes("shop", "tmp_x"));
        assert!(!f.includes("crm", "people"));
        assert!(!TableFilter::default().includes("mysql", "user"));
        assert!(
            TableFilter::new(&["shop".into()], &[])
                .unwrap()
                .includes("shop", "x")
        );
        assert!(TableFilter::new(&["a.b.c".into()], &[]).is_err());
    }
}
