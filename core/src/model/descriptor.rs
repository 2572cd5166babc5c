//! State and operator descriptors: what `#[derive(StatefulOperator)]` knows about each state,
//! as constants.

use std::time::Duration;

use crate::model::error::{CodecError, KeyError};
use crate::model::schema::{Schema, SchemaDesc};

/// The kind of a keyed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateKind {
    /// [`ValueState`](crate::ValueState): one value per key.
    Value,
    /// [`ListState`](crate::ListState): an appendable list per key.
    List,
    /// [`MapState`](crate::MapState): a sorted map per key, each entry stored on its own.
    Map,
    /// [`ReducingState`](crate::ReducingState): one value per key, folded with a function.
    Reducing,
    /// [`AggregatingState`](crate::AggregatingState): one accumulator per key.
    Aggregating,
    /// [`BroadcastState`](crate::BroadcastState): an operator-wide map, the same on every
    /// instance; every instance gets a copy on rescale.
    Broadcast,
    /// [`OperatorListState`](crate::OperatorListState): an operator-wide list per instance,
    /// split over the instances on rescale.
    OperatorList,
    /// [`UnionListState`](crate::UnionListState): an operator-wide list per instance; every
    /// instance gets every instance's elements on restore.
    UnionList,
    /// [`TimerService`](crate::TimerService): the operator's timers, one entry per timer under
    /// its key, with the user key `(domain, timestamp, namespace)` and no value.
    Timers,
}

impl StateKind {
    /// Whether entries of this kind carry a user key (only maps do).
    #[must_use]
    pub fn has_user_key(self) -> bool {
        matches!(
            self,
            StateKind::Map | StateKind::Broadcast | StateKind::Timers
        )
    }

    /// Whether the state is scoped to a key (`false` for operator state: broadcast, operator
    /// list and union list states, which live in the operator and not in a backend).
    #[must_use]
    pub fn is_keyed(self) -> bool {
        !matches!(
            self,
            StateKind::Broadcast | StateKind::OperatorList | StateKind::UnionList
        )
    }

    /// The kind's stable tag in snapshots.
    #[must_use]
    pub fn tag(self) -> u8 {
        match self {
            StateKind::Value => 1,
            StateKind::List => 2,
            StateKind::Map => 3,
            StateKind::Reducing => 4,
            StateKind::Aggregating => 5,
            StateKind::Broadcast => 6,
            StateKind::OperatorList => 7,
            StateKind::UnionList => 8,
            StateKind::Timers => 9,
        }
    }

    /// The kind for a snapshot tag.
    #[must_use]
    pub fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            1 => StateKind::Value,
            2 => StateKind::List,
            3 => StateKind::Map,
            4 => StateKind::Reducing,
            5 => StateKind::Aggregating,
            6 => StateKind::Broadcast,
            7 => StateKind::OperatorList,
            8 => StateKind::UnionList,
            9 => StateKind::Timers,
            _ => return None,
        })
    }

    /// The kind's name as users write it (`ValueState`, ...).
    #[must_use]
    pub fn type_name(self) -> &'static str {
        match self {
            StateKind::Value => "ValueState",
            StateKind::List => "ListState",
            StateKind::Map => "MapState",
            StateKind::Reducing => "ReducingState",
            StateKind::Aggregating => "AggregatingState",
            StateKind::Broadcast => "BroadcastState",
            StateKind::OperatorList => "OperatorListState",
            StateKind::UnionList => "UnionListState",
            StateKind::Timers => "TimerService",
        }
    }
}

/// Time-to-live settings of a state, parsed from `#[state(ttl = "...", ...)]` at compile time.
///
/// Enforced by [`TtlBackend`](crate::data::ttl::TtlBackend); binding an operator with a TTL state to a
/// backend that does not enforce it is an error ([`Error::TtlNotEnforced`](crate::Error)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlConfig {
    /// How long a value lives after its stamp (at least 1 ms).
    pub ttl: Duration,
    /// What refreshes the stamp (`update = "..."`).
    pub update: TtlUpdate,
    /// Whether an expired value that is still stored may be returned (`visibility = "..."`).
    pub visibility: TtlVisibility,
    /// Which clock stamps and expires values (`time = "..."`).
    pub time: TtlTime,
}

impl TtlConfig {
    /// A TTL with Flink's defaults: refreshed on create and write, expired values never
    /// returned, processing time.
    #[must_use]
    pub const fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            update: TtlUpdate::OnCreateAndWrite,
            visibility: TtlVisibility::NeverReturnExpired,
            time: TtlTime::Processing,
        }
    }

    /// The TTL in whole milliseconds (at least 1), as stamps count time.
    #[must_use]
    pub fn ttl_millis(&self) -> i64 {
        i64::try_from(self.ttl.as_millis())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

/// When a value's TTL stamp is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TtlUpdate {
    /// On create and every write (`"on_create_and_write"`, the default).
    OnCreateAndWrite,
    /// Also on every read (`"on_read_and_write"`).
    OnReadAndWrite,
}

