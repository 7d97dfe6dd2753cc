//! Arguments of `#[sync_function(...)]`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::ctxt::Ctxt;

/// Parsed `#[sync_function(name = "...", crate = path, retry = 3, ...)]`.
#[derive(Default)]
pub struct Args {
    /// `name = "..."`: the registered name.
    pub name: Option<LitStr>,
    /// `crate = path`: where `syncflow` is, when it cannot be found.
    pub krate: Option<syn::Path>,
    /// Default policies of the function (flow files may override them).
    pub policy: PolicyArgs,
}

/// `retry = 3, timeout = "2s", concurrency = 8, rate_limit = "100/s",
/// on_error = "drop"`: defaults for flow files, checked fully when a flow
/// file is loaded (the same rules as the `policies:` section).
#[derive(Default)]
pub struct PolicyArgs {
    pub retry: Option<syn::LitInt>,
    pub timeout: Option<LitStr>,
    pub concurrency: Option<syn::LitInt>,
    pub rate_limit: Option<LitStr>,
    pub on_error: Option<LitStr>,
}

const KNOWN: &str = "`name = \"...\"`, `crate = path`, and default policies `retry = 3`, `timeout = \"2s\"`, `concurrency = 8`, `rate_limit = \"100/s\"`, `on_error = \"drop\"`";
const KEYS: [&str; 7] = [
    "name",
    "crate",
    "retry",
    "timeout",
    "concurrency",
    "rate_limit",
    "on_error",
];

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
                "retry" | "concurrency" => {
                    let slot = if key == "retry" {
                        &mut args.policy.retry
                    } else {
                        &mut args.policy.concurrency
                    };
                    if slot.is_some() {
                        cx.error_spanned_by(
                            &nv.path,
                            format!("duplicate `{key}` argument: give it once"),
                        );
                        continue;
                    }
                    match &nv.value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Int(n), ..
                        }) if n.base10_parse::<u32>().is_ok_and(|v| v >= 1) => *slot = Some(n.clone()),
                        other => cx.error_spanned_by(
                            other,
                            if key == "retry" {
                                "`retry` takes the number of attempts in all, at least 1: `retry = 3`"
                            } else {
                                "`concurrency` takes the most calls in progress at once, at least 1: `concurrency = 8`"
                            },
                        ),
                    }
                }
                "timeout" | "rate_limit" | "on_error" => {
                    let slot = match key.as_str() {
                        "timeout" => &mut args.policy.timeout,
                        "rate_limit" => &mut args.policy.rate_limit,
                        _ => &mut args.policy.on_error,
                    };
                    if slot.is_some() {
                        cx.error_spanned_by(
                            &nv.path,
                            format!("duplicate `{key}` argument: give it once"),
                        );
                        continue;
                    }
                    let example = match key.as_str() {
                        "timeout" => "`timeout = \"2s\"` (ms, s, m, h)",
                        "rate_limit" => "`rate_limit = \"100/s\"` (per s, min or h)",
                        _ => "`on_error = \"drop\"` (`dead_letter`, `drop`, `skip` or `stop`)",
                    };
                    match &nv.value {
                        Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        }) => {
                            let v = s.value();
                            let ok = match key.as_str() {
                                "on_error" => {
                                    ["dead_letter", "drop", "skip", "stop"].contains(&v.as_str())
                                }
                                "timeout" => {
                                    v.chars().next().is_some_and(|c| c.is_ascii_digit())
                                        && v.chars().any(|c| c.is_ascii_alphabetic())
                                }
                                _ => v.contains('/'),
                            };
                            if ok {
                                *slot = Some(s.clone());
                            } else {
                                cx.error_spanned_by(
                                    s,
                                    format!("`{key}` cannot be `{v}`: write {example}"),
                                );
                            }
                        }
                        other => {
                            cx.error_spanned_by(other, format!("`{key}` takes a string: {example}"))
                        }
                    }
                }
                _ => {
                    let path = &nv.path;
                    let shown = quote::quote!(#path).to_string().replace(' ', "");
                    let hint = match KEYS.into_iter().find(|k| near(&shown, k)) {
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
