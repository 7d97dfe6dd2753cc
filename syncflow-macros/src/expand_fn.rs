//! Expansion of `#[sync_function]`.
//!
//! Emits, next to the untouched function:
//! - a same-named braced struct (type namespace) that names the operator;
//! - `impl Operator` (types, static description, context checks);
//! - `impl<P> Step<Payload, P>`, its header spanned at the payload type so
//!   that a flow mismatch points there too;
//! - an `inventory` registration.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, Meta};

use crate::attr::Args;
use crate::ctxt::Ctxt;
use crate::paths::{relocate, respan, syncflow_path};
use crate::sig::{self, LooseFn, Shape};

pub fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let func: LooseFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(err) => {
            let err = syn::Error::new(
                err.span(),
                format!("{err}; #[sync_function] goes on a function: `fn name(payload: T) -> U {{ ... }}`"),
            )
            .to_compile_error();
            return quote!(#err #item);
        }
    };
    let cx = Ctxt::new();
    let args = Args::parse(&cx, args);
    let sig = sig::analyse(&cx, &func.sig);
    let generated = match (cx.check(), sig) {
        (Ok(()), Some(sig)) => generate(&args, &func, &sig),
        (Err(err), _) => err.to_compile_error(),
        (Ok(()), None) => TokenStream::new(),
    };
    // The function itself is re-emitted exactly as written.
    quote!(#item #generated)
}

fn doc_of(func: &LooseFn) -> String {
    let mut lines = Vec::new();
    for attr in &func.attrs {
        if let Meta::NameValue(nv) = &attr.meta
            && nv.path.is_ident("doc")
            && let Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
        {
            let v = s.value();
            lines.push(v.strip_prefix(' ').unwrap_or(&v).trim_end().to_string());
        }
    }
    lines.join("\n").trim().to_string()
}

/// Where an error type that does not fit is reported: at `E` in
/// `Result<T, E>`, else (an alias such as `io::Result<T>`) at the return type.
fn error_span(ret: &syn::Type) -> Span {
    if let syn::Type::Path(p) = ret
        && let Some(last) = p.path.segments.last()
        && let syn::PathArguments::AngleBracketed(a) = &last.arguments
        && let Some(syn::GenericArgument::Type(e)) = a
            .args
            .iter()
            .filter(|g| matches!(g, syn::GenericArgument::Type(_)))
            .nth(1)
    {
        return e.span();
    }
    ret.span()
}

