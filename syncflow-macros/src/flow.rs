//! Expansion of `flow!(a -> b -> c)`.
//!
//! `syncflow::flow!` is a `macro_rules!` that forwards `$crate` here, so the
//! input is `$crate ; [name = "...",] step -> step -> ...`.
//!
//! The output is a block that defines a hidden struct holding the steps,
//! implements `FlowDef` for it with one `process` function calling every
//! step in order as nested loops, and wraps it in `Flow::new`. Step `k` is
//! called as `<S_k as Step<<S_{k-1} as Operator>::Output, S_{k-1}>>::call`,
//! spanned at the step's name in the macro input, so a type mismatch is one
//! error pointing at the step that does not fit.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{LitStr, Path, Token};

use crate::paths::respan;

struct FlowInput {
    krate: TokenStream,
    name: Option<LitStr>,
    steps: Vec<Path>,
    /// Per step: the arguments of a toolbox step written `path(args)`.
    calls: Vec<Option<TokenStream>>,
}

impl Parse for FlowInput {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `$crate` arrives as one ident-like token tree, followed by `;`.
        let mut krate = TokenStream::new();
        while !input.peek(Token![;]) {
            let tt: proc_macro2::TokenTree = input.parse()?;
            krate.extend([tt]);
        }
        input.parse::<Token![;]>()?;

        let mut name = None;
        // `key = value`, but not a step followed by `=>` or `==` (a wrong
        // separator, reported below at the separator).
        if input.peek(syn::Ident)
            && input.peek2(Token![=])
            && !input.peek2(Token![=>])
            && !input.peek2(Token![==])
        {
            let key: syn::Ident = input.parse()?;
            if key != "name" {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown flow argument `{key}`; flow! takes an optional `name = \"...\"` before the steps: `flow!(name = \"orders\", parse -> validate)`"
                    ),
                ));
            }
            input.parse::<Token![=]>()?;
            let lit: LitStr = input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "the flow name is a string literal: `name = \"orders\"`",
                )
            })?;
            if lit.value().trim().is_empty() {
                return Err(syn::Error::new(
                    lit.span(),
                    "the flow name must not be empty",
                ));
            }
            name = Some(lit);
            if !input.peek(Token![,]) {
                return Err(input.error("expected `,` between the flow name and the steps: `flow!(name = \"orders\", parse -> validate)`"));
            }
            input.parse::<Token![,]>()?;
        }

        if input.is_empty() {
            return Err(input.error("flow! needs at least one step: `flow!(parse -> validate -> to_row)`, each step a function annotated with #[sync_function]"));
        }
        let (first, first_call) = parse_step(input)?;
        let mut steps = vec![first];
        let mut calls = vec![first_call];
        while !input.is_empty() {
            if input.peek(Token![->]) {
                let arrow = input.parse::<Token![->]>()?;
                if input.is_empty() {
                    return Err(syn::Error::new_spanned(
                        arrow,
                        "expected a step after `->`: remove the trailing `->`, or name the next #[sync_function]",
                    ));
                }
                let (step, call) = parse_step(input)?;
                steps.push(step);
                calls.push(call);
            } else {
                let (shown, span) = wrong_separator(input)?;
                return Err(syn::Error::new(
                    span,
                    format!(
                        "expected `->` between two steps, found `{shown}`: steps of a flow are separated by `->`, as in `flow!(parse -> validate)`"
                    ),
                ));
            }
        }
        Ok(FlowInput {
            krate,
            name,
            steps,
            calls,
        })
    }
}

/// The text and span of what stands where a `->` was expected; a run of
/// joined punctuation such as `=>` or `,` counts as one separator.
fn wrong_separator(input: ParseStream) -> syn::Result<(String, Span)> {
    let first: proc_macro2::TokenTree = input.parse()?;
    let mut text = first.to_string();
    let mut span = first.span();
    let mut joint = matches!(&first, proc_macro2::TokenTree::Punct(p) if p.spacing() == proc_macro2::Spacing::Joint);
    while joint && input.cursor().punct().is_some() {
        let next: proc_macro2::Punct = input.parse()?;
        text.push(next.as_char());
        span = span.join(next.span()).unwrap_or(span);
        joint = next.spacing() == proc_macro2::Spacing::Joint;
    }
    Ok((text, span))
}

