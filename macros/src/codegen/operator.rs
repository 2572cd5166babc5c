//! `#[derive(StatefulOperator)]`: descriptors, registration, the key-scoped view and its
//! accessors. Every binding the generated code introduces starts with `__sw_`, so that no name
//! of the user's (a field, a constant, a unit struct) collides with it.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericParam, Lifetime, LifetimeParam};

use super::type_string;
use crate::model::{Kind, Operator, Reduce, StateField};

pub fn expand(op: &Operator<'_>) -> TokenStream {
    generate(op.input, Some(op), None)
}

/// What the derive emits when the input has mistakes: their errors, and a stub of the view and
/// of the `StatefulOperator` impl, so that uses of the operator (`.bind(...)`,
/// `op.key(..)?.state()`) report nothing more. One mistake gives one message.
///
/// The stub asks nothing of the state types (no bounds, no descriptors of the states) and its
/// accessors and registration are `unreachable!()`: it never runs, since the crate does not
/// compile while the errors are there. `op` is the model as far as it was built.
pub fn stub(
    input: &syn::DeriveInput,
    op: Option<&Operator<'_>>,
    errors: &syn::Error,
) -> TokenStream {
    generate(input, op, Some(errors))
}

/// The real expansion (`errors` is `None`) or the stub that goes with `errors`.
fn generate(
    input: &syn::DeriveInput,
    op: Option<&Operator<'_>>,
    errors: Option<&syn::Error>,
) -> TokenStream {
    let stub = errors.is_some();
    let ident = &input.ident;
    let vis = &input.vis;
    let keyed = format_ident!("{}Keyed", ident);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let states: &[StateField<'_>] = op.map_or(&[], |o| &o.states);
    let keyed_states: Vec<&StateField<'_>> = states.iter().filter(|s| s.kind.is_keyed()).collect();
    let operator_states: Vec<&StateField<'_>> =
        states.iter().filter(|s| !s.kind.is_keyed()).collect();
    let n = keyed_states.len();
    let name = op.map_or_else(
        || crate::model::kebab_case(&ident.to_string()),
        |o| o.name.clone(),
    );
    let max_parallelism = op.map_or(128, |o| o.max_parallelism);
    let key_type = op.and_then(|o| o.attrs.key.as_ref());
    let key = key_type.map_or_else(|| quote!(()), |k| quote!(#k));
    let key_str = type_string(&key);
    let timer_namespace = states
        .iter()
        .find(|s| s.kind == Kind::Timers)
        .and_then(|s| s.args.first())
        .map_or_else(|| quote!(()), |n| quote!(#n));

    // Generics of the view: the operator's, plus the view's lifetime first and the backend last.
    let mut view_generics = input.generics.clone();
    view_generics.params.insert(
        0,
        GenericParam::Lifetime(LifetimeParam::new(Lifetime::new(
            "'__sw",
            Span::call_site(),
        ))),
    );
    view_generics
        .params
        .push(syn::parse_quote!(__SwB: ?::core::marker::Sized + '__sw));
    let (view_impl_generics, view_ty_generics, view_where) = view_generics.split_for_impl();
    let op_args = input.generics.params.iter().map(|p| match p {
        GenericParam::Lifetime(l) => {
            let l = &l.lifetime;
            quote!(#l)
        }
        GenericParam::Type(t) => {
            let i = &t.ident;
            quote!(#i)
        }
        GenericParam::Const(c) => {
            let i = &c.ident;
            quote!(#i)
        }
    });
    let keyed_of = quote!(#keyed<'__sw, #(#op_args,)* __SwB>);

    // The stub describes no state: a descriptor asks things of the state types.
    let descriptors = keyed_states.iter().filter(|_| !stub).map(|s| descriptor(s));
    let operator_descriptors = operator_states
        .iter()
        .filter(|_| !stub)
        .map(|s| descriptor(s));
    let field_idents = keyed_states.iter().map(|s| s.ident);
    let operator_fields: Vec<_> = operator_states.iter().map(|s| s.ident).collect();
    let accessors = keyed_states
        .iter()
        .enumerate()
        .map(|(i, s)| accessor(i, s, stub));
    let bounds = states.iter().filter(|_| !stub).flat_map(bounds);
    let operator_state_fns = if operator_fields.is_empty() || stub {
        TokenStream::new()
    } else {
        quote! {
            fn __operator_states(&self) -> ::std::vec::Vec<&dyn ::statewright::__private::OperatorStateData> {
                ::std::vec![#(&self.#operator_fields as &dyn ::statewright::__private::OperatorStateData),*]
            }

            fn __operator_states_mut(&mut self) -> ::std::vec::Vec<&mut dyn ::statewright::__private::OperatorStateData> {
                ::std::vec![#(&mut self.#operator_fields as &mut dyn ::statewright::__private::OperatorStateData),*]
            }
        }
    };
    let key_bound = key_type
        .filter(|_| !stub)
        .map(|k| quote_spanned!(k.span()=> #k: ::statewright::StateKey,));
    let mut where_tokens = match where_clause {
        Some(w) => {
            let preds = w.predicates.iter();
            quote!(where #(#preds,)*)
        }
        None => quote!(where),
    };
    where_tokens.extend(quote!(#key_bound #(#bounds)*));

    let view_doc = format!(
        "The state of [`{ident}`] for one key, returned by [`Bound::key`](::statewright::Bound::key): one accessor method per state, and the operator's plain fields through `Deref`."
    );

    let register = if stub {
        quote! {
            let _ = __sw_backend;
            ::core::unreachable!()
        }
    } else {
        quote! {
            ::statewright::__private::register_all(
                __sw_backend,
                &<Self as ::statewright::StatefulOperator>::DESCRIPTOR,
            )
        }
    };
    let errors = errors.map(syn::Error::to_compile_error);

    quote! {
        #errors

        #[doc = #view_doc]
        #vis struct #keyed #view_generics #view_where {
            __ctx: ::statewright::__private::KeyContext<'__sw, __SwB>,
            __columns: &'__sw [::statewright::StateId; #n],
            __op: &'__sw #ident #ty_generics,
        }

        const _: () = {
            #[automatically_derived]
            impl #view_impl_generics #keyed #view_ty_generics #view_where {
                #(#accessors)*
            }

            #[automatically_derived]
            impl #view_impl_generics ::core::ops::Deref for #keyed #view_ty_generics #view_where {
                type Target = #ident #ty_generics;
                fn deref(&self) -> &Self::Target {
                    self.__op
                }
            }

            #[automatically_derived]
            impl #impl_generics ::statewright::StatefulOperator for #ident #ty_generics #where_tokens {
                type Key = #key;
                type TimerNamespace = #timer_namespace;
                type Columns = [::statewright::StateId; #n];
                type Keyed<'__sw, __SwB: ::statewright::StateBackend + ?::core::marker::Sized + '__sw> = #keyed_of
                where
                    Self: '__sw;

                const DESCRIPTOR: ::statewright::OperatorDescriptor = ::statewright::OperatorDescriptor {
                    name: #name,
                    key_type: #key_str,
                    max_parallelism: #max_parallelism,
                    validate_key: ::statewright::__private::validate_key::<#key>,
                    key_schema: <#key as ::statewright::StateSchema>::SCHEMA,
                    key_fingerprint: <#key as ::statewright::StateSchema>::FINGERPRINT,
                    states: &[#(#descriptors),*],
                    operator_states: &[#(#operator_descriptors),*],
                };

                #operator_state_fns

                fn __register<__SwB: ::statewright::StateBackend + ?::core::marker::Sized>(
                    __sw_backend: &mut __SwB,
                ) -> ::statewright::Result<Self::Columns> {
                    #register
                }

                fn __keyed<'__sw, __SwB: ::statewright::StateBackend + ?::core::marker::Sized>(
                    __sw_op: &'__sw Self,
                    __sw_columns: &'__sw Self::Columns,
                    __sw_ctx: ::statewright::__private::KeyContext<'__sw, __SwB>,
                ) -> Self::Keyed<'__sw, __SwB> {
                    // State fields are declarations, used through this view; reading them here
                    // keeps the compiler from calling them unused.
                    let _ = (#(&__sw_op.#field_idents,)*);
                    #keyed {
                        __ctx: __sw_ctx,
                        __columns: __sw_columns,
                        __op: __sw_op,
                    }
                }
            }
        };
    }
}

/// Where-clause predicates that check each state's types, spanned at the user's tokens so that
/// a type that cannot be stored is reported on the field that declares it.
fn bounds(s: &StateField<'_>) -> Vec<TokenStream> {
    let mut out = kind_bounds(s);
    out.extend(migration_bounds(s));
    if let Some(n) = &s.attrs.namespace {
        out.push(quote_spanned!(n.span()=> #n: ::statewright::StateKey,));
    }
    out
}

/// Each `vN = Old` is a stored value type that converts into the next version's type.
fn migration_bounds(s: &StateField<'_>) -> Vec<TokenStream> {
    let Some((_, steps)) = &s.attrs.migrate_from else {
        return Vec::new();
    };
    let Some(current) = current_type(s) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let old = &step.ty;
        let next = steps.get(i + 1).map_or_else(
            || current.clone(),
            |n| {
                let t = &n.ty;
                quote!(#t)
            },
        );
        out.push(quote_spanned!(old.span()=> #old: ::statewright::StateValue,));
        out.push(quote_spanned!(old.span()=> #next: ::core::convert::From<#old>,));
    }
    out
}

/// The stored value type a migration converts into: the element, value or accumulator type.
fn current_type(s: &StateField<'_>) -> Option<TokenStream> {
    let a = &s.args;
    match s.kind {
        Kind::Timers => Some(quote!(())),
        Kind::Map | Kind::Broadcast => {
            let v = &a[1];
            Some(quote!(#v))
        }
        Kind::Aggregating => s
            .attrs
            .aggregate
            .as_ref()
            .map(|agg| quote!(<#agg as ::statewright::Aggregate>::Acc)),
        _ => {
            let t = &a[0];
            Some(quote!(#t))
        }
    }
}

fn kind_bounds(s: &StateField<'_>) -> Vec<TokenStream> {
    let a = &s.args;
    match s.kind {
        Kind::Value | Kind::List | Kind::Reducing | Kind::OperatorList | Kind::UnionList => {
            let t = &a[0];
            vec![quote_spanned!(t.span()=> #t: ::statewright::StateValue,)]
        }
        Kind::Map | Kind::Broadcast => {
            let (k, v) = (&a[0], &a[1]);
            vec![
                quote_spanned!(k.span()=> #k: ::statewright::StateKey,),
                quote_spanned!(v.span()=> #v: ::statewright::StateValue,),
            ]
        }
        Kind::Timers => {
            let n = &a[0];
            vec![quote_spanned!(n.span()=> #n: ::statewright::StateKey,)]
        }
        Kind::Aggregating => {
            let (i, o) = (&a[0], &a[1]);
            match &s.attrs.aggregate {
                Some(agg) => vec![
                    quote_spanned!(agg.span()=> #agg: ::statewright::Aggregate<In = #i, Out = #o>,),
                ],
                None => Vec::new(),
            }
        }
    }
}

fn descriptor(s: &StateField<'_>) -> TokenStream {
    let name = &s.name;
    let kind = format_ident!(
        "{}",
        match s.kind {
            Kind::Value => "Value",
            Kind::List => "List",
            Kind::Map => "Map",
            Kind::Reducing => "Reducing",
            Kind::Aggregating => "Aggregating",
            Kind::Broadcast => "Broadcast",
            Kind::OperatorList => "OperatorList",
            Kind::UnionList => "UnionList",
            Kind::Timers => "Timers",
        }
    );
    let a = &s.args;
    let (value_type, validate_value) = match s.kind {
        Kind::Value | Kind::Reducing | Kind::OperatorList | Kind::UnionList => {
            let t = &a[0];
            (
                type_string(&quote!(#t)),
                quote!(::statewright::__private::validate::<#t>),
            )
        }
        Kind::List => {
            let t = &a[0];
            (
                type_string(&quote!(#t)),
                quote!(::statewright::__private::validate_frames::<#t>),
            )
        }
        Kind::Map | Kind::Broadcast => {
            let v = &a[1];
            (
                type_string(&quote!(#v)),
                quote!(::statewright::__private::validate::<#v>),
            )
        }
        Kind::Timers => (
            "()".to_owned(),
            quote!(::statewright::__private::validate_no_value),
        ),
        Kind::Aggregating => match &s.attrs.aggregate {
            Some(agg) => (
                format!("<{} as Aggregate>::Acc", type_string(&quote!(#agg))),
                quote!(::statewright::__private::validate::<<#agg as ::statewright::Aggregate>::Acc>),
            ),
            None => (
                String::new(),
                quote!(::statewright::__private::validate::<()>),
            ),
        },
    };
    let namespaced_key = s.attrs.namespace.as_ref().map(|n| {
        if matches!(s.kind, Kind::Map) {
            let k = &a[0];
            quote!((#n, #k))
        } else {
            quote!(#n)
        }
    });
    let (user_key_type, validate_user_key) = if let Some(uk) = &namespaced_key {
        let ks = type_string(uk);
        (
            quote!(::core::option::Option::Some(#ks)),
            quote!(::statewright::__private::validate_key::<#uk>),
        )
    } else if s.kind == Kind::Timers {
        let n = &a[0];
        let ks = format!("(TimeDomain, i64, {})", type_string(&quote!(#n)));
        (
            quote!(::core::option::Option::Some(#ks)),
            quote!(::statewright::__private::validate_timer::<#n>),
        )
    } else if matches!(s.kind, Kind::Map | Kind::Broadcast) {
        let k = &a[0];
        let ks = type_string(&quote!(#k));
        (
            quote!(::core::option::Option::Some(#ks)),
            quote!(::statewright::__private::validate_key::<#k>),
        )
    } else {
        (
            quote!(::core::option::Option::None),
            quote!(::statewright::__private::no_user_key),
        )
    };
    let ttl = match &s.attrs.ttl {
        Some((ttl, _)) => {
            let ms = ttl.millis;
            let pick = |choice: &Option<crate::attr::Choice>, variants: [&str; 2]| {
                format_ident!("{}", variants[choice.as_ref().map_or(0, |(i, _)| *i)])
            };
            let update = pick(&s.attrs.update, ["OnCreateAndWrite", "OnReadAndWrite"]);
            let visibility = pick(
                &s.attrs.visibility,
                ["NeverReturnExpired", "ReturnExpiredIfNotCleanedUp"],
            );
            let time = pick(&s.attrs.time, ["Processing", "Event"]);
            quote!(::core::option::Option::Some(::statewright::TtlConfig {
                ttl: ::core::time::Duration::from_millis(#ms),
                update: ::statewright::TtlUpdate::#update,
                visibility: ::statewright::TtlVisibility::#visibility,
                time: ::statewright::TtlTime::#time,
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let namespace_type = match &s.attrs.namespace {
        Some(n) => {
            let ns = type_string(&quote!(#n));
            quote!(::core::option::Option::Some(#ns))
        }
        None => quote!(::core::option::Option::None),
    };
    let current = current_type(s).unwrap_or_else(|| quote!(()));
    let user_key_schema = if let Some(uk) = &namespaced_key {
        quote!(::core::option::Option::Some(<#uk as ::statewright::StateSchema>::SCHEMA))
    } else if matches!(s.kind, Kind::Map | Kind::Broadcast) {
        let k = &a[0];
        quote!(::core::option::Option::Some(<#k as ::statewright::StateSchema>::SCHEMA))
    } else if s.kind == Kind::Timers {
        let n = &a[0];
        quote!(::core::option::Option::Some(<(u8, i64, #n) as ::statewright::StateSchema>::SCHEMA))
    } else {
        quote!(::core::option::Option::None)
    };
    let version = s.attrs.version.as_ref().map_or(1, |(v, _)| *v);
    let migrations = migrations(s, &current);
    quote! {
        ::statewright::StateDescriptor {
            name: #name,
            kind: ::statewright::StateKind::#kind,
            value_type: #value_type,
            user_key_type: #user_key_type,
            namespace_type: #namespace_type,
            ttl: #ttl,
            validate_value: #validate_value,
            validate_user_key: #validate_user_key,
            value_schema: <#current as ::statewright::StateSchema>::SCHEMA,
            value_fingerprint: <#current as ::statewright::StateSchema>::FINGERPRINT,
            user_key_schema: #user_key_schema,
            version: #version,
            migrations: &[#(#migrations),*],
        }
    }
}

/// One `Migration` per `vN = Old`: decode an `Old`, convert it through every later version's
/// type with `From`, encode the current type.
fn migrations(s: &StateField<'_>, current: &TokenStream) -> Vec<TokenStream> {
    let Some((_, steps)) = &s.attrs.migrate_from else {
        return Vec::new();
    };
    (0..steps.len())
        .map(|i| {
            let step = &steps[i];
            let old = &step.ty;
            let version = step.version;
            let type_name = type_string(&quote!(#old));
            let conversions = steps[i + 1..].iter().map(|next| {
                let t = &next.ty;
                quote!(let __sw_v: #t = ::core::convert::From::from(__sw_v);)
            });
            quote! {
                ::statewright::Migration {
                    version: #version,
                    type_name: #type_name,
                    schema: <#old as ::statewright::StateSchema>::SCHEMA,
                    fingerprint: <#old as ::statewright::StateSchema>::FINGERPRINT,
                    migrate: |__sw_bytes: &[u8], __sw_out: &mut ::std::vec::Vec<u8>| -> ::core::result::Result<(), ::statewright::CodecError> {
                        let __sw_v: #old = ::statewright::__private::decode::<#old>(__sw_bytes)?;
                        #(#conversions)*
                        let __sw_v: #current = ::core::convert::From::from(__sw_v);
                        ::statewright::__private::encode_into::<#current>(&__sw_v, __sw_out)
                    },
                }
            }
        })
        .collect()
}

/// The accessor of a keyed state; in the stub (`stub`), with its real signature and an
/// `unreachable!()` body.
fn accessor(index: usize, s: &StateField<'_>, stub: bool) -> TokenStream {
    let ident = s.ident;
    let vis = &s.original.vis;
    let name = &s.name;
    let a = &s.args;
    let docs: Vec<_> = s
        .original
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .collect();
    let ty = &s.original.ty;
    let default_doc = format!("The `{name}` state: `{}`.", type_string(&quote!(#ty)));
    let doc = if docs.is_empty() {
        quote!(#[doc = #default_doc])
    } else {
        quote!(#(#docs)*)
    };
    let namespace = s.attrs.namespace.as_ref();
    let ctx = match namespace {
        Some(_) => quote!(self.__ctx.reborrow().in_namespace(__sw_namespace)),
        None if s.kind == Kind::Timers => quote!(self.__ctx.reborrow()),
        None => quote!(self.__ctx.reborrow().no_namespace()),
    };
    let slot = quote!(::statewright::__private::Slot { id: self.__columns[#index], name: #name });
    let (ret, body) = match s.kind {
        Kind::Value => {
            let t = &a[0];
            (
                quote!(::statewright::__private::ValueView<'_, #t, __SwB>),
                quote!(::statewright::__private::ValueView::new(#ctx, #slot)),
            )
        }
        Kind::List => {
            let t = &a[0];
            (
                quote!(::statewright::__private::ListView<'_, #t, __SwB>),
                quote!(::statewright::__private::ListView::new(#ctx, #slot)),
            )
        }
        Kind::Map => {
            let (k, v) = (&a[0], &a[1]);
            (
                quote!(::statewright::__private::MapView<'_, #k, #v, __SwB>),
                quote!(::statewright::__private::MapView::new(#ctx, #slot)),
            )
        }
        Kind::Reducing => {
            let t = &a[0];
            let f = match s.reduce() {
                Some(Reduce::Builtin(i)) => {
                    quote_spanned!(i.span()=> ::statewright::__private::reduce::#i::<#t>)
                }
                Some(Reduce::Function(p)) => quote!(#p),
                None => quote!(|__sw_a: &#t, _: &#t| -> #t { ::core::clone::Clone::clone(__sw_a) }),
            };
            let span = s
                .attrs
                .reduce
                .as_ref()
                .map_or_else(|| t.span(), Spanned::span);
            let coerce = quote_spanned!(span=> let __sw_reduce: fn(&#t, &#t) -> #t = #f;);
            (
                quote!(::statewright::__private::ReducingView<'_, #t, __SwB>),
                quote!({
                    #coerce
                    ::statewright::__private::ReducingView::new(#ctx, #slot, __sw_reduce)
                }),
            )
        }
        Kind::Timers => {
            let n = &a[0];
            (
                quote!(::statewright::__private::TimerView<'_, #n, __SwB>),
                quote!(::statewright::__private::TimerView::new(#ctx, #slot)),
            )
        }
        Kind::Broadcast | Kind::OperatorList | Kind::UnionList => return TokenStream::new(),
        Kind::Aggregating => {
            // Without `aggregate = ...` (an error, so only in the stub), a stand-in with the
            // declared input and output types.
            let (i, o) = (&a[0], &a[1]);
            let agg = s.attrs.aggregate.as_ref().map_or_else(
                || quote!(::statewright::__private::MissingAggregate<#i, #o>),
                |p| quote!(#p),
            );
            (
                quote!(::statewright::__private::AggregatingView<'_, #agg, __SwB>),
                quote!(::statewright::__private::AggregatingView::new(#ctx, #slot)),
            )
        }
    };
    let body = if stub {
        quote!(::core::unreachable!())
    } else {
        body
    };
    let Some(n) = namespace else {
        return quote! {
            #doc
            #[inline]
            #vis fn #ident(&mut self) -> #ret {
                #body
            }
        };
    };
    let namespaces = format_ident!("{}_namespaces", ident.to_string().trim_start_matches("r#"));
    let namespaces_doc = format!(
        "The namespaces of the `{name}` state for the current key: list them, clear one{}.",
        if matches!(s.kind, Kind::List | Kind::Reducing | Kind::Aggregating) {
            ", merge some into one"
        } else {
            ""
        }
    );
    let (merger_ty, merger) = match s.kind {
        Kind::List => (
            quote!(::statewright::__private::ListMerge),
            quote!(::statewright::__private::ListMerge),
        ),
        Kind::Reducing => {
            let t = &a[0];
            let f = match s.reduce() {
                Some(Reduce::Builtin(i)) => quote!(::statewright::__private::reduce::#i::<#t>),
                Some(Reduce::Function(p)) => quote!(#p),
                None => quote!(|__sw_a: &#t, _: &#t| -> #t { ::core::clone::Clone::clone(__sw_a) }),
            };
            (
                quote!(::statewright::__private::ReduceMerge<#t>),
                quote!(::statewright::__private::ReduceMerge(#f)),
            )
        }
        Kind::Aggregating => {
            let (i, o) = (&a[0], &a[1]);
            let agg = s.attrs.aggregate.as_ref().map_or_else(
                || quote!(::statewright::__private::MissingAggregate<#i, #o>),
                |p| quote!(#p),
            );
            (
                quote!(::statewright::__private::AggregateMerge<#agg>),
                quote!(::statewright::__private::AggregateMerge::new()),
            )
        }
        _ => (
            quote!(::statewright::__private::NoMerge),
            quote!(::statewright::__private::NoMerge),
        ),
    };
    // The namespace's bound again, on the accessor (which encodes it), at the same token as
    // the operator's bound: a namespace type that is not a key is one error, not two.
    let ns_bound = quote_spanned!(n.span()=> #n: ::statewright::StateKey,);
    let prefixed = s.kind == Kind::Map;
    let namespaces_body = if stub {
        quote!(::core::unreachable!())
    } else {
        quote!(::statewright::__private::NamespacesView::new(
            self.__ctx.reborrow(),
            #slot,
            #prefixed,
            #merger,
        ))
    };
    quote! {
        #doc
        #[inline]
        #vis fn #ident(&mut self, __sw_namespace: &#n) -> #ret
        where
            #ns_bound
        {
            #body
        }

        #[doc = #namespaces_doc]
        #vis fn #namespaces(&mut self) -> ::statewright::__private::NamespacesView<'_, #n, __SwB, #merger_ty> {
            #namespaces_body
        }
    }
}
