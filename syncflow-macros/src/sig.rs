//! The signature model of a sync function, and every check on it.

use proc_macro2::TokenStream;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, PathArguments, ReturnType, Signature,
    Type, Visibility,
};

use crate::ctxt::Ctxt;

/// A function item whose body is kept as raw tokens, so that a body that
/// does not parse (while the user is typing) still gets its operator
/// generated and rust-analyzer keeps working.
pub struct LooseFn {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    #[allow(dead_code)]
    pub body: TokenStream,
}

impl Parse for LooseFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body: TokenStream = input.parse()?;
        Ok(LooseFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

/// How the return value becomes messages (mirrors `syncflow::Shape`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    Map,
    Filter,
    Fallible,
    FallibleFilter,
    FanOut,
    FallibleFanOut,
}

impl Shape {
    pub fn variant(self) -> &'static str {
        match self {
            Shape::Map => "Map",
            Shape::Filter => "Filter",
            Shape::Fallible => "Fallible",
            Shape::FallibleFilter => "FallibleFilter",
            Shape::FanOut => "FanOut",
            Shape::FallibleFanOut => "FallibleFanOut",
        }
    }
}

/// A validated signature.
pub struct Sig<'a> {
    pub ident: &'a Ident,
    pub is_async: bool,
    /// The `async` keyword's span (the name's when not async).
    pub async_span: proc_macro2::Span,
    pub payload: &'a Type,
    pub extras: Vec<&'a Type>,
    pub ret: &'a Type,
    pub shape: Shape,
}

const SHAPES: &str = "`T` (map), `Option<T>` (filter), `Result<T, E>`, `Result<Option<T>, E>`, `Vec<T>` (fan-out) or `Result<Vec<T>, E>`";

/// Checks the signature, recording every problem; `None` if any was found.
pub fn analyse<'a>(cx: &Ctxt, sig: &'a Signature) -> Option<Sig<'a>> {
    let errors_before = cx.len();
    if let Some(c) = &sig.constness {
        cx.error_spanned_by(c, "a sync function cannot be a `const fn`: a flow calls it at run time; remove `const`, or keep the const fn and call it from a plain #[sync_function]");
    }
    if let Some(u) = &sig.unsafety {
        cx.error_spanned_by(u, "a sync function cannot be `unsafe`: a flow has no way to uphold its safety contract; call the unsafe code from a safe function instead");
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(abi, "a sync function cannot have an `extern` ABI: remove it, or call the extern function from a plain #[sync_function]");
    }
    if let Some(v) = &sig.variadic {
        cx.error_spanned_by(v, "a sync function cannot be variadic");
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(l) => cx.error_spanned_by(l, "a sync function cannot have lifetime parameters: take the payload by value (an owned type) and context parameters with elided lifetimes, e.g. `meta: &Meta`"),
            GenericParam::Type(t) => cx.error_spanned_by(t, "a sync function cannot be generic: a flow step needs one concrete input and output type; write a non-generic #[sync_function] that calls the generic function with concrete types"),
            GenericParam::Const(c) => cx.error_spanned_by(c, "a sync function cannot have const parameters: a flow step needs one concrete signature; write a #[sync_function] that calls it with a fixed value"),
        }
    }
    if let Some(w) = &sig.generics.where_clause {
        cx.error_spanned_by(
            w,
            "a sync function cannot have a `where` clause: it must not be generic",
        );
    }

    let mut inputs = sig.inputs.iter();
    let payload = match inputs.next() {
        None => {
            cx.syn_error(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "a sync function takes its payload as the first parameter: `fn {}(payload: T) -> ...`; the payload is the message from the previous step or the source",
                    sig.ident
                ),
            ));
            None
        }
        Some(FnArg::Receiver(r)) => {
            cx.error_spanned_by(r, "a sync function cannot take `self`: it must be a free function; to reach shared state, take a `Res<T>` context parameter and register the value with `.resource(...)`");
            None
        }
        Some(FnArg::Typed(pt)) => {
            check_payload(cx, &pt.ty);
            Some(&*pt.ty)
        }
    };
    let mut extras = Vec::new();
    for arg in inputs {
        match arg {
            FnArg::Receiver(r) => cx.error_spanned_by(r, "a sync function cannot take `self`"),
            FnArg::Typed(pt) => {
                if let Type::ImplTrait(_) = &*pt.ty {
                    cx.error_spanned_by(&pt.ty, "`impl Trait` parameters make the function generic: name a concrete type; context parameters are `&Meta`, `&Context` or `Res<T>`");
                } else {
                    extras.push(&*pt.ty);
                }
            }
        }
    }

    let ret = match &sig.output {
        ReturnType::Default => {
            cx.error_spanned_by(&sig.ident, format!("a sync function must return what the next step receives: {SHAPES}; a function without a return value cannot be a step"));
            None
        }
        ReturnType::Type(_, ty) => check_return(cx, ty).then_some(&**ty),
    };

    if cx.len() != errors_before {
        return None;
    }
    let (payload, ret) = (payload?, ret?);
    Some(Sig {
        ident: &sig.ident,
        is_async: sig.asyncness.is_some(),
        async_span: sig.asyncness.map_or_else(|| sig.ident.span(), |a| a.span),
        payload,
        extras,
        ret,
        shape: shape_of(ret),
    })
}