/// A step: a #[sync_function]'s path, or a toolbox step `path(args)` whose
/// arguments are returned too.
fn parse_step(input: ParseStream) -> syn::Result<(Path, Option<TokenStream>)> {
    let path: Path = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the name of a #[sync_function] (a path such as `parse` or `orders::parse`)",
        )
    })?;
    if let Some(seg) = path.segments.iter().find(|s| !s.arguments.is_none()) {
        return Err(syn::Error::new(
            seg.arguments.span(),
            "a flow step is named without arguments: sync functions are not generic",
        ));
    }
    if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        let args: TokenStream = content.parse()?;
        return Ok((path, Some(args)));
    }
    Ok((path, None))
}

pub fn expand(tokens: TokenStream) -> TokenStream {
    match syn::parse2::<FlowInput>(tokens) {
        Ok(input) => generate(input),
        Err(err) => err.to_compile_error(),
    }
}

fn generate(input: FlowInput) -> TokenStream {
    let FlowInput {
        krate,
        name,
        steps,
        calls,
    } = input;
    let p = quote!(#krate::__private);
    let mixed = Span::mixed_site();
    let n = steps.len();

    let name = name.map(|n| n.value()).unwrap_or_else(|| {
        steps
            .iter()
            .map(|s| {
                s.segments
                    .last()
                    .map(|l| l.ident.unraw().to_string())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("->")
    });

    let flow_ty = syn::Ident::new("__SyncflowFlow", mixed);
    let aliases: Vec<_> = (0..n)
        .map(|i| format_ident!("__SyncflowStep{}", i, span = mixed))
        .collect();
    let fields: Vec<_> = (0..n)
        .map(|i| format_ident!("__step{}", i, span = mixed))
        .collect();
    let self_id = syn::Ident::new("self", mixed);
    let cx = syn::Ident::new("__syncflow_cx", mixed);
    let monitor = syn::Ident::new("__syncflow_monitor", mixed);
    let out = syn::Ident::new("__syncflow_out", mixed);
    let input_id = syn::Ident::new("__syncflow_input", mixed);
    let res = syn::Ident::new("__syncflow_resources", mixed);
    let problems = syn::Ident::new("__syncflow_problems", mixed);
    let lt = syn::Lifetime::new("'__syncflow_a", mixed);
    let items = syn::Ident::new("__syncflow_items", mixed);
    let m_ty = syn::Ident::new("__SyncflowM", mixed);
    let e_ty = syn::Ident::new("__SyncflowE", mixed);
    // The traits a step call names, imported under names that resolve from
    // the user's span too (items are not hygienic at mixed site), so that
    // the call path can carry the step's own span: its mismatch error then
    // points at the step without an "originates in a macro" note.
    let step_trait = syn::Ident::new("__SyncflowStepTrait", mixed);
    let op_trait = syn::Ident::new("__SyncflowOperatorTrait", mixed);
    let flow_input = syn::Ident::new("__SyncflowFlowInput", mixed);

    // Each user path appears once, in a type alias spanned at it: an
    // unannotated function then yields one error, not one per use.
    // A toolbox step `path(args)` is a `ToolStep` over the previous step's
    // output, described by a marker type generated here (its name is the
    // operator's, the last segment of the path).
    let alias_defs: Vec<TokenStream> = steps
        .iter()
        .zip(&aliases)
        .enumerate()
        .map(|(k, (path, alias))| {
            if calls[k].is_none() {
                return quote_spanned!(path.span()=> #[allow(non_camel_case_types)] type #alias = #path;);
            }
            let kind = format_ident!("__SyncflowToolKind{}", k, span = mixed);
            let elem = if k == 0 {
                quote!(#p::JsonValue)
            } else {
                let prev = &aliases[k - 1];
                quote!(<#prev as #p::Operator>::Output)
            };
            let op_name = path
                .segments
                .last()
                .map(|l| l.ident.unraw().to_string())
                .unwrap_or_default();
            let file = quote_spanned!(path.span()=> ::core::file!());
            let line = quote_spanned!(path.span()=> ::core::line!());
            quote! {
                struct #kind;
                impl #p::ToolKind for #kind {
                    const INFO: &'static #p::StepInfo = &#p::StepInfo {
                        name: #op_name,
                        fn_name: #op_name,
                        module: "syncflow::toolbox",
                        doc: "A toolbox operator.",
                        file: #file,
                        line: #line,
                        is_async: false,
                        shape: #p::Shape::FallibleFanOut,
                        input: || ::core::any::type_name::<#elem>(),
                        output: || ::core::any::type_name::<#elem>(),
                    };
                }
                #[allow(non_camel_case_types)]
                type #alias = #p::ToolStep<#elem, #kind>;
            }
        })
        .collect();

    let ops: Vec<TokenStream> = aliases
        .iter()
        .map(|alias| quote!(<#alias as #op_trait>))
        .collect();
    let first = &ops[0];
    let last = &ops[n - 1];

    // Build the nested loops from the innermost (emit) outwards, twice: a
    // synchronous body (plain `call_now` calls, used when every step is a
    // plain fn) and an async one (`call(..).await`).
    let item = |k: usize| format_ident!("__syncflow_item{}", k, span = mixed);
    let timed = syn::Ident::new("__syncflow_timed", mixed);
    let build = |sync: bool, timed_now: Option<bool>| -> TokenStream {
        let mut body = {
            let x = item(n);
            quote!(#p::Emit::emit(#out, #x);)
        };
        for k in (0..n).rev() {
            let alias = &aliases[k];
            let op = &ops[k];
            let field = &fields[k];
            let path = &steps[k];
            let x_in = if k == 0 { input_id.clone() } else { item(k) };
            let x_out = item(k + 1);
            let step_ref = format_ident!("__syncflow_step{}", k, span = mixed);
            let timer = format_ident!("__syncflow_timer{}", k, span = mixed);
            let result = format_ident!("__syncflow_result{}", k, span = mixed);
            let count = format_ident!("__syncflow_count{}", k, span = mixed);
            let err = format_ident!("__syncflow_err{}", k, span = mixed);
            let (input_ty, prev) = if k == 0 {
                (quote!(#first::Input), quote!(#flow_input))
            } else {
                let (prev_op, prev) = (&ops[k - 1], &aliases[k - 1]);
                (quote!(#prev_op::Output), quote!(#prev))
            };
            // The one place where the step's input is checked: spanned at the
            // step. (Both bodies carry it; rustc reports the identical error once.)
            let method = if sync { quote!(call_now) } else { quote!(call) };
            let step_fn = respan(
                quote!(<#alias as #step_trait<#input_ty, #prev>>::#method),
                path.span(),
            );
            // The call's parentheses and its `.await` carry the step's span too
            // (the arguments inside keep their hygiene), so that every obligation
            // of the call is reported at the step, once.
            let mut args = proc_macro2::Group::new(
                proc_macro2::Delimiter::Parenthesis,
                quote!(&#self_id.#field, #cx, #x_in),
            );
            args.set_span(path.span());
            let await_ = if sync {
                TokenStream::new()
            } else {
                respan(quote!(.await), path.span())
            };
            let index = k;
            body = if sync {
                // Continuation-passing: the step calls the rest of the flow
                // with each message it emits; the monitor is handed along.
                let mut sync_args = proc_macro2::Group::new(
                    proc_macro2::Delimiter::Parenthesis,
                    quote!(&#self_id.#field, #cx, #x_in, #monitor, #step_ref, #timed_now, |#x_out, #monitor: &mut #m_ty| { #body }),
                );
                sync_args.set_span(path.span());
                quote! {
                    let #step_ref = #p::StepRef { index: #index, info: #op::INFO };
                    match #step_fn #sync_args {
                        ::core::result::Result::Ok(#count) => {
                            #p::Monitor::emitted(#monitor, #step_ref, #count);
                        }
                        ::core::result::Result::Err(#err) => {
                            #p::Monitor::failed(#monitor, #step_ref, &#err);
                            #p::Emit::fail(#out, #p::StepFailure { step: #step_ref, error: &#err });
                        }
                    }
                }
            } else {
                quote! {
                    let #step_ref = #p::StepRef { index: #index, info: #op::INFO };
                    let #timer = #p::enter_if(#timed, #monitor, #step_ref);
                    let #result = #step_fn #args #await_;
                    #p::exit_if(#timer, #monitor, #step_ref);
                    match #result {
                        ::core::result::Result::Ok(#items) => {
                            let mut #count: usize = 0;
                            for #x_out in #items {
                                #count += 1;
                                #body
                            }
                            #p::Monitor::emitted(#monitor, #step_ref, #count);
                        }
                        ::core::result::Result::Err(#err) => {
                            #p::Monitor::failed(#monitor, #step_ref, &#err);
                            #p::Emit::fail(#out, #p::StepFailure { step: #step_ref, error: &#err });
                        }
                    }
                }
            };
        }
        body
    };
    // The synchronous body comes twice, with timing hooks and without, so
    // that an untimed message pays nothing for them.
    let sync_timed = build(true, Some(true));
    let sync_untimed = build(true, Some(false));
    let async_body = build(false, None);

    let infos = ops.iter().map(|op| quote!(#op::INFO));
    let checks = ops.iter().map(|op| quote!(#op::check(#res, #problems);));
    let inits = aliases
        .iter()
        .zip(&fields)
        .zip(steps.iter().zip(&calls))
        .map(|((a, f), (path, call))| match call {
            None => quote!(#f: #a {}),
            Some(args) => quote!(#f: #p::ToolStep::build(#path(#args))),
        });

    quote! {{
        use #p::{Step as #step_trait, Operator as #op_trait, FlowInput as #flow_input};
        #(#alias_defs)*

        struct #flow_ty {
            #(#fields: #aliases,)*
        }

        impl #p::FlowDef for #flow_ty {
            type Input = #first::Input;
            type Output = #last::Output;

            fn name(&self) -> &'static str {
                #name
            }

            fn steps(&self) -> &'static [&'static #p::StepInfo] {
                const STEPS: &[&#p::StepInfo] = &[#(#infos),*];
                STEPS
            }

            fn check(&self, #res: &#p::Resources, #problems: &mut #p::Vec<#p::String>) {
                #(#checks)*
            }

            #[inline(always)]
            fn is_sync(&#self_id) -> bool {
                #(!#ops::INFO.is_async)&&*
            }

            #[allow(unused_mut, for_loops_over_fallibles, clippy::let_unit_value, clippy::unit_arg)]
            #[inline]
            fn process_now<#m_ty, #e_ty>(
                &#self_id,
                #cx: &#p::Context,
                #monitor: &mut #m_ty,
                #input_id: Self::Input,
                #out: &mut #e_ty,
            )
            where
                #m_ty: #p::Monitor,
                #e_ty: #p::Emit<Self::Output>,
            {
                if #p::Monitor::begin(#monitor) {
                    #sync_timed
                } else {
                    #sync_untimed
                }
            }

            #[allow(unused_mut, for_loops_over_fallibles, clippy::let_unit_value, clippy::unit_arg)]
            fn process<#lt, #m_ty, #e_ty>(
                &#lt #self_id,
                #cx: &#lt #p::Context,
                #monitor: &#lt mut #m_ty,
                #input_id: Self::Input,
                #out: &#lt mut #e_ty,
            ) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send + #lt
            where
                #m_ty: #p::Monitor,
                #e_ty: #p::Emit<Self::Output> + ::core::marker::Send,
            {
                async move {
                    if #p::FlowDef::is_sync(#self_id) {
                        #p::FlowDef::process_now(#self_id, #cx, #monitor, #input_id, #out)
                    } else {
                        let #timed = #p::Monitor::begin(#monitor);
                        #async_body
                    }
                }
            }
        }

        #p::Flow::new(#flow_ty { #(#inits),* })
    }}
}
