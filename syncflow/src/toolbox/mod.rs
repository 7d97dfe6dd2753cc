//! Built-in operators for JSON messages (work in progress).
pub mod expr;
pub use expr::{EvalError, EvalErrorKind, Expr, ExprError};