/// Whether expired values that are still stored are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TtlVisibility {
    /// An expired value is never returned (`"never_return_expired"`, the default).
    NeverReturnExpired,
    /// An expired value is returned once if it has not been cleaned up yet, and removed by
    /// that read (`"return_expired_if_not_cleaned_up"`).
    ReturnExpiredIfNotCleanedUp,
}

/// Which time a TTL counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TtlTime {
    /// The backend's clock (`"processing"`, the default).
    Processing,
    /// The watermark the runtime advances with
    /// [`TtlBackend::set_watermark`](crate::data::ttl::TtlBackend::set_watermark) (`"event"`).
    Event,
}

/// Everything statewright knows about one state, as a constant generated by the derive.
#[derive(Debug, Clone, Copy)]
pub struct StateDescriptor {
    /// The state's name, unique within its operator (`#[state(name = "...")]` or the field name).
    pub name: &'static str,
    /// The state's kind.
    pub kind: StateKind,
    /// The value type as written in the declaration (element type for lists, accumulator
    /// type for aggregating state).
    pub value_type: &'static str,
    /// The user key type of a map, as written (for a namespaced state, the namespace type
    /// first: `(N, K)` for a map, `N` for the other kinds).
    pub user_key_type: Option<&'static str>,
    /// The namespace type, as written in `#[state(namespace = ...)]`: the state holds one
    /// value (list, map, ...) per key and namespace, and the namespace's canonical encoding
    /// leads every user key.
    pub namespace_type: Option<&'static str>,
    /// Time-to-live, if declared.
    pub ttl: Option<TtlConfig>,
    /// Validates a stored value (for lists: all frames) from outside, such as a snapshot.
    pub validate_value: fn(&[u8]) -> Result<(), CodecError>,
    /// Validates a stored map user key.
    pub validate_user_key: fn(&[u8]) -> Result<(), KeyError>,
    /// The schema of the value type (element type for lists, accumulator type for aggregating
    /// state).
    pub value_schema: &'static Schema,
    /// The fingerprint of [`value_schema`](Self::value_schema).
    pub value_fingerprint: u64,
    /// The schema of a map's (or broadcast state's) user key type.
    pub user_key_schema: Option<&'static Schema>,
    /// The version of the value schema (`#[state(version = N)]`, default 1).
    pub version: u32,
    /// How to read values of earlier versions (`#[state(migrate_from(...))]`), oldest first.
    pub migrations: &'static [Migration],
}

impl StateDescriptor {
    /// Whether the state's entries carry a user key: maps, timers and every namespaced state.
    #[must_use]
    pub fn has_user_key(&self) -> bool {
        self.kind.has_user_key() || self.namespace_type.is_some()
    }

    /// The migration that reads values stored at `version`.
    #[must_use]
    pub fn migration(&self, version: u32) -> Option<&'static Migration> {
        self.migrations.iter().find(|m| m.version == version)
    }
}

/// How values of an earlier version of a state are read: declared with
/// `#[state(version = N, migrate_from(v1 = OldType, ...))]`, generated by the derive.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// The version this migration reads.
    pub version: u32,
    /// The old value type, as declared.
    pub type_name: &'static str,
    /// Its schema, which the stored schema must match.
    pub schema: &'static Schema,
    /// Its fingerprint.
    pub fingerprint: u64,
    /// Decodes one value of this version (validated) and encodes it as the current version
    /// (through every later version's `From`), into the buffer (cleared first).
    pub migrate: fn(&[u8], &mut Vec<u8>) -> Result<(), CodecError>,
}

/// An operator's name, key type and states.
#[derive(Debug, Clone, Copy)]
pub struct OperatorDescriptor {
    /// The operator's name (`#[operator(name = "...")]`), used in paths and errors.
    pub name: &'static str,
    /// The key type, as written in `#[operator(key = ...)]`.
    pub key_type: &'static str,
    /// Number of key groups (`#[operator(max_parallelism = ...)]`, default 128).
    pub max_parallelism: u16,
    /// Validates the canonical bytes of one key.
    pub validate_key: fn(&[u8]) -> Result<(), KeyError>,
    /// The schema of the key type.
    pub key_schema: &'static Schema,
    /// Its fingerprint.
    pub key_fingerprint: u64,
    /// The keyed states, in declaration order.
    pub states: &'static [StateDescriptor],
    /// The operator states (broadcast, operator list and union list states), in declaration
    /// order.
    pub operator_states: &'static [StateDescriptor],
}

