//! State schemas: what a stored key or value looks like, known at compile time.
//!
//! Every type that can be a state key or value implements [`StateSchema`]: a description of
//! its shape ([`Schema`], field names and types, recursively) and a 64-bit
//! [fingerprint](StateSchema::FINGERPRINT) of it, both associated constants. Core implements it
//! for primitives, `String`, `Vec`, `Option`, arrays and tuples; `#[statewright::value]` and
//! `#[derive(StateKey)]` derive it for user structs and enums (`#[derive(StateSchema)]` on its
//! own for a type that is neither).
//!
//! Snapshots store each state's schema ([`SchemaDesc`], the owned form) and fingerprint. A
//! restore compares them with the code's: a different fingerprint is either a declared
//! migration (`#[state(version = N, migrate_from(...))]`) or an
//! [`Error::SchemaMismatch`](crate::Error::SchemaMismatch) that lists the changes
//! ([`diff`]).
//!
//! The fingerprint covers what decides how the bytes are read: the shape, field and variant
//! names and their order, primitive types. It leaves out the names of structs and enums, so
//! renaming a type (`Txn` to `Transaction`) keeps its data readable.
//!
//! ```
//! use statewright::prelude::*;
//! use statewright::StateSchema;
//!
//! #[statewright::value]
//! pub struct Txn { pub card: u64, pub amount_cents: i64 }
//!
//! assert_eq!(Txn::SCHEMA.describe().to_string(), "Txn { card: u64, amount_cents: i64 }");
//! assert_ne!(Txn::FINGERPRINT, <(u64, i64)>::FINGERPRINT);
//! ```

use std::fmt;

use crate::model::descriptor::{Migration, OperatorDescriptor, StateDescriptor, StateKind};

/// The shape of a stored type, as a constant tree.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Schema {
    /// A primitive: `u64`, `bool`, `String`, `()`, ...
    Primitive(&'static str),
    /// `Option<T>`.
    Option(&'static Schema),
    /// `Vec<T>`.
    List(&'static Schema),
    /// `[T; N]`.
    Array(&'static Schema, usize),
    /// A tuple.
    Tuple(&'static [&'static Schema]),
    /// A struct with its name (not part of the fingerprint) and fields.
    Struct {
        /// The type's name.
        name: &'static str,
        /// Its fields.
        fields: Fields,
    },
    /// An enum with its name (not part of the fingerprint) and variants, in declaration order.
    Enum {
        /// The type's name.
        name: &'static str,
        /// Its variants.
        variants: &'static [Variant],
    },
}

/// The fields of a struct or an enum variant.
#[derive(Debug, Clone, Copy)]
pub enum Fields {
    /// No fields.
    Unit,
    /// Positional fields.
    Tuple(&'static [&'static Schema]),
    /// Named fields, in declaration order.
    Named(&'static [Field]),
}

/// A named field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Its type's schema.
    pub schema: &'static Schema,
}

/// An enum variant.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// The variant's name.
    pub name: &'static str,
    /// Its fields.
    pub fields: Fields,
}