fn check_payload(cx: &Ctxt, ty: &Type) {
    match ty {
        Type::Reference(r) => {
            let owned = owned_form(&r.elem);
            cx.error_spanned_by(
                ty,
                format!(
                    "the payload must be an owned type, not a reference: a flow moves each message from step to step; take `{owned}` instead"
                ),
            );
        }
        Type::ImplTrait(_) => cx.error_spanned_by(ty, "the payload cannot be `impl Trait`: that makes the function generic; name the concrete type"),
        Type::Infer(_) => cx.error_spanned_by(ty, "the payload type must be written out"),
        _ => {}
    }
}

fn check_return(cx: &Ctxt, ty: &Type) -> bool {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => {
            cx.error_spanned_by(
                ty,
                format!(
                    "a sync function must return what the next step receives, not `()`: {SHAPES}"
                ),
            );
            false
        }
        Type::Never(_) => {
            cx.error_spanned_by(ty, format!("a sync function cannot return `!`: it must return what the next step receives: {SHAPES}"));
            false
        }
        Type::ImplTrait(_) => {
            cx.error_spanned_by(ty, format!("a sync function cannot return `impl Trait`: the next step needs a nameable type; for fan-out return `Vec<T>`; supported: {SHAPES}"));
            false
        }
        Type::Reference(_) => {
            cx.error_spanned_by(ty, "a sync function must return an owned value: the message moves on to the next step; return the type by value");
            false
        }
        Type::TraitObject(_) | Type::Infer(_) => {
            cx.error_spanned_by(ty, format!("unsupported return type; supported: {SHAPES}"));
            false
        }
        _ => true,
    }
}

/// What to take instead of a reference to `elem`: `String` for `str`,
/// `Vec<T>` for `[T]`, else `elem` itself.
fn owned_form(elem: &Type) -> String {
    let text = |t: &Type| quote::quote!(#t).to_string().replace(' ', "");
    match elem {
        Type::Path(p) if p.path.is_ident("str") => "String".to_string(),
        Type::Path(p) if p.path.is_ident("Path") => "PathBuf".to_string(),
        Type::Slice(s) => format!("Vec<{}>", text(&s.elem)),
        other => text(other),
    }
}

/// The last path segment's name and its type arguments, if `ty` is a path.
fn head(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

/// Decides the shape by the syntax of the return type; the generated code
/// then extracts the types through traits implemented on the real std
/// types, so aliases such as `anyhow::Result<T>` work too.
fn shape_of(ret: &Type) -> Shape {
    match head(ret) {
        Some((name, args)) if name == "Option" && args.len() == 1 => Shape::Filter,
        Some((name, args)) if name == "Vec" && !args.is_empty() => Shape::FanOut,
        Some((name, args)) if name == "Result" && !args.is_empty() => match head(args[0]) {
            Some((inner, a)) if inner == "Option" && a.len() == 1 => Shape::FallibleFilter,
            Some((inner, a)) if inner == "Vec" && !a.is_empty() => Shape::FallibleFanOut,
            _ => Shape::Fallible,
        },
        _ => Shape::Map,
    }
}
