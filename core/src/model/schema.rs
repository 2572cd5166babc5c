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
//! use statewright::schema::StateSchema;
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

/// The owned form of a [`Schema`]: stored in snapshots, compared by [`diff`], serialisable to
/// JSON (as in [`OperatorManifest`](crate::OperatorManifest)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaDesc {
    /// A primitive.
    Primitive(String),
    /// `Option<T>`.
    Option(Box<SchemaDesc>),
    /// `Vec<T>`.
    List(Box<SchemaDesc>),
    /// `[T; N]`.
    Array(Box<SchemaDesc>, u64),
    /// A tuple.
    Tuple(Vec<SchemaDesc>),
    /// A struct.
    Struct {
        /// The type's name.
        name: String,
        /// Its fields.
        fields: FieldsDesc,
    },
    /// An enum.
    Enum {
        /// The type's name.
        name: String,
        /// Its variants.
        variants: Vec<VariantDesc>,
    },
}

/// The fields of a described struct or variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldsDesc {
    /// No fields.
    Unit,
    /// Positional fields.
    Tuple(Vec<SchemaDesc>),
    /// Named fields.
    Named(Vec<FieldDesc>),
}

/// A described named field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldDesc {
    /// The field's name.
    pub name: String,
    /// Its type.
    pub schema: SchemaDesc,
}

/// A described enum variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VariantDesc {
    /// The variant's name.
    pub name: String,
    /// Its fields.
    pub fields: FieldsDesc,
}

impl SchemaDesc {
    /// The description as compact JSON (how snapshots store it).
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings, numbers and enums only: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A description read back from [`to_json`](Self::to_json).
    ///
    /// # Errors
    ///
    /// The JSON error when `json` is not a description.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The type's name for a one-line mention: `Txn`, `Vec<u64>`, `(u32, String)`.
    #[must_use]
    pub fn short(&self) -> String {
        match self {
            SchemaDesc::Struct { name, .. } | SchemaDesc::Enum { name, .. } => name.clone(),
            SchemaDesc::Primitive(p) => p.clone(),
            SchemaDesc::Option(i) => format!("Option<{}>", i.short()),
            SchemaDesc::List(i) => format!("Vec<{}>", i.short()),
            SchemaDesc::Array(i, n) => format!("[{}; {n}]", i.short()),
            SchemaDesc::Tuple(items) => {
                let parts: Vec<_> = items.iter().map(SchemaDesc::short).collect();
                if parts.len() == 1 {
                    format!("({},)", parts[0])
                } else {
                    format!("({})", parts.join(", "))
                }
            }
        }
    }
}

fn write_fields(f: &mut fmt::Formatter<'_>, fields: &FieldsDesc) -> fmt::Result {
    match fields {
        FieldsDesc::Unit => Ok(()),
        FieldsDesc::Tuple(items) => {
            f.write_str("(")?;
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{s}")?;
            }
            f.write_str(")")
        }
        FieldsDesc::Named(named) => {
            f.write_str(" {")?;
            for (i, field) in named.iter().enumerate() {
                f.write_str(if i > 0 { ", " } else { " " })?;
                write!(f, "{}: {}", field.name, field.schema)?;
            }
            f.write_str(if named.is_empty() { "}" } else { " }" })
        }
    }
}

impl fmt::Display for SchemaDesc {
    /// Recursively, with field names: `Txn { card: u64, tags: Vec<String> }`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaDesc::Primitive(p) => f.write_str(p),
            SchemaDesc::Option(i) => write!(f, "Option<{i}>"),
            SchemaDesc::List(i) => write!(f, "Vec<{i}>"),
            SchemaDesc::Array(i, n) => write!(f, "[{i}; {n}]"),
            SchemaDesc::Tuple(items) => {
                f.write_str("(")?;
                for (i, s) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{s}")?;
                }
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            SchemaDesc::Struct { name, fields } => {
                f.write_str(name)?;
                write_fields(f, fields)
            }
            SchemaDesc::Enum { name, variants } => {
                write!(f, "{name} {{")?;
                for (i, v) in variants.iter().enumerate() {
                    f.write_str(if i > 0 { ", " } else { " " })?;
                    f.write_str(&v.name)?;
                    write_fields(f, &v.fields)?;
                }
                f.write_str(if variants.is_empty() { "}" } else { " }" })
            }
        }
    }
}

