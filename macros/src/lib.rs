//! Procedural macros of statewright. Use them through the `statewright` crate:
//! `#[derive(StatefulOperator)]`, `#[derive(StateKey)]` and `#[statewright::value]`.
//!
//! Each entry point parses its input into a typed model ([`model`]), reports every mistake at
//! once under the user's tokens ([`ctxt`], [`check`]), and generates code from the model only
//! ([`codegen`]). With the errors of a mistaken input, a derive also emits a stub impl of its
//! trait (as thiserror and clap do), so that uses of the type report nothing more: one mistake,
//! one message.

mod attr;
mod check;
mod codegen;
mod ctxt;
mod model;
mod symbol;

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

/// Derives `statewright::StatefulOperator` for a struct whose fields declare its state.
///
/// See the `statewright` crate for the attributes: `#[operator(name = "...", key = Type,
/// max_parallelism = N)]` on the struct, `#[state(name = "...", ttl = "...", update = "...",
/// reduce = f, aggregate = A)]` on state fields.
#[proc_macro_derive(StatefulOperator, attributes(operator, state))]
pub fn derive_stateful_operator(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_operator(&input).into()
}

/// Derives `statewright::StateKey` (canonical, order-preserving key encoding).
#[proc_macro_derive(StateKey)]
pub fn derive_state_key(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let cx = ctxt::Ctxt::new();
    let out = codegen::key::expand(&cx, &input);
    match cx.check() {
        Ok(()) => out.into(),
        Err(e) => codegen::key::stub(&input, &e).into(),
    }
}

/// Derives `statewright::StateSchema` (the type's shape and fingerprint, as constants) for a
/// struct or enum used inside state values or keys without being one itself.
/// `#[statewright::value]` and `#[derive(StateKey)]` include it.
#[proc_macro_derive(StateSchema)]
pub fn derive_state_schema(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    let cx = ctxt::Ctxt::new();
    let out = codegen::schema::expand(&cx, &input);
    let out = match cx.check() {
        Ok(()) => out,
        Err(e) => {
            let errors = e.into_compile_error();
            let stub = codegen::schema::stub(&input);
            quote::quote!(#errors #stub)
        }
    };
    quote::quote!(const _: () = { #out };).into()
}

/// Makes a struct or enum storable as state: adds the rkyv derives (through statewright's
/// re-export, so users do not depend on rkyv) and implements `StateValue` and `StateSchema`.
#[proc_macro_attribute]
pub fn value(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    if !args.is_empty() {
        return syn::Error::new_spanned(args, "`#[statewright::value]` takes no arguments")
            .into_compile_error()
            .into();
    }
    let input = parse_macro_input!(input as DeriveInput);
    codegen::value::expand(&input).into()
}

/// The operator's impl, or its errors with a stub impl.
fn expand_operator(input: &DeriveInput) -> proc_macro2::TokenStream {
    let cx = ctxt::Ctxt::new();
    let model = model::operator(&cx, input);
    if let Some(model) = &model {
        check::check(&cx, model);
    }
    match (cx.check(), &model) {
        (Ok(()), Some(model)) => codegen::operator::expand(model),
        // No model is always reported; this is only for completeness.
        (Ok(()), None) => proc_macro2::TokenStream::new(),
        (Err(e), model) => codegen::operator::stub(input, model.as_ref(), &e),
    }
}

#[cfg(test)]
mod expansion {
    //! Snapshots of generated code, reviewed with `cargo insta review`.

    fn pretty(tokens: proc_macro2::TokenStream) -> String {
        match syn::parse2::<syn::File>(tokens.clone()) {
            Ok(file) => prettyplease::unparse(&file),
            Err(e) => panic!("generated code does not parse: {e}\n{tokens}"),
        }
    }

    fn operator(input: proc_macro2::TokenStream) -> String {
        let input: syn::DeriveInput = syn::parse2(input).unwrap();
        pretty(super::expand_operator(&input))
    }

    #[test]
    fn fraud_detector() {
        insta::assert_snapshot!(operator(quote::quote! {
            #[operator(name = "fraud-detector", key = u64, max_parallelism = 128)]
            pub struct FraudDetector {
                #[state(ttl = "1m")]
                small_seen: ValueState<bool>,
                #[state(ttl = "1h", update = "on_read_and_write")]
                recent: ListState<Txn>,
                per_merchant: MapState<u32, i64>,
                #[state(reduce = max)]
                largest: ReducingState<i64>,
                threshold_cents: i64,
            }
        }));
    }

    #[test]
    fn generic_operator_with_aggregate() {
        insta::assert_snapshot!(operator(quote::quote! {
            #[operator(key = String)]
            pub(crate) struct Averages<T: Clone> where T: Default {
                /// Mean of the values.
                #[state(name = "mean", aggregate = Mean)]
                avg: AggregatingState<i64, f64>,
                #[state(reduce = crate::longest)]
                longest: ReducingState<String>,
                extra: T,
            }
        }));
    }

    #[test]
    fn migrations_and_operator_state() {
        insta::assert_snapshot!(operator(quote::quote! {
            #[operator(name = "payments", key = u64)]
            pub struct Payments {
                #[state(version = 3, migrate_from(v1 = TxnV1, v2 = TxnV2))]
                last: ValueState<Txn>,
                rules: BroadcastState<String, i64>,
                offsets: UnionListState<u64>,
            }
        }));
    }

    #[test]
    fn state_key_and_value() {
        let key: syn::DeriveInput = syn::parse_quote! {
            enum Route { Direct(u32), Via { hub: String, hops: u8 }, Unknown }
        };
        let cx = super::ctxt::Ctxt::new();
        let k = super::codegen::key::expand(&cx, &key);
        assert!(cx.check().is_ok());
        let value: syn::DeriveInput = syn::parse_quote! {
            pub struct Pair<T> { pub a: T, pub b: u64 }
        };
        let v = super::codegen::value::expand(&value);
        insta::assert_snapshot!(format!("{}\n{}", pretty(k), pretty(v)));
    }
}
