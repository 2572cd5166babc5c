//! The typed model of an operator struct: what codegen reads. Built from the syntax tree, with
//! the user's tokens kept for spans.

use proc_macro2::Span;
use syn::{Data, DeriveInput, Fields, GenericArgument, Ident, PathArguments, Type};

use crate::attr::{self, OperatorAttrs, StateAttrs};
use crate::ctxt::Ctxt;
use crate::symbol;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
    Broadcast,
    OperatorList,
    UnionList,
    /// `TimerService<N>`: the operator's timers (keyed: stored under each timer's key).
    Timers,
}

impl Kind {
    /// Whether the state is scoped to the current key (operator states are not).
    pub fn is_keyed(self) -> bool {
        !matches!(self, Kind::Broadcast | Kind::OperatorList | Kind::UnionList)
    }

    pub fn type_name(self) -> &'static str {
        match self {
            Kind::Value => "ValueState",
            Kind::List => "ListState",
            Kind::Map => "MapState",
            Kind::Reducing => "ReducingState",
            Kind::Aggregating => "AggregatingState",
            Kind::Broadcast => "BroadcastState",
            Kind::OperatorList => "OperatorListState",
            Kind::UnionList => "UnionListState",
            Kind::Timers => "TimerService",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ValueState" => Kind::Value,
            "ListState" => Kind::List,
            "MapState" => Kind::Map,
            "ReducingState" => Kind::Reducing,
            "AggregatingState" => Kind::Aggregating,
            "BroadcastState" => Kind::Broadcast,
            "OperatorListState" => Kind::OperatorList,
            "UnionListState" => Kind::UnionList,
            "TimerService" => Kind::Timers,
            _ => return None,
        })
    }
}

/// How a reducing state folds values.
pub enum Reduce {
    /// `max`, `min` or `sum`.
    Builtin(Ident),
    /// A user function path.
    Function(syn::Path),
}

pub struct StateField<'a> {
    pub original: &'a syn::Field,
    pub ident: &'a Ident,
    pub kind: Kind,
    /// The state type's arguments: `[T]`, `[K, V]` or `[IN, OUT]`.
    pub args: Vec<Type>,
    pub name: String,
    /// Where the name came from: the `name = "..."` literal, or the field's identifier.
    pub name_span: Span,
    pub attrs: StateAttrs,
}

impl StateField<'_> {
    pub fn reduce(&self) -> Option<Reduce> {
        let path = self.attrs.reduce.as_ref()?;
        match path.get_ident() {
            Some(i) if ["max", "min", "sum"].contains(&i.to_string().as_str()) => {
                Some(Reduce::Builtin(i.clone()))
            }
            _ => Some(Reduce::Function(path.clone())),
        }
    }
}

pub struct Operator<'a> {
    pub input: &'a DeriveInput,
    pub attrs: OperatorAttrs,
    pub name: String,
    pub max_parallelism: u16,
    pub states: Vec<StateField<'a>>,
}

/// Builds the model, reporting what does not fit to `cx`. `None` when the input is not a
/// struct with named fields (nothing else can be checked then).
pub fn operator<'a>(cx: &Ctxt, input: &'a DeriveInput) -> Option<Operator<'a>> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => &named.named,
            Fields::Unnamed(_) | Fields::Unit => {
                cx.error_spanned_by(
                    &input.ident,
                    "`#[derive(StatefulOperator)]` needs a struct with named fields; each state is a named field",
                );
                return None;
            }
        },
        Data::Enum(e) => {
            cx.error_spanned_by(
                e.enum_token,
                "`#[derive(StatefulOperator)]` cannot be used on an enum; declare the operator as a struct whose fields are its states",
            );
            return None;
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "`#[derive(StatefulOperator)]` cannot be used on a union; declare the operator as a struct whose fields are its states",
            );
            return None;
        }
    };
    let attrs = attr::operator_attrs(cx, &input.attrs);
    let name = attrs
        .name
        .as_ref()
        .map_or_else(|| kebab_case(&input.ident.to_string()), syn::LitStr::value);
    let max_parallelism = attrs.max_parallelism.as_ref().map_or(128, |(n, _)| *n);

    let mut states = Vec::new();
    for field in fields {
        let Some(ident) = field.ident.as_ref() else {
            continue;
        };
        let attrs = attr::state_attrs(cx, &field.attrs);
        match state_type(cx, &field.ty) {
            Some((kind, args)) => {
                let (name, name_span) = match &attrs.name {
                    Some(lit) => (lit.value(), lit.span()),
                    None => (
                        ident.to_string().trim_start_matches("r#").to_owned(),
                        ident.span(),
                    ),
                };
                states.push(StateField {
                    original: field,
                    ident,
                    kind,
                    args,
                    name,
                    name_span,
                    attrs,
                });
            }
            None if attrs.attr.is_some() => {
                cx.error_spanned_by(
                    &attrs.attr,
                    format!(
                        "`#[state]` on field `{ident}`, which is not a state; state fields have one of the types {}",
                        symbol::one_of(&symbol::STATE_TYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>())
                    ),
                );
            }
            None => {}
        }
    }
    Some(Operator {
        input,
        attrs,
        name,
        max_parallelism,
        states,
    })
}

/// Recognises `ValueState<T>`, `MapState<K, V>`, ... by the last path segment.
fn state_type(cx: &Ctxt, ty: &Type) -> Option<(Kind, Vec<Type>)> {
    let Type::Path(tp) = ty else { return None };
    if tp.qself.is_some() {
        return None;
    }
    let last = tp.path.segments.last()?;
    let kind = Kind::from_name(&last.ident.to_string())?;
    let expected = symbol::STATE_TYPES
        .iter()
        .find(|(n, _)| *n == kind.type_name())
        .map_or(1, |(_, n)| *n);
    let args: Vec<Type> = match &last.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // `TimerService` alone has no namespace: `TimerService<()>`.
    let args = if kind == Kind::Timers && args.is_empty() {
        vec![syn::parse_quote!(())]
    } else {
        args
    };
    if args.len() != expected {
        let form = match kind {
            Kind::Map => "MapState<K, V>",
            Kind::Aggregating => "AggregatingState<IN, OUT>",
            Kind::Value => "ValueState<T>",
            Kind::List => "ListState<T>",
            Kind::Reducing => "ReducingState<T>",
            Kind::Broadcast => "BroadcastState<K, V>",
            Kind::OperatorList => "OperatorListState<T>",
            Kind::UnionList => "UnionListState<T>",
            Kind::Timers => "TimerService<N>",
        };
        cx.error_spanned_by(
            ty,
            format!(
                "`{}` takes {expected} type argument{}: `{form}`",
                kind.type_name(),
                if expected == 1 { "" } else { "s" }
            ),
        );
        return None;
    }
    Some((kind, args))
}

/// `FraudDetector` -> `fraud-detector`.
pub fn kebab_case(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.trim_start_matches("r#").chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_operator_names_are_kebab_case() {
        assert_eq!(super::kebab_case("FraudDetector"), "fraud-detector");
        assert_eq!(super::kebab_case("top_n"), "top-n");
        assert_eq!(super::kebab_case("X"), "x");
    }
}
