//! `StateSchema` for a struct or enum: its shape as a constant, with field and variant names.
//! Emitted by `#[derive(StateSchema)]`, `#[statewright::value]` and `#[derive(StateKey)]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields};

use crate::ctxt::Ctxt;

pub fn expand(cx: &Ctxt, input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let name = ident.to_string().trim_start_matches("r#").to_owned();
    let mut generics = input.generics.clone();
    for p in generics.type_params_mut() {
        p.bounds.push(syn::parse_quote!(::statewright::StateSchema));
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let schema = match &input.data {
        Data::Struct(s) => {
            let fields = fields(&s.fields);
            quote!(::statewright::schema::Schema::Struct { name: #name, fields: #fields })
        }
        Data::Enum(e) => {
            let variants = e.variants.iter().map(|v| {
                let vname = v.ident.to_string().trim_start_matches("r#").to_owned();
                let fields = fields(&v.fields);
                quote!(::statewright::schema::Variant { name: #vname, fields: #fields })
            });
            quote!(::statewright::schema::Schema::Enum { name: #name, variants: &[#(#variants),*] })
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "a union has no state schema; use a struct or an enum",
            );
            return TokenStream::new();
        }
    };
    quote! {
        #[automatically_derived]
        impl #impl_generics ::statewright::StateSchema for #ident #ty_generics #where_clause {
            const SCHEMA: &'static ::statewright::schema::Schema = &#schema;
        }
    }
}

/// The `StateSchema` impl emitted with the errors of a mistaken input, so that uses of the type
/// report nothing more. Its shape is a placeholder; the crate does not compile while the errors
/// are there.
pub fn stub(input: &DeriveInput) -> TokenStream {
    let ident = &input.ident;
    let name = ident.to_string().trim_start_matches("r#").to_owned();
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::statewright::StateSchema for #ident #ty_generics #where_clause {
            const SCHEMA: &'static ::statewright::schema::Schema =
                &::statewright::schema::Schema::Struct {
                    name: #name,
                    fields: ::statewright::schema::Fields::Unit,
                };
        }
    }
}

fn field_schema(ty: &syn::Type) -> TokenStream {
    quote_spanned!(ty.span()=> <#ty as ::statewright::StateSchema>::SCHEMA)
}

fn fields(fields: &Fields) -> TokenStream {
    match fields {
        Fields::Unit => quote!(::statewright::schema::Fields::Unit),
        Fields::Unnamed(u) => {
            let items = u.unnamed.iter().map(|f| field_schema(&f.ty));
            quote!(::statewright::schema::Fields::Tuple(&[#(#items),*]))
        }
        Fields::Named(n) => {
            let items = n.named.iter().map(|f| {
                let name = f
                    .ident
                    .as_ref()
                    .map(|i| i.to_string().trim_start_matches("r#").to_owned())
                    .unwrap_or_default();
                let schema = field_schema(&f.ty);
                quote!(::statewright::schema::Field { name: #name, schema: #schema })
            });
            quote!(::statewright::schema::Fields::Named(&[#(#items),*]))
        }
    }
}

/// Whether the item also derives `StateKey` (which emits the schema itself).
pub fn derives_state_key(input: &DeriveInput) -> bool {
    input.attrs.iter().any(|a| {
        a.path().is_ident("derive")
            && a.parse_args_with(
                syn::punctuated::Punctuated::<syn::Path, syn::Token![,]>::parse_terminated,
            )
            .is_ok_and(|paths| {
                paths
                    .iter()
                    .any(|p| p.segments.last().is_some_and(|s| s.ident == "StateKey"))
            })
    })
}
