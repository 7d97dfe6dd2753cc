//! Errors of flow files: each with `file:line:col`, all reported at once.

use std::fmt;

use serde_saphyr::Location;

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or the name the text was given).
    pub file: String,
    /// Line, from 1 (0 when unknown).
    pub line: u64,
    /// Column, from 1 (0 when unknown).
    pub column: u64,
    /// What is wrong and what to do.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(file: &str, at: Location, message: String) -> Self {
        ConfigError {
            file: file.to_string(),
            line: at.line(),
            column: at.column(),
            message,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in a flow file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The problems.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn one(error: ConfigError) -> Self {
        ConfigErrors {
            errors: vec![error],
        }
    }

    pub(crate) fn push(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn into_result<T>(mut self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        let n = self.errors.len();
        write!(
            f,
            "{n} error{} in the flow file; nothing was started",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigErrors {}

/// A YAML syntax or shape error, without the snippet rendering (the
/// location is printed separately as `file:line:col`).
pub(crate) fn describe_yaml_error(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    // The rendered error may carry a source snippet after its first line.
    text.lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string()
}