/// One difference between a stored schema and the code's, found by [`diff`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    /// Where, as a path into the type: `amount`, `route.Via.hub`, `[]` for list elements;
    /// empty for the type itself.
    pub path: String,
    /// What changed.
    pub change: ChangeKind,
}

/// What a [`SchemaChange`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A field the code declares and the stored data does not have.
    FieldAdded(String),
    /// A stored field the code no longer declares.
    FieldRemoved(String),
    /// The same fields in another order (the stored layout follows declaration order).
    FieldsReordered,
    /// A variant the code declares and the stored data does not have.
    VariantAdded,
    /// A stored variant the code no longer declares.
    VariantRemoved,
    /// The same variants in another order (stored tags follow declaration order).
    VariantsReordered,
    /// Another type: stored, then the code's.
    TypeChanged(String, String),
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |f: &mut fmt::Formatter<'_>, what: &str| {
            if self.path.is_empty() {
                write!(f, "{what}")
            } else {
                write!(f, "{what} `{}`", self.path)
            }
        };
        match &self.change {
            ChangeKind::FieldAdded(ty) => {
                f.write_str("+ ")?;
                at(f, "field")?;
                write!(f, ": {ty} (added)")
            }
            ChangeKind::FieldRemoved(ty) => {
                f.write_str("- ")?;
                at(f, "field")?;
                write!(f, ": {ty} (removed)")
            }
            ChangeKind::FieldsReordered if self.path.is_empty() => {
                f.write_str("~ fields reordered")
            }
            ChangeKind::FieldsReordered => write!(f, "~ fields of `{}` reordered", self.path),
            ChangeKind::VariantAdded => {
                f.write_str("+ ")?;
                at(f, "variant")?;
                f.write_str(" (added)")
            }
            ChangeKind::VariantRemoved => {
                f.write_str("- ")?;
                at(f, "variant")?;
                f.write_str(" (removed)")
            }
            ChangeKind::VariantsReordered if self.path.is_empty() => {
                f.write_str("~ variants reordered")
            }
            ChangeKind::VariantsReordered => write!(f, "~ variants of `{}` reordered", self.path),
            ChangeKind::TypeChanged(from, to) => {
                f.write_str("~ ")?;
                if self.path.is_empty() {
                    f.write_str("type")?;
                } else {
                    at(f, "field")?;
                }
                write!(f, ": {from} -> {to}")
            }
        }
    }
}

fn join(path: &str, part: &str) -> String {
    if path.is_empty() {
        part.to_owned()
    } else {
        format!("{path}.{part}")
    }
}

/// The differences between a stored schema (`old`) and the code's (`new`), outermost first.
/// Empty when they read the same bytes the same way (type names may differ).
#[must_use]
pub fn diff(old: &SchemaDesc, new: &SchemaDesc) -> Vec<SchemaChange> {
    let mut out = Vec::new();
    diff_at("", old, new, &mut out);
    out
}

