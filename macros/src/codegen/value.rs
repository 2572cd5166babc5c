//! `#[statewright::value]`: rkyv derives through statewright's re-export, and the
//! `StateValue` impl.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

pub fn expand(input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    // `#[derive(StateKey)]` emits the schema too.
    let schema = if super::schema::derives_state_key(input) {
        TokenStream::new()
    } else {
        let cx = crate::ctxt::Ctxt::new();
        let schema = super::schema::expand(&cx, input);
        match cx.check() {
            Ok(()) => schema,
            Err(e) => e.into_compile_error(),
        }
    };
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let state_value = if input.generics.params.is_empty() {
        quote!(::statewright::__private::__impl_state_value!(#ident);)
    } else {
        let params = &input.generics.params;
        let _ = impl_generics;
        let extra = where_clause.map(|w| {
            let p = &w.predicates;
            quote!(#p,)
        });
        let statics = input.generics.type_params().map(|t| {
            let i = &t.ident;
            quote!(#i: 'static + ::statewright::StateSchema,)
        });
        quote! {
            ::statewright::__private::__impl_state_value!(generic [#params] #ident #ty_generics where
                #extra
                #(#statics)*
                #ident #ty_generics: for<'__a> ::statewright::__private::rkyv::Serialize<::statewright::codec::ValueSerializer<'__a>>,
                <#ident #ty_generics as ::statewright::__private::rkyv::Archive>::Archived:
                    for<'__a> ::statewright::__private::bytecheck::CheckBytes<::statewright::codec::ValueValidator<'__a>>
                    + ::statewright::__private::rkyv::Deserialize<#ident #ty_generics, ::statewright::codec::ValueDeserializer>,
            );
        }
    };
    quote! {
        #[derive(
            ::statewright::__private::rkyv::Archive,
            ::statewright::__private::rkyv::Serialize,
            ::statewright::__private::rkyv::Deserialize
        )]
        #[rkyv(crate = ::statewright::__private::rkyv)]
        #input

        const _: () = {
            #schema
            #state_value
        };
    }
}
