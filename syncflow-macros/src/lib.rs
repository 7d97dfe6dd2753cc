//! Procedural macros of [syncflow](https://docs.rs/syncflow): `#[sync_function]` and `flow!`.
//!
//! Use them through the `syncflow` crate, which re-exports them; the
//! architecture chapter of the syncflow book shows what they expand to.

mod attr;
mod ctxt;
mod expand_fn;
mod flow;
mod paths;
mod sig;

use proc_macro::TokenStream;

/// Turns a plain function into a registered, typed, monitored flow step.
///
/// See `syncflow::sync_function` for the documentation.
#[proc_macro_attribute]
pub fn sync_function(args: TokenStream, item: TokenStream) -> TokenStream {
    expand_fn::expand(args.into(), item.into()).into()
}

/// The engine of `syncflow::flow!`; call that macro instead.
#[doc(hidden)]
#[proc_macro]
pub fn __flow(input: TokenStream) -> TokenStream {
    flow::expand(input.into()).into()
}