fn diff_at(path: &str, old: &SchemaDesc, new: &SchemaDesc, out: &mut Vec<SchemaChange>) {
    use SchemaDesc as S;
    match (old, new) {
        (S::Primitive(a), S::Primitive(b)) if a == b => {}
        (S::Option(a), S::Option(b)) => diff_at(path, a, b, out),
        (S::List(a), S::List(b)) => diff_at(&format!("{path}[]"), a, b, out),
        (S::Array(a, n), S::Array(b, m)) if n == m => diff_at(&format!("{path}[]"), a, b, out),
        (S::Tuple(a), S::Tuple(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_at(&join(path, &i.to_string()), x, y, out);
            }
        }
        (S::Struct { fields: a, .. }, S::Struct { fields: b, .. }) => {
            diff_fields(path, a, b, out);
        }
        (S::Enum { variants: a, .. }, S::Enum { variants: b, .. }) => {
            for v in a {
                if !b.iter().any(|w| w.name == v.name) {
                    out.push(SchemaChange {
                        path: join(path, &v.name),
                        change: ChangeKind::VariantRemoved,
                    });
                }
            }
            for w in b {
                match a.iter().find(|v| v.name == w.name) {
                    None => out.push(SchemaChange {
                        path: join(path, &w.name),
                        change: ChangeKind::VariantAdded,
                    }),
                    Some(v) => diff_fields(&join(path, &w.name), &v.fields, &w.fields, out),
                }
            }
            if reordered(
                a.iter().map(|v| v.name.as_str()).collect(),
                b.iter().map(|v| v.name.as_str()).collect(),
            ) {
                out.push(SchemaChange {
                    path: path.to_owned(),
                    change: ChangeKind::VariantsReordered,
                });
            }
        }
        _ => out.push(SchemaChange {
            path: path.to_owned(),
            change: ChangeKind::TypeChanged(old.to_string(), new.to_string()),
        }),
    }
}

/// Whether the names both lists have appear in another order (the stored layout and variant
/// tags follow declaration order).
fn reordered(old: Vec<&str>, new: Vec<&str>) -> bool {
    let common = |x: &[&str], y: &[&str]| -> Vec<String> {
        x.iter()
            .filter(|n| y.contains(n))
            .map(|n| (*n).to_owned())
            .collect()
    };
    common(&old, &new) != common(&new, &old)
}

fn diff_fields(path: &str, old: &FieldsDesc, new: &FieldsDesc, out: &mut Vec<SchemaChange>) {
    use FieldsDesc as F;
    match (old, new) {
        (F::Unit, F::Unit) => {}
        (F::Tuple(a), F::Tuple(b)) => {
            for (i, x) in a.iter().enumerate() {
                match b.get(i) {
                    Some(y) => diff_at(&join(path, &i.to_string()), x, y, out),
                    None => out.push(SchemaChange {
                        path: join(path, &i.to_string()),
                        change: ChangeKind::FieldRemoved(x.to_string()),
                    }),
                }
            }
            for (i, y) in b.iter().enumerate().skip(a.len()) {
                out.push(SchemaChange {
                    path: join(path, &i.to_string()),
                    change: ChangeKind::FieldAdded(y.to_string()),
                });
            }
        }
        (F::Named(a), F::Named(b)) => {
            for x in a {
                if !b.iter().any(|y| y.name == x.name) {
                    out.push(SchemaChange {
                        path: join(path, &x.name),
                        change: ChangeKind::FieldRemoved(x.schema.to_string()),
                    });
                }
            }
            for y in b {
                match a.iter().find(|x| x.name == y.name) {
                    None => out.push(SchemaChange {
                        path: join(path, &y.name),
                        change: ChangeKind::FieldAdded(y.schema.to_string()),
                    }),
                    Some(x) => diff_at(&join(path, &y.name), &x.schema, &y.schema, out),
                }
            }
            if reordered(
                a.iter().map(|f| f.name.as_str()).collect(),
                b.iter().map(|f| f.name.as_str()).collect(),
            ) {
                out.push(SchemaChange {
                    path: path.to_owned(),
                    change: ChangeKind::FieldsReordered,
                });
            }
        }
        _ => {
            let show = |x: &FieldsDesc| match x {
                F::Unit => "no fields".to_owned(),
                F::Tuple(items) => format!("{} positional fields", items.len()),
                F::Named(named) => format!("{} named fields", named.len()),
            };
            out.push(SchemaChange {
                path: path.to_owned(),
                change: ChangeKind::TypeChanged(show(old), show(new)),
            });
        }
    }
}