/// A type with a schema known at compile time.
///
/// Implemented for primitives, `String`, `Vec<T>`, `Option<T>`, arrays and tuples, and derived
/// by `#[statewright::value]`, `#[derive(StateKey)]` and `#[derive(StateSchema)]`. A type that
/// contains itself (a recursive type) has no finite schema and is not supported.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no state schema",
    label = "no schema",
    note = "mark value types with `#[statewright::value]`, key types with `#[derive(StateKey)]`, other types with `#[derive(StateSchema)]`"
)]
pub trait StateSchema {
    /// The type's shape.
    const SCHEMA: &'static Schema;
    /// A 64-bit fingerprint of [`SCHEMA`](Self::SCHEMA), computed at compile time.
    const FINGERPRINT: u64 = Schema::fingerprint(Self::SCHEMA);
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

const fn mix_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

const fn mix_u64(h: u64, v: u64) -> u64 {
    mix_bytes(h, &v.to_le_bytes())
}

const fn mix_str(h: u64, s: &str) -> u64 {
    mix_bytes(mix_u64(h, s.len() as u64), s.as_bytes())
}

const fn mix_fields(mut h: u64, fields: &Fields) -> u64 {
    match fields {
        Fields::Unit => mix_u64(h, 0),
        Fields::Tuple(items) => {
            h = mix_u64(mix_u64(h, 1), items.len() as u64);
            let mut i = 0;
            while i < items.len() {
                h = mix(h, items[i]);
                i += 1;
            }
            h
        }
        Fields::Named(named) => {
            h = mix_u64(mix_u64(h, 2), named.len() as u64);
            let mut i = 0;
            while i < named.len() {
                h = mix_str(h, named[i].name);
                h = mix(h, named[i].schema);
                i += 1;
            }
            h
        }
    }
}

const fn mix(mut h: u64, schema: &Schema) -> u64 {
    match schema {
        Schema::Primitive(name) => mix_str(mix_u64(h, 1), name),
        Schema::Option(inner) => mix(mix_u64(h, 2), inner),
        Schema::List(inner) => mix(mix_u64(h, 3), inner),
        Schema::Array(inner, len) => mix(mix_u64(mix_u64(h, 4), *len as u64), inner),
        Schema::Tuple(items) => {
            h = mix_u64(mix_u64(h, 5), items.len() as u64);
            let mut i = 0;
            while i < items.len() {
                h = mix(h, items[i]);
                i += 1;
            }
            h
        }
        Schema::Struct { fields, .. } => mix_fields(mix_u64(h, 7), fields),
        Schema::Enum { variants, .. } => {
            h = mix_u64(mix_u64(h, 8), variants.len() as u64);
            let mut i = 0;
            while i < variants.len() {
                h = mix_str(h, variants[i].name);
                h = mix_fields(h, &variants[i].fields);
                i += 1;
            }
            h
        }
    }
}

impl Schema {
    /// The fingerprint of a schema (FNV-1a over its shape, field and variant names).
    #[must_use]
    pub const fn fingerprint(schema: &Schema) -> u64 {
        mix(FNV_OFFSET, schema)
    }

    /// The owned, serialisable description (what snapshots store).
    #[must_use]
    pub fn describe(&self) -> SchemaDesc {
        match *self {
            Schema::Primitive(name) => SchemaDesc::Primitive(name.to_owned()),
            Schema::Option(inner) => SchemaDesc::Option(Box::new(inner.describe())),
            Schema::List(inner) => SchemaDesc::List(Box::new(inner.describe())),
            Schema::Array(inner, len) => SchemaDesc::Array(Box::new(inner.describe()), len as u64),
            Schema::Tuple(items) => SchemaDesc::Tuple(items.iter().map(|s| s.describe()).collect()),
            Schema::Struct { name, fields } => SchemaDesc::Struct {
                name: name.to_owned(),
                fields: fields.describe(),
            },
            Schema::Enum { name, variants } => SchemaDesc::Enum {
                name: name.to_owned(),
                variants: variants
                    .iter()
                    .map(|v| VariantDesc {
                        name: v.name.to_owned(),
                        fields: v.fields.describe(),
                    })
                    .collect(),
            },
        }
    }
}

impl Fields {
    fn describe(&self) -> FieldsDesc {
        match *self {
            Fields::Unit => FieldsDesc::Unit,
            Fields::Tuple(items) => FieldsDesc::Tuple(items.iter().map(|s| s.describe()).collect()),
            Fields::Named(named) => FieldsDesc::Named(
                named
                    .iter()
                    .map(|f| FieldDesc {
                        name: f.name.to_owned(),
                        schema: f.schema.describe(),
                    })
                    .collect(),
            ),
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.describe().fmt(f)
    }
}

mod compat;
mod desc;
mod diff;
mod stored;

pub use compat::*;
pub use desc::*;
pub use diff::*;
pub use stored::*;

impl StateSchema for () {
    const SCHEMA: &'static Schema = &Schema::Primitive("()");
}

impl<T: StateSchema> StateSchema for Vec<T> {
    const SCHEMA: &'static Schema = &Schema::List(T::SCHEMA);
}

impl<T: StateSchema> StateSchema for Option<T> {
    const SCHEMA: &'static Schema = &Schema::Option(T::SCHEMA);
}

impl<T: StateSchema, const N: usize> StateSchema for [T; N] {
    const SCHEMA: &'static Schema = &Schema::Array(T::SCHEMA, N);
}

macro_rules! tuples {
    ($(($($name:ident)+))*) => {$(
        impl<$($name: StateSchema),+> StateSchema for ($($name,)+) {
            const SCHEMA: &'static Schema = &Schema::Tuple(&[$($name::SCHEMA),+]);
        }
    )*};
}
tuples!((A)(A B)(A B C)(A B C D));

#[cfg(test)]
mod tests {
    use super::*;

