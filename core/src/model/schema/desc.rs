//! Described schemas: the form stored in checkpoints and shown to people.

#![allow(clippy::wildcard_imports)]

use super::*;

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

pub(super) fn write_fields(f: &mut fmt::Formatter<'_>, fields: &FieldsDesc) -> fmt::Result {
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