/// A schema as a snapshot stores it: the fingerprint and the description.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSchema {
    /// The fingerprint the writing code had.
    pub fingerprint: u64,
    /// The description it had.
    pub desc: SchemaDesc,
}

impl StoredSchema {
    /// The stored form of a schema.
    #[must_use]
    pub fn of(schema: &Schema) -> Self {
        Self {
            fingerprint: Schema::fingerprint(schema),
            desc: schema.describe(),
        }
    }
}

/// The schemas of an operator's states as a checkpoint of a backend's own files (a native
/// snapshot, whose files say nothing of types) records them in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorSchemas {
    /// The key schema.
    pub key: StoredSchema,
    /// Every state, keyed and operator states.
    pub states: Vec<StateSchemaRecord>,
}

/// One state in [`OperatorSchemas`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateSchemaRecord {
    /// The state's name.
    pub name: String,
    /// Its kind's tag ([`StateKind::tag`]).
    pub kind: u8,
    /// Its value schema's version.
    pub version: u32,
    /// Its value schema.
    pub value: StoredSchema,
    /// Its user key schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<StoredSchema>,
    /// Whether its values carry TTL stamps.
    #[serde(default)]
    pub stamped: bool,
}

impl OperatorSchemas {
    /// The schemas of an operator's declaration.
    #[must_use]
    pub fn of(op: &OperatorDescriptor) -> Self {
        Self {
            key: StoredSchema::of(op.key_schema),
            states: op
                .states
                .iter()
                .chain(op.operator_states)
                .map(|s| StateSchemaRecord {
                    name: s.name.to_owned(),
                    kind: s.kind.tag(),
                    version: s.version,
                    value: StoredSchema::of(s.value_schema),
                    user_key: s.user_key_schema.map(StoredSchema::of),
                    stamped: s.ttl.is_some(),
                })
                .collect(),
        }
    }

    /// Checks these stored schemas against `op`'s declaration: how to read each stored state
    /// (in order), or every problem found.
    ///
    /// # Errors
    ///
    /// The report of the problems.
    pub fn check(
        &self,
        op: &OperatorDescriptor,
    ) -> Result<Vec<Option<(&'static StateDescriptor, Reading)>>, SchemaReport> {
        let mut report = SchemaReport::default();
        report.check_key(Some(&self.key), op);
        let stored: Vec<StoredState<'_>> = self
            .states
            .iter()
            .filter_map(|s| {
                Some(StoredState {
                    name: &s.name,
                    kind: StateKind::from_tag(s.kind)?,
                    version: s.version,
                    value: Some(&s.value),
                    user_key: s.user_key.as_ref(),
                })
            })
            .collect();
        let checked = report.check_states(&stored, op);
        if report.problems.is_empty() {
            Ok(checked)
        } else {
            Err(report)
        }
    }
}

/// What a snapshot recorded about one state, to check against the code's descriptor.
#[derive(Debug, Clone, Copy)]
pub struct StoredState<'a> {
    /// The state's name.
    pub name: &'a str,
    /// Its kind.
    pub kind: StateKind,
    /// Its value schema's version (0: not recorded).
    pub version: u32,
    /// Its value schema (`None`: not recorded, as in format 1 snapshots).
    pub value: Option<&'a StoredSchema>,
    /// Its user key schema.
    pub user_key: Option<&'a StoredSchema>,
}

/// How stored values of a state are read.
#[derive(Debug, Clone, Copy)]
pub enum Reading {
    /// As they are.
    AsIs,
    /// Through a declared migration.
    Migrate(&'static Migration),
}

/// What kind of [`SchemaProblem`] a restore found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The operator's key type changed (keys decide key groups; they cannot be migrated).
    KeyChanged,
    /// A stored state the code does not declare (perhaps renamed).
    StateUndeclared,
    /// A state declared with another kind.
    KindChanged,
    /// A map's (or broadcast state's) user key type changed.
    UserKeyChanged,
    /// The value type changed without a migration that reads the stored version.
    ValueChanged,
    /// The stored values are of an older version, and no migration reads it.
    MigrationMissing,
    /// The type a migration declares for the stored version is not the stored type.
    MigrationMismatch,
    /// The stored values are of a newer version than the code's.
    NewerVersion,
}

