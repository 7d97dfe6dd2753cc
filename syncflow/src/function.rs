//! Operators: what `#[sync_function]` turns a plain function into.
//!
//! A sync function is described by a [`StepInfo`] (its name, types, source
//! location and doc), typed by [`Operator`] (its payload input and item
//! output), and made callable from a flow by [`Step`]. The macro writes all
//! three; users only ever write the plain function.

use std::fmt;
use std::future::Future;

use crate::context::{Context, ContextError, Resources};
use crate::monitor::{Monitor, StepRef};

/// How a function's return value turns into zero, one or many messages for
/// the next step. Chosen by the macro from the return type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `T`: one message in, one message out.
    Map,
    /// `Option<T>`: `None` drops the message (counted as filtered).
    Filter,
    /// `Result<T, E>`: `Err` goes to the flow's error handling.
    Fallible,
    /// `Result<Option<T>, E>`: fallible filter.
    FallibleFilter,
    /// `Vec<T>`: every item goes through the rest of the flow.
    FanOut,
    /// `Result<Vec<T>, E>`: fallible fan-out.
    FallibleFanOut,
}

impl Shape {
    /// A short human name, as shown by `syncflow functions`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Shape::Map => "map",
            Shape::Filter => "filter",
            Shape::Fallible => "fallible map",
            Shape::FallibleFilter => "fallible filter",
            Shape::FanOut => "fan-out",
            Shape::FallibleFanOut => "fallible fan-out",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Static description of one sync function, written by `#[sync_function]`.
///
/// Type names are functions because `std::any::type_name` is not `const`.
#[derive(Debug)]
pub struct StepInfo {
    /// Registered name (the function name unless `name = "..."` is given).
    pub name: &'static str,
    /// Rust name of the function.
    pub fn_name: &'static str,
    /// `module_path!()` of the function.
    pub module: &'static str,
    /// The function's doc comment, lines joined with `\n`.
    pub doc: &'static str,
    /// Source file of the function.
    pub file: &'static str,
    /// Line of the function's name in [`StepInfo::file`].
    pub line: u32,
    /// Whether the function is an `async fn`.
    pub is_async: bool,
    /// How the return value becomes messages.
    pub shape: Shape,
    /// Name of the payload (first parameter) type.
    pub input: fn() -> &'static str,
    /// Name of the type of each message the function emits.
    pub output: fn() -> &'static str,
}

impl StepInfo {
    /// The payload input type name.
    pub fn input_type(&self) -> &'static str {
        (self.input)()
    }
    /// The emitted message type name.
    pub fn output_type(&self) -> &'static str {
        (self.output)()
    }
    /// A one-line summary of the doc comment (its first paragraph line).
    pub fn summary(&self) -> &'static str {
        self.doc
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

/// The type-level face of a sync function: what it takes and what it emits.
///
/// Implemented by `#[sync_function]` on a braced unit struct that shares
/// the function's name (the function lives in the value namespace, the
/// struct in the type namespace).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a sync function",
    label = "not annotated with `#[sync_function]`",
    note = "add `#[sync_function]` to the function so that it can be used as a flow step"
)]
pub trait Operator {
    /// The payload the function takes (its first parameter).
    type Input;
    /// The type of each message the function emits.
    type Output;
    /// Static description of the function.
    const INFO: &'static StepInfo;
    /// Checks, before a flow starts, that every context parameter the
    /// function asks for can be supplied; pushes one line per problem.
    fn check(resources: &Resources, problems: &mut Vec<String>) {
        let _ = (resources, problems);
    }
}

/// Why a step did not produce its messages.
#[derive(Debug)]
pub enum Failure<E> {
    /// The function returned `Err`.
    User(E),
    /// A context parameter could not be supplied (e.g. a missing resource).
    Context(ContextError),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::User(e) => e.fmt(f),
            Failure::Context(e) => e.fmt(f),
        }
    }
}

/// The error type of functions that cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

/// Marks the first step of a flow, which has no previous step.
#[derive(Debug, Clone, Copy)]
pub struct FlowInput;

