//! `${VAR}` in flow files: values (paths, URLs, secrets) from the environment.
//!
//! `${NAME}` is replaced by the variable's value, `${NAME:-fallback}` by the
//! fallback when the variable is unset or empty, and `$${` stands for a
//! literal `${`. A variable that is unset without a fallback is an error at
//! load time. Only the settings that say so are interpolated, and the
//! interpolated values are never logged: the flow file's own text is what
//! `syncflow check` shows.

/// Replaces every `${NAME}` / `${NAME:-fallback}` in `text`.
pub(crate) fn interpolate(text: &str) -> Result<String, String> {
    interpolate_with(text, |name| std::env::var(name).ok())
}

pub(crate) fn interpolate_with(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "`${{` at byte {} of `{text}` is not closed: write `${{NAME}}`, or `$${{` for a literal `${{`",
                text.len() - rest.len() + i
            ));
        };
        let expr = &body[..end];
        let (name, fallback) = match expr.split_once(":-") {
            Some((name, fallback)) => (name, Some(fallback)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{expr}}}` is not a variable reference: names are letters, digits and `_`, as in `${{DB_URL}}` or `${{DB_URL:-fallback}}`"
            ));
        }
        match (lookup(name).filter(|v| !v.is_empty()), fallback) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(fallback)) => out.push_str(fallback),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set: set it, or give a fallback with `${{{name}:-...}}`"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_fallbacks() {
        assert_eq!(
            interpolate_with("${HOME_DIR}/in.jsonl", env).unwrap(),
            "/home/me/in.jsonl"
        );
        assert_eq!(
            interpolate_with("${MISSING:-data}/${EMPTY:-x}.jsonl", env).unwrap(),
            "data/x.jsonl"
        );
        assert_eq!(
            interpolate_with("cost $5 $${HOME_DIR}", env).unwrap(),
            "cost $5 ${HOME_DIR}"
        );
    }

    #[test]
    fn reports_unset_and_malformed_references() {
        let unset = interpolate_with("${DB_URL}", env).unwrap_err();
        assert!(unset.contains("`DB_URL` is not set"), "{unset}");
        let open = interpolate_with("a ${HOME_DIR", env).unwrap_err();
        assert!(open.contains("not closed"), "{open}");
        let bad = interpolate_with("${a b}", env).unwrap_err();
        assert!(bad.contains("not a variable reference"), "{bad}");
    }
}
