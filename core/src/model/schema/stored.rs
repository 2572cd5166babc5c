//! Schemas as checkpoints record them, per operator and state.

#![allow(clippy::wildcard_imports)]

use super::*;

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