    struct Old;
    impl StateSchema for Old {
        const SCHEMA: &'static Schema = &Schema::Struct {
            name: "Txn",
            fields: Fields::Named(&[
                Field {
                    name: "card",
                    schema: u64::SCHEMA,
                },
                Field {
                    name: "amount",
                    schema: i64::SCHEMA,
                },
                Field {
                    name: "tags",
                    schema: <Vec<String>>::SCHEMA,
                },
            ]),
        };
    }
    struct New;
    impl StateSchema for New {
        const SCHEMA: &'static Schema = &Schema::Struct {
            name: "Transaction",
            fields: Fields::Named(&[
                Field {
                    name: "card",
                    schema: u64::SCHEMA,
                },
                Field {
                    name: "amount",
                    schema: f64::SCHEMA,
                },
                Field {
                    name: "merchant",
                    schema: <Option<u32>>::SCHEMA,
                },
            ]),
        };
    }
    struct Renamed;
    impl StateSchema for Renamed {
        const SCHEMA: &'static Schema = &Schema::Struct {
            name: "Renamed",
            fields: Old::SCHEMA.fields_for_test(),
        };
    }
    impl Schema {
        const fn fields_for_test(&self) -> Fields {
            match self {
                Schema::Struct { fields, .. } => *fields,
                _ => Fields::Unit,
            }
        }
    }

    /// The fingerprint of `u64` as first released: fingerprints are stored in snapshots, so a
    /// change to the hash would make every stored state look changed.
    const PINNED_U64: u64 = 15_290_725_702_364_772_700;

    #[test]
    fn fingerprints_tell_shapes_apart_and_ignore_type_names() {
        let fps = [
            u64::FINGERPRINT,
            i64::FINGERPRINT,
            <Vec<u64>>::FINGERPRINT,
            <Option<u64>>::FINGERPRINT,
            <[u64; 2]>::FINGERPRINT,
            <[u64; 3]>::FINGERPRINT,
            <(u64,)>::FINGERPRINT,
            <(u64, u64)>::FINGERPRINT,
            String::FINGERPRINT,
            Old::FINGERPRINT,
            New::FINGERPRINT,
        ];
        for (i, a) in fps.iter().enumerate() {
            for b in &fps[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Old::FINGERPRINT, Renamed::FINGERPRINT);
        // A fixed value: the fingerprint is part of the persisted format.
        assert_eq!(
            u64::FINGERPRINT,
            Schema::fingerprint(&Schema::Primitive("u64"))
        );
        assert_eq!(u64::FINGERPRINT, PINNED_U64);
    }

    #[test]
    fn descriptions_read_like_the_declaration_and_survive_json() {
        let d = Old::SCHEMA.describe();
        assert_eq!(
            d.to_string(),
            "Txn { card: u64, amount: i64, tags: Vec<String> }"
        );
        assert_eq!(SchemaDesc::from_json(&d.to_json()).unwrap(), d);
        assert_eq!(
            <(u8, [bool; 2])>::SCHEMA.describe().to_string(),
            "(u8, [bool; 2])"
        );
        assert_eq!(<(u8,)>::SCHEMA.describe().short(), "(u8,)");
    }

    #[test]
    fn diff_names_every_change() {
        let changes: Vec<String> = diff(&Old::SCHEMA.describe(), &New::SCHEMA.describe())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "- field `tags`: Vec<String> (removed)",
                "~ field `amount`: i64 -> f64",
                "+ field `merchant`: Option<u32> (added)",
            ]
        );
        assert!(diff(&Old::SCHEMA.describe(), &Renamed::SCHEMA.describe()).is_empty());
        let fields = |names: &[&str]| SchemaDesc::Struct {
            name: "S".into(),
            fields: FieldsDesc::Named(
                names
                    .iter()
                    .map(|n| FieldDesc {
                        name: (*n).into(),
                        schema: u8::SCHEMA.describe(),
                    })
                    .collect(),
            ),
        };
        let r = diff(&fields(&["a", "b", "c"]), &fields(&["b", "a"]));
        assert_eq!(
            r.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["- field `c`: u8 (removed)", "~ fields reordered"]
        );
        let t = diff(&u64::SCHEMA.describe(), &String::SCHEMA.describe());
        assert_eq!(t[0].to_string(), "~ type: u64 -> String");
    }
}
