//! Shared helpers of the syncflow test suite.
//!
//! - [`Recorder`]: a [`Monitor`] that records every hook call, to check
//!   exactly what a flow tells its monitors;
//! - [`lib_ops`]: sync functions defined in this (library) crate, to check
//!   that functions of a linked dependency are registered too;
//! - [`services`]: the local services of the connector tests, skipped with a
//!   printed reason where one is missing, required in CI;
//! - [`proxy`]: a TCP proxy that cuts a connector's connections to a real
//!   service, as a server restart does.

pub mod proxy;
pub mod services;

use std::fmt;
use std::sync::{Arc, Mutex};

use syncflow::prelude::*;

/// One hook call seen by a [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `enter(step)`, with the number of the timer it handed out.
    Enter(&'static str, usize, u64),
    /// `exit(step)`, with the number of the timer it got back.
    Exit(&'static str, usize, u64),
    /// `emitted(step, items)`.
    Emitted(&'static str, usize, usize),
    /// `failed(step, error)`.
    Failed(&'static str, usize, String),
    /// `flush()`.
    Flush,
}

/// A monitor that records every hook call; its forks share the record.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
    next_timer: u64,
}

impl Recorder {
    /// A recorder with an empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
}

impl Monitor for Recorder {
    type Timer = u64;

    fn enter(&mut self, step: StepRef) -> u64 {
        self.next_timer += 1;
        self.push(Event::Enter(step.info.name, step.index, self.next_timer));
        self.next_timer
    }

    fn exit(&mut self, step: StepRef, timer: u64) {
        self.push(Event::Exit(step.info.name, step.index, timer));
    }

    fn emitted(&mut self, step: StepRef, items: usize) {
        self.push(Event::Emitted(step.info.name, step.index, items));
    }

    fn failed(&mut self, step: StepRef, error: &dyn fmt::Display) {
        self.push(Event::Failed(step.info.name, step.index, error.to_string()));
    }

    fn flush(&mut self) {
        self.push(Event::Flush);
    }

    fn fork(&self) -> Self {
        Recorder {
            events: self.events.clone(),
            next_timer: 0,
        }
    }
}

/// Sync functions of a library crate.
pub mod lib_ops {
    use syncflow::prelude::*;

    /// Trims a line (registered from the test library crate).
    #[sync_function(name = "lib_trim")]
    pub fn trim(line: String) -> String {
        line.trim().to_string()
    }
}

/// Runs the `syncflow` command line in-process: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = syncflow::cli::Cli::new().execute(
        std::iter::once("syncflow").chain(args.iter().copied()),
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap_or_default(),
        String::from_utf8(err).unwrap_or_default(),
    )
}
