//! Whether stored state can be read by the code: the compatibility report a restore checks.

#![allow(clippy::wildcard_imports)]

use super::*;

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

pub(super) fn changed(stored: &SchemaDesc, code: &SchemaDesc) -> Vec<SchemaChange> {
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
            let what = if d.namespace_type.is_some() {
                "the user key type (namespace first)"
            } else {
                "the map key type"
            };
            self.problems.push(SchemaProblem {
                state: state.clone(),
                kind: ProblemKind::UserKeyChanged,
                summary: format!(
                    "{what} changed from `{}` to `{}`",
                    stored.desc.short(),
                    code.short()
                ),
                changes: changed(&stored.desc, &code),
                hint: Some(
                    "map keys and namespaces cannot be migrated: declare a new state".into(),
                ),
            });
            ok = false;
        }
        // A namespace added to a state, or taken off it: its stored entries are addressed
        // another way (recorded only with schemas, so only then).
        if s.value.is_some() && s.user_key.is_some() != d.user_key_schema.is_some() {
            let (from, to) = if d.user_key_schema.is_some() {
                ("without a namespace", "with one")
            } else {
                ("with a namespace", "without one")
            };
            self.problems.push(SchemaProblem {
                state: state.clone(),
                kind: ProblemKind::UserKeyChanged,
                summary: format!("stored {from}, declared {to}"),
                changes: Vec::new(),
                hint: Some(
                    "a namespace cannot be added to a state or taken off it: declare a new state"
                        .into(),
                ),
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