/// One reason a snapshot does not fit the code, with the schema changes behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    /// The state, or `None` for the operator's key.
    pub state: Option<String>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// One line: what does not fit.
    pub summary: String,
    /// The schema changes, stored -> code.
    pub changes: Vec<SchemaChange>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            Some(s) => write!(f, "state `{s}`: {}", self.summary)?,
            None => write!(f, "key: {}", self.summary)?,
        }
        for c in &self.changes {
            write!(f, "\n      {c}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// The problems of one restore, one per line block; what
/// [`Error::SchemaMismatch`](crate::Error::SchemaMismatch) prints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaReport {
    /// Every problem found (all states are checked before reporting).
    pub problems: Vec<SchemaProblem>,
}

impl fmt::Display for SchemaReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

fn changed(stored: &SchemaDesc, code: &SchemaDesc) -> Vec<SchemaChange> {
    let changes = diff(stored, code);
    if changes.is_empty() {
        // Same shape, different fingerprint: a fingerprint of another hash version.
        vec![SchemaChange {
            path: String::new(),
            change: ChangeKind::TypeChanged(stored.to_string(), code.to_string()),
        }]
    } else {
        changes
    }
}

impl SchemaReport {
    /// Checks the stored key schema against the operator's key type.
    pub fn check_key(&mut self, stored: Option<&StoredSchema>, op: &OperatorDescriptor) {
        let Some(stored) = stored else { return };
        if stored.fingerprint == op.key_fingerprint {
            return;
        }
        let code = op.key_schema.describe();
        self.problems.push(SchemaProblem {
            state: None,
            kind: ProblemKind::KeyChanged,
            summary: format!(
                "the key type changed from `{}` to `{}` ({})",
                stored.desc.short(),
                op.key_type,
                code
            ),
            changes: changed(&stored.desc, &code),
            hint: Some(
                "keys decide key groups and cannot be migrated: keep the key type, or start the new key type from empty state".into(),
            ),
        });
    }

    /// Checks stored states against the code's: every stored state must be declared with the
    /// same kind, user key and value schema, or a migration from its version. Returns how to
    /// read each stored state (`None` for one with a problem), in the order given.
    pub fn check_states(
        &mut self,
        stored: &[StoredState<'_>],
        op: &OperatorDescriptor,
    ) -> Vec<Option<(&'static StateDescriptor, Reading)>> {
        stored
            .iter()
            .map(|s| self.check_state(s, stored, op))
            .collect()
    }

    fn check_state(
        &mut self,
        s: &StoredState<'_>,
        all: &[StoredState<'_>],
        op: &OperatorDescriptor,
    ) -> Option<(&'static StateDescriptor, Reading)> {
        let state = Some(s.name.to_owned());
        let Some(d) = op.state(s.name) else {
            // A declared state of the same kind and value schema that the snapshot lacks was
            // probably renamed.
            let renamed = op.states.iter().chain(op.operator_states).find(|d| {
                d.kind == s.kind
                    && !all.iter().any(|o| o.name == d.name)
                    && s.value.is_none_or(|v| v.fingerprint == d.value_fingerprint)
            });
            self.problems.push(SchemaProblem {
                state,
                kind: ProblemKind::StateUndeclared,
                summary: format!(
                    "the snapshot has a {} the operator does not declare",
                    s.kind.type_name()
                ),
                changes: Vec::new(),
                hint: Some(match renamed {
                    Some(d) => format!(
                        "if `{}` is its new name, keep the stored name: `#[state(name = \"{}\")]` on that field",
                        d.name, s.name
                    ),
                    None => format!(
                        "declare it again, or restore with the code that wrote it and drop `{}` there",
                        s.name
                    ),
                }),
            });
            return None;
        };
        if d.kind != s.kind {
            self.problems.push(SchemaProblem {
                state,
                kind: ProblemKind::KindChanged,
                summary: format!(
                    "a {} in the snapshot and a {} in the operator",
                    s.kind.type_name(),
                    d.kind.type_name()
                ),
                changes: Vec::new(),
                hint: Some(format!(
                    "declare a new state for the new kind and keep `{}` as a {} until its data is moved",
                    s.name,
                    s.kind.type_name()
                )),
            });
            return None;
        }
        let mut ok = true;
        if let (Some(stored), Some(code)) = (s.user_key, d.user_key_schema)
            && stored.fingerprint != Schema::fingerprint(code)
        {
            let code = code.describe();
            self.problems.push(SchemaProblem {
                state: state.clone(),
                kind: ProblemKind::UserKeyChanged,
                summary: format!(
                    "the map key type changed from `{}` to `{}`",
                    stored.desc.short(),
                    code.short()
                ),
                changes: changed(&stored.desc, &code),
                hint: Some("map keys cannot be migrated: declare a new state".into()),
            });
            ok = false;
        }
        let Some(value) = s.value else {
            return ok.then_some((d, Reading::AsIs));
        };
        let reading = if s.version > d.version {
            self.problems.push(SchemaProblem {
                state,
                kind: ProblemKind::NewerVersion,
                summary: format!(
                    "stored at version {}, newer than the code's version {}",
                    s.version, d.version
                ),
                changes: Vec::new(),
                hint: Some("restore with the build that wrote it".into()),
            });
            return None;
        } else if value.fingerprint == d.value_fingerprint {
            Reading::AsIs
        } else if s.version == d.version {
            let code = d.value_schema.describe();
            self.problems.push(SchemaProblem {
                state,
                kind: ProblemKind::ValueChanged,
                summary: format!(
                    "the value type changed without a new version (stored `{}`, declared `{}`, both version {})",
                    value.desc.short(),
                    d.value_type,
                    d.version
                ),
                changes: changed(&value.desc, &code),
                hint: Some(format!(
                    "keep the old type under another name and declare the migration: `#[state(version = {}, migrate_from(v{} = OldType))]` with `impl From<OldType> for {}`",
                    d.version + 1,
                    d.version,
                    d.value_type
                )),
            });
            return None;
        } else {
            match d.migration(s.version) {
                None => {
                    let code = d.value_schema.describe();
                    self.problems.push(SchemaProblem {
                        state,
                        kind: ProblemKind::MigrationMissing,
                        summary: format!(
                            "stored at version {} (`{}`), and the code (version {}) declares no migration from it",
                            s.version,
                            value.desc.short(),
                            d.version
                        ),
                        changes: changed(&value.desc, &code),
                        hint: Some(format!(
                            "add `v{} = <the old type>` to `migrate_from(...)`",
                            s.version
                        )),
                    });
                    return None;
                }
                Some(m) if m.fingerprint != value.fingerprint => {
                    let declared = m.schema.describe();
                    self.problems.push(SchemaProblem {
                        state,
                        kind: ProblemKind::MigrationMismatch,
                        summary: format!(
                            "`migrate_from(v{} = {})` does not match the stored version {} type `{}`",
                            s.version,
                            m.type_name,
                            s.version,
                            value.desc.short()
                        ),
                        changes: changed(&value.desc, &declared),
                        hint: Some(format!(
                            "declare `v{}` with the type the data was written with: {}",
                            s.version, value.desc
                        )),
                    });
                    return None;
                }
                Some(m) => Reading::Migrate(m),
            }
        };
        ok.then_some((d, reading))
    }
}

macro_rules! primitives {
    ($($t:ty),*) => {$(
        impl StateSchema for $t {
            const SCHEMA: &'static Schema = &Schema::Primitive(stringify!($t));
        }
    )*};
}
primitives!(
    bool, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64, char, String
);

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
