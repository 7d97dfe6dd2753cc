//! Checkpoint files of the sources that keep their position themselves (a
//! JSON-lines file's line, a binlog position): JSON with a format version,
//! written atomically.

use std::io;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ConnectorError;

/// A checkpoint's contents: a JSON document with a format version.
pub(crate) trait Versioned: Serialize + DeserializeOwned {
    /// The format version this syncflow writes and reads.
    const VERSION: u32;
    /// What the document is, for errors ("checkpoint", "binlog checkpoint").
    const WHAT: &'static str;
    /// What to do when the file is unusable ("delete it to ...").
    const FIX: &'static str;
    /// The version the document was written with.
    fn version(&self) -> u32;
}

/// Reads the checkpoint at `path`; `None` when there is none.
pub(crate) fn load<T: Versioned>(path: &Path) -> Result<Option<T>, ConnectorError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ConnectorError::io(
                "read checkpoint file",
                path,
                e,
                "check its permissions",
            ));
        }
    };
    let checkpoint: T = serde_json::from_slice(&text).map_err(|e| ConnectorError::Checkpoint {
        path: path.to_path_buf(),
        problem: format!("is not a valid {} ({e})", T::WHAT),
        fix: T::FIX.into(),
    })?;
    if checkpoint.version() != T::VERSION {
        return Err(ConnectorError::Checkpoint {
            path: path.to_path_buf(),
            problem: format!(
                "has format version {}, this syncflow reads version {}",
                checkpoint.version(),
                T::VERSION
            ),
            fix: T::FIX.into(),
        });
    }
    Ok(Some(checkpoint))
}

/// Writes the checkpoint atomically: temporary file, fsync, rename, fsync of
/// the directory.
pub(crate) fn store<T: Versioned>(checkpoint: &T, path: &Path) -> Result<(), ConnectorError> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(checkpoint).map_err(|e| ConnectorError::Checkpoint {
        path: path.to_path_buf(),
        problem: format!("could not be encoded ({e})"),
        fix: "report this as a syncflow bug".into(),
    })?;
    let write = || -> io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        ConnectorError::io(
            "write checkpoint file",
            path,
            e,
            "check that the state directory is writable and the disk is not full",
        )
    })
}