fn generate(args: &Args, func: &LooseFn, sig: &sig::Sig<'_>) -> TokenStream {
    let krate = syncflow_path(args.krate.clone());
    let p = quote!(#krate::__private);
    let vis = &func.vis;
    let ident = sig.ident;
    let fn_name = ident.to_string().trim_start_matches("r#").to_string();
    let name = args
        .name
        .as_ref()
        .map(|n| n.value())
        .unwrap_or_else(|| fn_name.clone());
    let doc = doc_of(func);
    let payload = sig.payload;
    let ret = sig.ret;
    let is_async = sig.is_async;
    let shape = format_ident!("{}", sig.shape.variant());

    // Internal names: made once with mixed-site hygiene, then interpolated.
    let mixed = Span::mixed_site();
    let lt = syn::Lifetime::new("'__syncflow_a", mixed);
    let label = syn::Lifetime::new("'__syncflow_b", mixed);
    let cx_id = syn::Ident::new("__syncflow_cx", mixed);
    let input_id = syn::Ident::new("__syncflow_input", mixed);
    let res_id = syn::Ident::new("__syncflow_resources", mixed);
    let problems_id = syn::Ident::new("__syncflow_problems", mixed);
    let prev = syn::Ident::new("__SyncflowPrev", mixed);
    let ok_id = syn::Ident::new("__syncflow_ok", mixed);
    let err_id = syn::Ident::new("__syncflow_err", mixed);

    // The types taken out of the return type carry its span, so that a
    // return type that is not what its name says (a user's own `Option`), or
    // an error type that is not `Display`, is reported once, there.
    let ret_span = ret.span();
    let (output_ty, items_ty, error_ty, convert, route) = match sig.shape {
        Shape::Map => (
            quote!(#ret),
            quote!(::core::option::Option<#ret>),
            quote!(#p::Never),
            quote!(#p::out_map::<#ret>),
            quote!(#p::route_map::<#ret, _, _>),
        ),
        Shape::Filter => {
            let out = quote!(<#ret as #p::OptionLike>::Item);
            (
                out.clone(),
                quote!(::core::option::Option<#out>),
                quote!(#p::Never),
                quote!(#p::out_filter::<#ret>),
                quote!(#p::route_filter::<<#ret as #p::OptionLike>::Item, _, _>),
            )
        }
        Shape::Fallible => {
            let out = quote!(<#ret as #p::ResultLike>::Ok);
            (
                out.clone(),
                quote!(::core::option::Option<#out>),
                quote!(<#ret as #p::ResultLike>::Err),
                quote!(#p::out_fallible::<#ret>),
                quote!(#p::route_fallible::<<#ret as #p::ResultLike>::Ok, <#ret as #p::ResultLike>::Err, _, _>),
            )
        }
        Shape::FallibleFilter => {
            let out = quote!(<<#ret as #p::ResultLike>::Ok as #p::OptionLike>::Item);
            (
                out.clone(),
                quote!(::core::option::Option<#out>),
                quote!(<#ret as #p::ResultLike>::Err),
                quote!(#p::out_fallible_filter::<#ret>),
                quote!(#p::route_fallible_filter::<#ret, _, _>),
            )
        }
        Shape::FanOut => (
            quote!(<#ret as ::core::iter::IntoIterator>::Item),
            quote!(#ret),
            quote!(#p::Never),
            quote!(#p::out_fan_out::<#ret>),
            quote!(#p::route_fan_out::<#ret, _, _>),
        ),
        Shape::FallibleFanOut => (
            quote!(<<#ret as #p::ResultLike>::Ok as ::core::iter::IntoIterator>::Item),
            quote!(<#ret as #p::ResultLike>::Ok),
            quote!(<#ret as #p::ResultLike>::Err),
            quote!(#p::out_fallible_fan_out::<#ret>),
            quote!(#p::route_fallible_fan_out::<#ret, _, _>),
        ),
    };
    let (output_ty, items_ty, error_ty, convert, route) = (
        respan(output_ty, ret_span),
        respan(items_ty, ret_span),
        respan(error_ty, error_span(ret)),
        respan(convert, ret_span),
        respan(route, ret_span),
    );
    let convert_id = syn::Ident::new("__syncflow_convert", mixed);

    // Context parameters: each extracted with its own spanned check.
    let arg_ids: Vec<_> = (0..sig.extras.len())
        .map(|i| syn::Ident::new(&format!("__syncflow_arg{i}"), mixed))
        .collect();
    let extract = |early_exit: &dyn Fn(TokenStream) -> TokenStream| -> Vec<TokenStream> {
        sig.extras
            .iter()
            .zip(&arg_ids)
            .map(|(ty, id)| {
                let from = quote_spanned!(ty.span()=> <#ty as #p::FromContext<'_>>::from_context);
                let failed =
                    early_exit(quote!(::core::result::Result::Err(#p::Failure::Context(#err_id))));
                quote! {
                    let #id = match #from(#cx_id) {
                        ::core::result::Result::Ok(#ok_id) => #ok_id,
                        ::core::result::Result::Err(#err_id) => #failed,
                    };
                }
            })
            .collect()
    };
    let checks = sig.extras.iter().map(|ty| {
        quote_spanned!(ty.span()=> <#ty as #p::FromContext<'_>>::check(#res_id, #problems_id, #name);)
    });

    let body = if is_async {
        let ex = extract(&|e| quote!(return #e));
        // `async move` at the user's `async`: a future that is not `Send`
        // is reported at the function, not at the attribute.
        let async_kw = relocate(quote!(async move), sig.async_span);
        quote! {
            #async_kw {
                #(#ex)*
                let #convert_id = #convert;
                #convert_id(#ident(#input_id #(, #arg_ids)*).await)
            }
        }
    } else {
        let ex = extract(&|e| quote!(break #label #e));
        quote! {
            ::core::future::ready(#label: {
                #(#ex)*
                let #convert_id = #convert;
                #convert_id(#ident(#input_id #(, #arg_ids)*))
            })
        }
    };
    // A plain fn is also callable without a future, handing what it emits
    // straight to the rest of the flow: flows whose steps are all
    // synchronous run through this.
    let call_now = if is_async {
        TokenStream::new()
    } else {
        let result_ty = respan(
            quote!(::core::result::Result<usize, #p::Failure<Self::Error>>),
            ret_span,
        );
        let m = syn::Ident::new("__SyncflowM", mixed);
        let n = syn::Ident::new("__SyncflowN", mixed);
        let monitor = syn::Ident::new("__syncflow_monitor", mixed);
        let step = syn::Ident::new("__syncflow_step", mixed);
        let next = syn::Ident::new("__syncflow_next", mixed);
        let timer = syn::Ident::new("__syncflow_timer", mixed);
        let value = syn::Ident::new("__syncflow_value", mixed);
        let timed = syn::Ident::new("__syncflow_timed", mixed);
        let ex_timed = extract(&|e| {
            quote! {{
                #p::Monitor::exit(#monitor, #step, #timer);
                return #e;
            }}
        });
        let ex_untimed = extract(&|e| quote!(return #e));
        quote! {
            #[inline(always)]
            fn call_now<#m, #n>(
                &self,
                #cx_id: &#p::Context,
                #input_id: #payload,
                #monitor: &mut #m,
                #step: #p::StepRef,
                #timed: bool,
                #next: #n,
            ) -> #result_ty
            where
                #m: #p::Monitor,
                #n: ::core::ops::FnMut(Self::Output, &mut #m),
            {
                let _ = #cx_id;
                // Two branches, so that an untimed call hands the function's
                // value straight to `route`: anything in between (even hooks
                // that compile to nothing) costs a copy of the message.
                if #timed {
                    let #timer = #p::Monitor::enter(#monitor, #step);
                    #(#ex_timed)*
                    let #value = #ident(#input_id #(, #arg_ids)*);
                    #p::Monitor::exit(#monitor, #step, #timer);
                    #route(#value, #monitor, #next)
                } else {
                    #(#ex_untimed)*
                    #route(#ident(#input_id #(, #arg_ids)*), #monitor, #next)
                }
            }
        }
    };

    let file = quote_spanned!(ident.span()=> ::core::file!());
    let line = quote_spanned!(ident.span()=> ::core::line!());
    let step_header = respan(
        quote!(impl<#prev> #p::Step<#payload, #prev> for #ident),
        payload.span(),
    );
    // The impl's header and braces carry the payload type's span, so that
    // rustc's "but trait `Step<X>` is implemented" help underlines it.
    let mut future_ty = quote! {
        impl ::core::future::Future<
            Output = ::core::result::Result<Self::Items, #p::Failure<Self::Error>>,
        > + ::core::marker::Send + #lt
    };
    if is_async {
        // An async fn whose future is not `Send` is reported at its `async`.
        future_ty = relocate(future_ty, sig.async_span);
    } else {
        future_ty = respan(future_ty, ret_span);
    }
    let step_body = quote! {
                type Items = #items_ty;
                type Error = #error_ty;
                #call_now
                #[inline]
                fn call<#lt>(
                    &#lt self,
                    #cx_id: &#lt #p::Context,
                    #input_id: #payload,
                ) -> #future_ty {
            let _ = #cx_id;
            #body
        }
    };
    let mut step_braces = proc_macro2::Group::new(proc_macro2::Delimiter::Brace, step_body);
    step_braces.set_span(payload.span());
    let step_impl = quote!(#step_header #step_braces);
    let struct_doc = format!(
        "The operator of the sync function [`{fn_name}`](fn@{fn_name}), registered as `{name}`."
    );

    let some_lit = |lit: Option<&dyn quote::ToTokens>| match lit {
        Some(l) => quote!(::core::option::Option::Some(#l)),
        None => quote!(::core::option::Option::None),
    };
    let policy = &args.policy;
    let retry = some_lit(policy.retry.as_ref().map(|l| l as &dyn quote::ToTokens));
    let concurrency = some_lit(
        policy
            .concurrency
            .as_ref()
            .map(|l| l as &dyn quote::ToTokens),
    );
    let timeout = some_lit(policy.timeout.as_ref().map(|l| l as &dyn quote::ToTokens));
    let rate_limit = some_lit(
        policy
            .rate_limit
            .as_ref()
            .map(|l| l as &dyn quote::ToTokens),
    );
    let on_error = some_lit(policy.on_error.as_ref().map(|l| l as &dyn quote::ToTokens));
    let in_codec = syn::Ident::new("__syncflow_input_codec", Span::mixed_site());
    let out_codec = syn::Ident::new("__syncflow_output_codec", Span::mixed_site());
    // Autoref specialisation picks a codec when the type has the serde trait.
    let codec_uses = quote! {
        #[allow(unused_imports)]
        use #p::probe::{
            HasClone as _, HasDeserialize as _, HasSerialize as _, NoClone as _,
            NoDeserialize as _, NoSerialize as _,
        };
    };

    quote! {
        #[doc = #struct_doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        const _: () = {
            impl #p::Operator for #ident {
                type Input = #payload;
                type Output = #output_ty;
                const INFO: &'static #p::StepInfo = &#p::StepInfo {
                    name: #name,
                    fn_name: #fn_name,
                    module: ::core::module_path!(),
                    doc: #doc,
                    file: #file,
                    line: #line,
                    is_async: #is_async,
                    shape: #p::Shape::#shape,
                    input: ::core::any::type_name::<#payload>,
                    output: ::core::any::type_name::<#output_ty>,
                };
                fn check(#res_id: &#p::Resources, #problems_id: &mut #p::Vec<#p::String>) {
                    #(#checks)*
                    let _ = (#res_id, #problems_id);
                }
            }

            #step_impl

            #[allow(clippy::needless_borrow)]
            fn #in_codec() -> #p::TypeCodec {
                #codec_uses
                #p::TypeCodec {
                    name: ::core::any::type_name::<#payload>(),
                    id: ::core::any::TypeId::of::<#payload>(),
                    decode: (&#p::probe::Probe::<#payload>::NEW).decoder(),
                    from_value: (&#p::probe::Probe::<#payload>::NEW).value_decoder(),
                    encode: (&#p::probe::Probe::<#payload>::NEW).encoder(),
                    to_value: (&#p::probe::Probe::<#payload>::NEW).value_encoder(),
                    clone: (&#p::probe::Probe::<#payload>::NEW).cloner(),
                }
            }
            #[allow(clippy::needless_borrow)]
            fn #out_codec() -> #p::TypeCodec {
                #codec_uses
                #p::TypeCodec {
                    name: ::core::any::type_name::<#output_ty>(),
                    id: ::core::any::TypeId::of::<#output_ty>(),
                    decode: (&#p::probe::Probe::<#output_ty>::NEW).decoder(),
                    from_value: (&#p::probe::Probe::<#output_ty>::NEW).value_decoder(),
                    encode: (&#p::probe::Probe::<#output_ty>::NEW).encoder(),
                    to_value: (&#p::probe::Probe::<#output_ty>::NEW).value_encoder(),
                    clone: (&#p::probe::Probe::<#output_ty>::NEW).cloner(),
                }
            }

            #p::inventory::submit! {
                #p::Registration {
                    info: <#ident as #p::Operator>::INFO,
                    step: &#p::Adapter(#ident {}),
                    input: #in_codec,
                    output: #out_codec,
                    policy: &#p::AttrPolicy {
                        retry: #retry,
                        timeout: #timeout,
                        concurrency: #concurrency,
                        rate_limit: #rate_limit,
                        on_error: #on_error,
                    },
                }
            }
        };
    }
}
