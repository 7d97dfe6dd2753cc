//! # syncflow
//!
//! Typed, monitored message and change-data-capture flows built from plain
//! Rust functions.
//!
//! ```
//! use syncflow::prelude::*;
//!
//! /// Parses a number.
//! #[sync_function]
//! fn parse(line: String) -> Result<i64, std::num::ParseIntError> {
//!     line.trim().parse()
//! }
//!
//! /// Keeps even numbers.
//! #[sync_function]
//! fn even(n: i64) -> Option<i64> {
//!     (n % 2 == 0).then_some(n)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let flow = flow!(name = "evens", parse -> even);
//! let done = flow.run_collect(["2", "3", "x", "4"].map(String::from)).await.unwrap();
//! assert_eq!(done.outputs, vec![2, 4]);
//! assert_eq!(done.failures[0].step, "parse");
//! # }
//! ```
#![warn(missing_docs)]

pub mod admin;
pub mod cdc;
pub mod channel;
pub mod cli;
pub mod config;
pub mod connector;
pub mod context;
pub mod dynamic;
pub mod flow;
pub mod function;
pub mod manage;
pub mod monitor;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod toolbox;

/// Turns a plain function into a registered, typed, monitored flow step.
///
/// ```
/// use syncflow::prelude::*;
///
/// #[derive(Debug, PartialEq)]
/// struct Order { id: u64, cents: i64 }
///
/// /// Drops orders with a non-positive amount.
/// #[sync_function(name = "positive_orders")]
/// fn positive(order: Order) -> Option<Order> {
///     (order.cents > 0).then_some(order)
/// }
///
/// // The function is unchanged and callable as written.
/// assert_eq!(positive(Order { id: 1, cents: 0 }), None);
/// ```
///
/// The first parameter is the payload; further parameters are context
/// parameters (`&Meta`, `&Context`, `Res<T>`). The return type decides what
/// reaches the next step: `T` (map), `Option<T>` (filter), `Result<T, E>`,
/// `Result<Option<T>, E>`, `Vec<T>` (fan-out), `Result<Vec<T>, E>`.
/// Arguments: `name = "..."` (registered name), `crate = path` (where
/// `syncflow` is, when it cannot be found from Cargo.toml).
pub use syncflow_macros::sync_function;

/// Chains sync functions into a statically typed flow: `flow!(a -> b -> c)`,
/// optionally named: `flow!(name = "orders", a -> b -> c)`.
///
/// Each step's payload type must equal the previous step's output type; a
/// mismatch is a compile error at the step that does not fit. The steps are
/// called directly, in one task, with no boxing, channel or allocation in between.
#[macro_export]
macro_rules! flow {
    ($($tokens:tt)*) => {
        $crate::__private::__flow!($crate; $($tokens)*)
    };
}

/// Everything a flow needs, in one import.
pub mod prelude {
    pub use crate::channel::{ChannelStore, LoadSource, SaveSink};
    pub use crate::connector::{
        JsonLinesSink, JsonLinesSource, Sink, Source, StdinSource, StdoutSink,
    };
    pub use crate::context::{Context, Meta, Res};
    pub use crate::flow;
    pub use crate::flow::{Collected, Emit, Flow, StepFailure};
    pub use crate::function::{Shape, StepInfo};
    pub use crate::monitor::{Metrics, Monitor, NoMonitor, StepRef};
    pub use crate::runtime::{DeadLetter, RunError, RunSummary, Runtime, Shutdown};
    pub use crate::sync_function;
}

/// Support for the generated code. Not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use crate::context::{Context, FromContext, Resources};
    pub use crate::flow::{Emit, EmitAny, Flow, FlowDef, StepFailure};
    pub use crate::function::{Failure, FlowInput, Never, Operator, Shape, Step, StepInfo};
    pub use crate::monitor::{Monitor, StepRef};
    pub use crate::registry::{Adapter, AttrPolicy, Registration, TypeCodec, probe};
    pub use crate::toolbox::{ToolKind, ToolStep};
    pub use inventory;
    pub use serde_json::Value as JsonValue;
    pub use std::string::String;
    pub use std::vec::Vec;
    pub use syncflow_macros::__flow;

    pub use crate::function::outcome::*;
}
