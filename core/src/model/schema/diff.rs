//! The difference between two described schemas.

#![allow(clippy::wildcard_imports)]

use super::*;

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

pub(super) fn join(path: &str, part: &str) -> String {
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

pub(super) fn diff_at(path: &str, old: &SchemaDesc, new: &SchemaDesc, out: &mut Vec<SchemaChange>) {
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
pub(super) fn reordered(old: Vec<&str>, new: Vec<&str>) -> bool {
    let common = |x: &[&str], y: &[&str]| -> Vec<String> {
        x.iter()
            .filter(|n| y.contains(n))
            .map(|n| (*n).to_owned())
            .collect()
    };
    common(&old, &new) != common(&new, &old)
}

pub(super) fn diff_fields(
    path: &str,
    old: &FieldsDesc,
    new: &FieldsDesc,
    out: &mut Vec<SchemaChange>,
) {
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