/// A sync function that accepts `In` when it follows `Prev` in a flow.
///
/// `flow!` calls every step through this trait, spanned at the step's name,
/// so that a type mismatch is reported at the step that does not fit.
/// `Prev` only serves that message: every generated impl accepts any `Prev`.
#[diagnostic::on_unimplemented(
    message = "flow step `{Self}` cannot take `{In}`, the output of the previous step `{Prev}`",
    label = "`{Self}` does not accept `{In}`",
    note = "each step's input type must equal the previous step's output type: change the payload parameter of `{Self}`, or put a step between `{Prev}` and `{Self}` that turns `{In}` into what `{Self}` takes",
    note = "a step that returns `Option<T>`, `Result<T, E>` or `Vec<T>` passes on `T`"
)]
pub trait Step<In, Prev = FlowInput>: Operator {
    /// What a successful call yields: iterated to feed the next step.
    type Items: IntoIterator<Item = Self::Output> + Send;
    /// The function's own error type ([`Never`] for infallible shapes).
    type Error: fmt::Display + Send;
    /// Calls the function with the payload and the context parameters it asks for.
    fn call<'a>(
        &'a self,
        cx: &'a Context,
        input: In,
    ) -> impl Future<Output = Result<Self::Items, Failure<Self::Error>>> + Send + 'a;

    /// Calls a synchronous function directly, without a future, and hands
    /// each message it emits to `next` (continuation-passing: the message
    /// moves straight into the next step, as in a hand-written chain).
    ///
    /// When `timed`, the monitor's `enter`/`exit` hooks are called around the
    /// function itself; the monitor is passed on to `next`, which runs the
    /// rest of the flow. Returns how many messages were emitted, or the failure.
    ///
    /// Flows whose steps are all synchronous (`Operator::INFO.is_async` is
    /// false for each) run through this path. For an `async fn` it is never
    /// called; the default panics because calling it would be a bug in the caller.
    #[inline(always)]
    fn call_now<M, N>(
        &self,
        cx: &Context,
        input: In,
        monitor: &mut M,
        step: StepRef,
        timed: bool,
        next: N,
    ) -> Result<usize, Failure<Self::Error>>
    where
        M: Monitor,
        N: FnMut(Self::Output, &mut M),
    {
        let _ = (cx, input, monitor, step, timed, next);
        panic!(
            "`{}` is an async sync function: it can only be called through `Step::call`",
            Self::INFO.name
        )
    }
}

/// Turning a function's return value into a step result, by shape.
#[doc(hidden)]
pub mod outcome {
    use super::{Failure, Never};
    use crate::monitor::{Monitor, StepRef};