impl OperatorDescriptor {
    /// The keyed or operator state named `name`.
    #[must_use]
    pub fn state(&self, name: &str) -> Option<&'static StateDescriptor> {
        self.states
            .iter()
            .chain(self.operator_states)
            .find(|s| s.name == name)
    }
}

/// A user key validator for states without user keys: only the empty key is valid.
///
/// # Errors
///
/// [`KeyError::TrailingBytes`] for a non-empty key.
pub fn no_user_key(bytes: &[u8]) -> Result<(), KeyError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(KeyError::TrailingBytes { count: bytes.len() })
    }
}

/// A description of an operator's states that needs no backend: what
/// [`StatefulOperator::manifest`](crate::StatefulOperator::manifest) returns. Serialises to JSON
/// (for deployment checks, catalogues and reviews of state changes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OperatorManifest {
    /// The operator's name.
    pub operator: String,
    /// The key type, as declared.
    pub key_type: String,
    /// The key type's schema.
    pub key_schema: SchemaDesc,
    /// The key schema's fingerprint.
    pub key_fingerprint: u64,
    /// Number of key groups.
    pub max_parallelism: u16,
    /// The states (keyed states first, then operator states), in declaration order.
    pub states: Vec<StateManifest>,
}

/// One state in an [`OperatorManifest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateManifest {
    /// The state's name.
    pub name: String,
    /// Its kind as users write it (`ValueState`, ...).
    pub kind: String,
    /// The value type (element type for lists, accumulator type for aggregating state).
    pub value_type: String,
    /// The user key type of a map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_type: Option<String>,
    /// The value type's schema.
    pub value_schema: SchemaDesc,
    /// The value schema's fingerprint.
    pub value_fingerprint: u64,
    /// The user key type's schema (maps and broadcast states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key_schema: Option<SchemaDesc>,
    /// The value schema's version.
    pub version: u32,
    /// The versions values can be migrated from, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrates_from: Vec<MigrationManifest>,
    /// Time-to-live, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlManifest>,
}

/// A declared migration in an [`OperatorManifest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigrationManifest {
    /// The version it reads.
    pub version: u32,
    /// The old value type.
    pub value_type: String,
    /// Its schema.
    pub value_schema: SchemaDesc,
}

/// A state's time-to-live in an [`OperatorManifest`], with option values as users write them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TtlManifest {
    /// Milliseconds.
    pub ttl_ms: u64,
    /// `on_create_and_write` or `on_read_and_write`.
    pub update: String,
    /// `never_return_expired` or `return_expired_if_not_cleaned_up`.
    pub visibility: String,
    /// `processing` or `event`.
    pub time: String,
}

impl OperatorManifest {
    /// The manifest of an operator's descriptor.
    #[must_use]
    pub fn of(d: &OperatorDescriptor) -> Self {
        Self {
            operator: d.name.to_owned(),
            key_type: d.key_type.to_owned(),
            key_schema: d.key_schema.describe(),
            key_fingerprint: d.key_fingerprint,
            max_parallelism: d.max_parallelism,
            states: d
                .states
                .iter()
                .chain(d.operator_states)
                .map(|s| StateManifest {
                    name: s.name.to_owned(),
                    kind: s.kind.type_name().to_owned(),
                    value_type: s.value_type.to_owned(),
                    user_key_type: s.user_key_type.map(str::to_owned),
                    value_schema: s.value_schema.describe(),
                    value_fingerprint: s.value_fingerprint,
                    user_key_schema: s.user_key_schema.map(Schema::describe),
                    version: s.version,
                    migrates_from: s
                        .migrations
                        .iter()
                        .map(|m| MigrationManifest {
                            version: m.version,
                            value_type: m.type_name.to_owned(),
                            value_schema: m.schema.describe(),
                        })
                        .collect(),
                    ttl: s.ttl.map(|t| TtlManifest {
                        ttl_ms: t.ttl_millis().unsigned_abs(),
                        update: match t.update {
                            TtlUpdate::OnReadAndWrite => "on_read_and_write",
                            _ => "on_create_and_write",
                        }
                        .to_owned(),
                        visibility: match t.visibility {
                            TtlVisibility::ReturnExpiredIfNotCleanedUp => {
                                "return_expired_if_not_cleaned_up"
                            }
                            _ => "never_return_expired",
                        }
                        .to_owned(),
                        time: match t.time {
                            TtlTime::Event => "event",
                            _ => "processing",
                        }
                        .to_owned(),
                    }),
                })
                .collect(),
        }
    }

    /// The manifest as pretty-printed JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        // Strings, numbers and options only: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
