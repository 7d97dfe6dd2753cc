//! Sources and sinks of flow files.

use std::path::PathBuf;

use serde_saphyr::Spanned;

use super::env;
use super::model::{SinkSpec, SourceSpec};
use super::{ConfigError, ConfigErrors, SinkPlan, SourcePlan};

pub(super) fn check_source(
    flow: &str,
    spec: &Spanned<SourceSpec>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<SourcePlan> {
    let loc = spec.referenced;
    let s = &spec.value;
    let at = |message: String| ConfigError::new(origin, loc, message);
    let connectors = s.connectors();
    let kinds = [s.file.is_some(), s.stdin == Some(true), s.load.is_some()];
    if kinds.iter().filter(|k| **k).count() + connectors.len() != 1 {
        errors.push(at(format!(
            "a source is exactly one of `file: <path>`, `stdin: true`, `load: <channel>` or a connector ({})",
            connector_keys(super::connectors::SOURCE_KEYS)
        )));
        return None;
    }
    if let [(key, settings)] = connectors.as_slice() {
        if s.state_dir.is_some() || s.reader.is_some() {
            errors.push(at(format!(
                "`state_dir` and `reader` apply to `file` and `load` sources only: the `{key}` connector keeps its position itself (see its settings)"
            )));
            return None;
        }
        return super::connectors::source(key, (*settings).clone())
            .map(SourcePlan::Connector)
            .map_err(|m| errors.push(at(format!("source {m}"))))
            .ok();
    }
    if let Some(channel) = &s.load {
        if s.state_dir.is_some() {
            errors.push(at(
                "`state_dir` applies to a `file` source only: a `load` source keeps its cursor in the channel store".to_string(),
            ));
            return None;
        }
        let reader = s.reader.clone().unwrap_or_else(|| flow.to_string());
        let mut ok = true;
        for (kind, name) in [("channel", channel.as_str()), ("reader", reader.as_str())] {
            if let Err(e) = crate::channel::check_name(kind, name) {
                errors.push(at(e.to_string()));
                ok = false;
            }
        }
        return ok.then(|| SourcePlan::Load {
            channel: channel.clone(),
            reader,
        });
    }
    if s.reader.is_some() {
        errors.push(at("`reader` applies to a `load` source only".to_string()));
        return None;
    }
    if let Some(file) = &s.file {
        let path = env::interpolate(file)
            .map_err(|m| errors.push(at(format!("source file: {m}"))))
            .ok()?;
        let state_dir = match &s.state_dir {
            Some(dir) => Some(PathBuf::from(
                env::interpolate(dir)
                    .map_err(|m| errors.push(at(format!("source state_dir: {m}"))))
                    .ok()?,
            )),
            None => None,
        };
        return Some(SourcePlan::File {
            path: PathBuf::from(path),
            state_dir,
        });
    }
    if s.state_dir.is_some() {
        errors.push(at(
            "`state_dir` applies to a `file` source only: standard input cannot be resumed"
                .to_string(),
        ));
        return None;
    }
    Some(SourcePlan::Stdin)
}

pub(super) fn check_sink(
    spec: &Spanned<SinkSpec>,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<SinkPlan> {
    let loc = spec.referenced;
    let s = &spec.value;
    let at = |message: String| ConfigError::new(origin, loc, message);
    let connectors = s.connectors();
    let kinds = [s.file.is_some(), s.stdout == Some(true), s.save.is_some()];
    if kinds.iter().filter(|k| **k).count() + connectors.len() != 1 {
        errors.push(at(format!(
            "a sink is exactly one of `file: <path>`, `stdout: true`, `save: <channel>` or a connector ({})",
            connector_keys(super::connectors::SINK_KEYS)
        )));
        return None;
    }
    if let [(key, settings)] = connectors.as_slice() {
        if s.append.is_some() || s.fsync.is_some() {
            errors.push(at(format!(
                "`append` and `fsync` apply to a `file` sink only, not to the `{key}` connector"
            )));
            return None;
        }
        return super::connectors::sink(key, (*settings).clone())
            .map(SinkPlan::Connector)
            .map_err(|m| errors.push(at(format!("sink {m}"))))
            .ok();
    }
    if let Some(channel) = &s.save {
        if s.append.is_some() || s.fsync.is_some() {
            errors.push(at(
                "`append` and `fsync` apply to a `file` sink only: a channel is always appended to, durably".to_string(),
            ));
            return None;
        }
        if let Err(e) = crate::channel::check_name("channel", channel) {
            errors.push(at(e.to_string()));
            return None;
        }
        return Some(SinkPlan::Save {
            channel: channel.clone(),
        });
    }
    if let Some(file) = &s.file {
        let path = env::interpolate(file)
            .map_err(|m| errors.push(at(format!("sink file: {m}"))))
            .ok()?;
        return Some(SinkPlan::File {
            path: PathBuf::from(path),
            append: s.append.unwrap_or(false),
            fsync: s.fsync.unwrap_or(true),
        });
    }
    if s.append.is_some() || s.fsync.is_some() {
        errors.push(at(
            "`append` and `fsync` apply to a `file` sink only".to_string()
        ));
        return None;
    }
    Some(SinkPlan::Stdout)
}

/// `a`, `b`, `c`: the connector keys, for messages.
fn connector_keys(keys: &[(&str, &str)]) -> String {
    keys.iter()
        .map(|(k, _)| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