    /// `Option<T>`, by any name.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not `core::option::Option`",
        note = "#[sync_function] treats a return type named `Option` as a filter; if this is a type of your own, rename it or wrap it in a struct"
    )]
    pub trait OptionLike {
        /// The `T` of `Option<T>`.
        type Item;
        /// Into a std `Option`.
        fn into_option(self) -> Option<Self::Item>;
    }
    impl<T> OptionLike for Option<T> {
        type Item = T;
        #[inline(always)]
        fn into_option(self) -> Option<T> {
            self
        }
    }

    /// `Result<T, E>`, by any name (aliases such as `anyhow::Result<T>` included).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not `core::result::Result`",
        note = "#[sync_function] treats a return type named `Result` as fallible; if this is a type of your own, rename it or wrap it in a struct"
    )]
    pub trait ResultLike {
        /// The success type.
        type Ok;
        /// The error type.
        type Err;
        /// Into a std `Result`.
        fn into_result(self) -> Result<Self::Ok, Self::Err>;
    }
    impl<T, E> ResultLike for Result<T, E> {
        type Ok = T;
        type Err = E;
        #[inline(always)]
        fn into_result(self) -> Result<T, E> {
            self
        }
    }

    /// Calls the monitor's `enter` hook when the message is timed.
    #[inline(always)]
    pub fn enter_if<M: Monitor>(timed: bool, monitor: &mut M, step: StepRef) -> Option<M::Timer> {
        if timed {
            Some(monitor.enter(step))
        } else {
            None
        }
    }
    /// Calls the monitor's `exit` hook when the message is timed.
    #[inline(always)]
    pub fn exit_if<M: Monitor>(timer: Option<M::Timer>, monitor: &mut M, step: StepRef) {
        if let Some(timer) = timer {
            monitor.exit(step, timer);
        }
    }

    /// `T`: one message, handed on.
    #[inline(always)]
    pub fn route_map<T, M, N: FnMut(T, &mut M)>(
        v: T,
        monitor: &mut M,
        mut next: N,
    ) -> Result<usize, Failure<Never>> {
        next(v, monitor);
        Ok(1)
    }
    /// `Option<T>`: zero or one message, handed on.
    #[inline(always)]
    ///
    /// Takes `Option` itself, not `impl OptionLike`: the identity conversion
    /// through the trait costs a copy of the message (measured: 1.20x instead
    /// of 1.04x the hand-written time on a 5-step chain).
    pub fn route_filter<T, M, N: FnMut(T, &mut M)>(
        v: Option<T>,
        monitor: &mut M,
        mut next: N,
    ) -> Result<usize, Failure<Never>> {
        match v {
            Some(x) => {
                next(x, monitor);
                Ok(1)
            }
            None => Ok(0),
        }
    }
    /// The failure of a `Result` known to be `Err`, out of line.
    ///
    /// Reading the error where the `Ok` value is also moved on makes LLVM
    /// split the result's stack slot at the error's offset, so the message
    /// is then copied to the next step in misaligned pieces (measured: +12%
    /// time on a 5-step chain of 128-byte records). Taking the error in a
    /// cold function keeps the `Ok` path a plain aligned move.
    #[cold]
    #[inline(never)]
    fn failure<T, E>(r: Result<T, E>) -> Result<usize, Failure<E>> {
        r.map(|_| 0).map_err(Failure::User)
    }

    /// `Result<T, E>`: one message handed on, or the error.
    #[inline(always)]
    ///
    /// Takes `Result` itself, for the same reason as [`route_filter`].
    pub fn route_fallible<T, E, M, N: FnMut(T, &mut M)>(
        v: Result<T, E>,
        monitor: &mut M,
        mut next: N,
    ) -> Result<usize, Failure<E>> {
        match v {
            Ok(x) => {
                next(x, monitor);
                Ok(1)
            }
            r @ Err(_) => failure(r),
        }
    }
    /// `Result<Option<T>, E>`.
    #[inline(always)]
    pub fn route_fallible_filter<R, M, N>(
        v: R,
        monitor: &mut M,
        next: N,
    ) -> Result<usize, Failure<R::Err>>
    where
        R: ResultLike,
        R::Ok: OptionLike,
        N: FnMut(<R::Ok as OptionLike>::Item, &mut M),
    {
        match v.into_result() {
            Ok(x) => route_filter(x.into_option(), monitor, next).map_err(|never| match never {
                Failure::User(n) => match n {},
                Failure::Context(c) => Failure::Context(c),
            }),
            r @ Err(_) => failure(r),
        }
    }
    /// `Vec<T>`: every item handed on, in order.
    #[inline(always)]
    pub fn route_fan_out<R: IntoIterator, M, N: FnMut(R::Item, &mut M)>(
        v: R,
        monitor: &mut M,
        mut next: N,
    ) -> Result<usize, Failure<Never>> {
        let mut n = 0;
        for x in v {
            n += 1;
            next(x, monitor);
        }
        Ok(n)
    }
    /// `Result<Vec<T>, E>`.
    #[inline(always)]
    pub fn route_fallible_fan_out<R, M, N>(
        v: R,
        monitor: &mut M,
        mut next: N,
    ) -> Result<usize, Failure<R::Err>>
    where
        R: ResultLike,
        R::Ok: IntoIterator,
        N: FnMut(<R::Ok as IntoIterator>::Item, &mut M),
    {
        match v.into_result() {
            Ok(items) => {
                let mut n = 0;
                for x in items {
                    n += 1;
                    next(x, monitor);
                }
                Ok(n)
            }
            r @ Err(_) => failure(r),
        }
    }

    /// `T`: one message.
    #[inline(always)]
    pub fn out_map<T>(v: T) -> Result<Option<T>, Failure<Never>> {
        Ok(Some(v))
    }
    /// `Option<T>`: zero or one message.
    #[inline(always)]
    pub fn out_filter<R: OptionLike>(v: R) -> Result<Option<R::Item>, Failure<Never>> {
        Ok(v.into_option())
    }
    /// `Result<T, E>`.
    #[inline(always)]
    pub fn out_fallible<R: ResultLike>(v: R) -> Result<Option<R::Ok>, Failure<R::Err>> {
        match v.into_result() {
            Ok(x) => Ok(Some(x)),
            Err(e) => Err(Failure::User(e)),
        }
    }
    /// `Result<Option<T>, E>`.
    #[inline(always)]
    pub fn out_fallible_filter<R>(
        v: R,
    ) -> Result<Option<<R::Ok as OptionLike>::Item>, Failure<R::Err>>
    where
        R: ResultLike,
        R::Ok: OptionLike,
    {
        match v.into_result() {
            Ok(x) => Ok(x.into_option()),
            Err(e) => Err(Failure::User(e)),
        }
    }
    /// `Vec<T>`: any number of messages.
    #[inline(always)]
    pub fn out_fan_out<R: IntoIterator>(v: R) -> Result<R, Failure<Never>> {
        Ok(v)
    }
    /// `Result<Vec<T>, E>`.
    #[inline(always)]
    pub fn out_fallible_fan_out<R: ResultLike>(v: R) -> Result<R::Ok, Failure<R::Err>> {
        v.into_result().map_err(Failure::User)
    }
}
