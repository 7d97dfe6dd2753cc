//! Where the `syncflow` crate is, as seen from the code being expanded.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::quote;

/// The path to `syncflow` for `#[sync_function]`: the `crate = ...`
/// argument when given, else the name the caller's Cargo.toml gives the
/// dependency (so a renamed dependency works), else `::syncflow`.
pub fn syncflow_path(explicit: Option<syn::Path>) -> TokenStream {
    if let Some(path) = explicit {
        return quote!(#path);
    }
    match crate_name("syncflow") {
        // Inside the syncflow package, only the library itself is `crate`:
        // its benches, examples and integration tests see `::syncflow`.
        // Doctests are compiled with the library's environment (rustdoc
        // marks them with `UNSTABLE_RUSTDOC_TEST_PATH`) but are crates of
        // their own.
        Ok(FoundCrate::Itself)
            if std::env::var("CARGO_CRATE_NAME").is_ok_and(|n| n == "syncflow")
                && std::env::var_os("CARGO_BIN_NAME").is_none()
                && std::env::var_os("UNSTABLE_RUSTDOC_TEST_PATH").is_none() =>
        {
            quote!(crate)
        }
        Ok(FoundCrate::Itself) => quote!(::syncflow),
        Ok(FoundCrate::Name(name)) => {
            let ident = syn::Ident::new(&name, Span::call_site());
            quote!(::#ident)
        }
        Err(_) => quote!(::syncflow),
    }
}

/// Moves every token of `tokens` to `at`'s location, keeping each token's
/// hygiene. Used so that a whole generated expression (or impl header)
/// reports its errors at one user token, e.g. a step's name in `flow!`.
pub fn relocate(tokens: TokenStream, at: Span) -> TokenStream {
    respan_with(tokens, &|s: Span| s.located_at(at))
}

/// Gives every token of `tokens` the span `at`, hygiene included, so that
/// rustc can join them into one span (an impl header whose `help:` line
/// should underline the user's payload type). Only for tokens that bind no
/// local names.
pub fn respan(tokens: TokenStream, at: Span) -> TokenStream {
    respan_with(tokens, &|_| at)
}

fn respan_with(tokens: TokenStream, f: &dyn Fn(Span) -> Span) -> TokenStream {
    use proc_macro2::{Group, TokenTree};
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut group = Group::new(g.delimiter(), respan_with(g.stream(), f));
                group.set_span(f(g.span()));
                TokenTree::Group(group)
            }
            mut other => {
                other.set_span(f(other.span()));
                other
            }
        })
        .collect()
}
