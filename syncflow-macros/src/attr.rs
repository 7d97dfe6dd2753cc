//! Arguments of `#[sync_function(...)]`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::ctxt::Ctxt;

/// Parsed `#[sync_function(name = "...", crate = path)]`.
#[derive(Default)]
pub struct Args {
    /// `name = "..."`: the registered name.
    pub name: Option<LitStr>,
    /// `crate = path`: where `syncflow` is, when it cannot be found.
    pub krate: Option<syn::Path>,
}

const KNOWN: &str = "`name = \"...\"` or `crate = path`";

struct RawArgs(Punctuated<Meta, Token![,]>);

impl Parse for RawArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Punctuated::parse_terminated(input).map(RawArgs)
    }
}

impl Args {
    /// Parses the attribute arguments, recording every problem in `cx`.
    pub fn parse(cx: &Ctxt, tokens: proc_macro2::TokenStream) -> Args {
        let mut args = Args::default();
        let raw = match syn::parse2::<RawArgs>(tokens) {
            Ok(raw) => raw,
            Err(err) => {
                cx.syn_error(syn::Error::new(
                    err.span(),
                    format!("{err}; #[sync_function] takes {KNOWN}"),
                ));
                return args;
            }
        };
        for meta in raw.0 {
            let Meta::NameValue(nv) = &meta else {
                cx.error_spanned_by(
                    &meta,
                    format!("expected `key = value`; #[sync_function] takes {KNOWN}"),
                );
                continue;
            };
            let key = nv
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            match key.as_str() {
                "name" => {
                    if args.name.is_some() {
                        cx.error_spanned_by(
                            &nv.path,
                            "duplicate `name` argument: a function is registered under one name",
                        );
                        continue;
                    }
                    match &nv.value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => {
                            if s.value().trim().is_empty() {
                                cx.error_spanned_by(s, "`name` must not be empty");
                            } else if s.value().chars().any(char::is_whitespace) {
                                cx.error_spanned_by(s, "`name` must not contain whitespace: flow files refer to functions by this name");
                            } else {
                                args.name = Some(s.clone());
                            }
                        }
                        other => cx.error_spanned_by(
                            other,
                            "`name` takes a string literal: `name = \"parse_order\"`",
                        ),
                    }
                }
                "crate" => {
                    if args.krate.is_some() {
                        cx.error_spanned_by(&nv.path, "duplicate `crate` argument: give it once");
                        continue;
                    }
                    match &nv.value {
                        Expr::Path(p) => args.krate = Some(p.path.clone()),
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => match s.parse::<syn::Path>() {
                            Ok(p) => args.krate = Some(p),
                            Err(_) => cx
                                .error_spanned_by(s, "`crate` takes a path: `crate = my_syncflow`"),
                        },
                        other => cx
                            .error_spanned_by(other, "`crate` takes a path: `crate = my_syncflow`"),
                    }
                }
                _ => {
                    let path = &nv.path;
                    let shown = quote::quote!(#path).to_string().replace(' ', "");
                    let hint = match ["name", "crate"].into_iter().find(|k| near(&shown, k)) {
                        Some(k) => format!("did you mean `{k}`? "),
                        None => String::new(),
                    };
                    cx.error_spanned_by(
                        path,
                        format!("unknown argument `{shown}`: {hint}#[sync_function] takes {KNOWN}"),
                    );
                }
            }
        }
        args
    }
}

/// Whether `a` is a likely typo of `b`: at most two single-character edits
/// (two swapped letters count as two).
fn near(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()] <= 2
}
