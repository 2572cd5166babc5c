//! `#[derive(StateKey)]`: the fields in declaration order (enums: the variant index first), so
//! that byte order matches the order `#[derive(PartialOrd)]` gives.
//!
//! Every binding the generated code introduces starts with `__sw_`, so that no name of the
//! user's (a field named `out` or `input`, a constant, a unit struct) collides with it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Data, DeriveInput, Fields};

use crate::ctxt::Ctxt;

pub fn expand(cx: &Ctxt, input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let mut generics = input.generics.clone();
    for p in generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(::statewright::StateKey));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let (encode, decode) = match &input.data {
        Data::Struct(s) => {
            let (pat, enc, dec) = fields(&s.fields);
            (
                quote!(let #ident #pat = self; #(#enc)*),
                quote!(::core::result::Result::Ok(#ident #dec)),
            )
        }
        Data::Enum(e) => {
            let mut enc_arms = Vec::new();
            let mut dec_arms = Vec::new();
            for (i, v) in e.variants.iter().enumerate() {
                let Ok(index) = u32::try_from(i) else {
                    cx.error_spanned_by(v, "too many variants for a state key");
                    break;
                };
                let vi = &v.ident;
                let (pat, enc, dec) = fields(&v.fields);
                enc_arms.push(quote!(#ident::#vi #pat => {
                    ::statewright::EncodeKey::encode_key(&#index, __sw_out);
                    #(#enc)*
                }));
                dec_arms.push(quote!(#index => ::core::result::Result::Ok(#ident::#vi #dec),));
            }
            let name = ident.to_string();
            (
                quote!(match self { #(#enc_arms)* }),
                quote!(match <u32 as ::statewright::StateKey>::decode_key(__sw_input)? {
                    #(#dec_arms)*
                    __sw_tag => ::core::result::Result::Err(::statewright::KeyError::InvalidTag { type_name: #name, tag: __sw_tag }),
                }),
            )
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "`#[derive(StateKey)]` cannot be used on a union",
            );
            return TokenStream::new();
        }
    };
    let schema = super::schema::expand(cx, input);
    quote! {
        const _: () = {
            #schema
            #[automatically_derived]
            impl #impl_generics ::statewright::EncodeKey for #ident #ty_generics #where_clause {
                fn encode_key(&self, __sw_out: &mut ::std::vec::Vec<u8>) {
                    #encode
                }
            }
            #[automatically_derived]
            impl #impl_generics ::statewright::StateKey for #ident #ty_generics #where_clause {
                fn decode_key(__sw_input: &mut &[u8]) -> ::core::result::Result<Self, ::statewright::KeyError> {
                    #decode
                }
            }
        };
    }
}

/// The impls emitted with the errors of a mistaken input (`EncodeKey`, `StateKey` and
/// `StateSchema`, as `expand` emits), so that uses of the type as a key report nothing more.
/// Their bodies never run: the crate does not compile while the errors are there.
pub fn stub(input: &DeriveInput, errors: &syn::Error) -> TokenStream {
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let errors = errors.to_compile_error();
    let schema = super::schema::stub(input);
    quote! {
        #errors
        const _: () = {
            #schema
            #[automatically_derived]
            impl #impl_generics ::statewright::EncodeKey for #ident #ty_generics #where_clause {
                fn encode_key(&self, _: &mut ::std::vec::Vec<u8>) {
                    ::core::unreachable!()
                }
            }
            #[automatically_derived]
            impl #impl_generics ::statewright::StateKey for #ident #ty_generics #where_clause {
                fn decode_key(_: &mut &[u8]) -> ::core::result::Result<Self, ::statewright::KeyError> {
                    ::core::unreachable!()
                }
            }
        };
    }
}

/// The destructuring pattern, the encode statements and the decode constructor of some fields.
/// Fields are bound as `__sw_f0`, `__sw_f1`, ..., whatever their names.
fn fields(fields: &Fields) -> (TokenStream, Vec<TokenStream>, TokenStream) {
    let bindings = |n: usize| -> Vec<_> { (0..n).map(|i| format_ident!("__sw_f{}", i)).collect() };
    let encode = |bindings: &[syn::Ident]| {
        bindings
            .iter()
            .map(|b| quote!(::statewright::EncodeKey::encode_key(#b, __sw_out);))
            .collect()
    };
    match fields {
        Fields::Named(named) => {
            let names: Vec<_> = named
                .named
                .iter()
                .filter_map(|f| f.ident.as_ref())
                .collect();
            let tys: Vec<_> = named.named.iter().map(|f| &f.ty).collect();
            let bound = bindings(names.len());
            (
                quote!({ #(#names: #bound),* }),
                encode(&bound),
                quote!({ #(#names: <#tys as ::statewright::StateKey>::decode_key(__sw_input)?),* }),
            )
        }
        Fields::Unnamed(unnamed) => {
            let tys: Vec<_> = unnamed.unnamed.iter().map(|f| &f.ty).collect();
            let bound = bindings(tys.len());
            (
                quote!(( #(#bound),* )),
                encode(&bound),
                quote!(( #(<#tys as ::statewright::StateKey>::decode_key(__sw_input)?),* )),
            )
        }
        Fields::Unit => (TokenStream::new(), Vec::new(), TokenStream::new()),
    }
}
