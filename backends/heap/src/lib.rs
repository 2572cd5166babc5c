//! The heap backend: statewright's embedded default.
//!
//! State lives in the process's memory. A value, list, reducing or aggregating state keeps one
//! hash table, keyed by the canonical key (the key-group prefix follows from it); when every
//! key and value of the state has one length (a `u64` key and an `i64` value), the rows hold
//! them inline, so a lookup reads one row in place instead of following pointers. A
//! namespaced value, list, reducing or aggregating state (a window's sum) gives a namespace that
//! many keys write (a window) a table of its own, keyed by the key, and keeps the rows of the
//! other namespaces (sessions) in one table keyed by key and namespace, with an index of each
//! key's namespaces built at the first listing.
//! Map states keep one sorted map per key so that iteration is in key order and a put touches
//! one entry.
//! A timer state is a queue: per time domain and key group, its timers in sorted runs, under a
//! tournament tree of the groups' first timers, so that a timer is stored once and fires by a
//! pop ([`StateBackend::queued_timers`]).
//! Nothing is written to disk except through snapshots and checkpoints. Reads return slices of
//! the stored bytes, so values are read in place.
//!
//! # Examples
//!
//! ```
//! use statewright::prelude::*;
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "clicks", key = u64)]
//! struct Clicks { count: ValueState<u32> }
//!
//! let mut op = Clicks::default().bind(HeapBackend::new())?;
//! op.key(&1)?.count().set(&3)?;
//! assert_eq!(op.backend().entries(), 1);
//! # Ok::<(), statewright::Error>(())
//! ```

#![warn(missing_docs)]

use std::collections::{BTreeSet, HashMap, HashSet};

mod entries;
mod flat;
mod nested;
mod spaced;
mod timers;
use flat::FlatTable;
use nested::NestedTable;
use spaced::SpacedTable;
use timers::TimerTable;

use statewright_core::backend::{
    Change, ChangeVisitor, DetachedState, EntryHint, EntryIter, EntryVisitor, ExpiryHooks,
    NativeFiles, NativeRestore, QueuedTimer, Snapshots, StateBackend, StateId, ValueUpdate,
    count_scanned, read_then_write,
};
use statewright_core::ttl::ExpiryFilter;
use statewright_core::{Error, OperatorDescriptor, Result, StateDescriptor, StateKind};

/// The tables' hasher: fixed-seeded by default (see [`HeapBackend::with_random_seed`]).
type Hasher = foldhash::fast::SeedableRandomState;

#[derive(Debug)]
enum Column {
    /// Value, list, reducing and aggregating states: one value per key, empty user key.
    Flat(FlatTable),
    /// Map states: a sorted map of user keys per key.
    Nested(NestedTable),
    /// Namespaced value, list, reducing and aggregating states: a table per namespace many keys
    /// write, one row per key and namespace for the others.
    Spaced(SpacedTable),
    /// Timer states: per time domain, sorted runs per key group and a tree of the groups'
    /// earliest timers.
    Timers(TimerTable),
}

/// What changed in one column since change tracking started.
#[derive(Debug)]
enum Changes {
    /// The keys whose value changed or was deleted.
    Flat(HashSet<Box<[u8]>, Hasher>),
    /// Per key: whether all its entries were deleted, and the user keys changed since.
    Nested(HashMap<Box<[u8]>, KeyChanges, Hasher>),
}

#[derive(Debug, Default)]
struct KeyChanges {
    deleted: bool,
    user_keys: BTreeSet<Box<[u8]>>,
}

impl Changes {
    fn new(column: &Column, hasher: &Hasher) -> Self {
        match column {
            Column::Flat(_) => Changes::Flat(HashSet::with_hasher(hasher.clone())),
            Column::Nested(_) | Column::Spaced(_) | Column::Timers(_) => {
                Changes::Nested(HashMap::with_hasher(hasher.clone()))
            }
        }
    }

    #[inline]
    fn entry(&mut self, key: &[u8], user_key: &[u8]) {
        match self {
            Changes::Flat(set) => {
                if !set.contains(key) {
                    set.insert(key.into());
                }
            }
            Changes::Nested(map) => {
                let changes = match map.get_mut(key) {
                    Some(c) => c,
                    None => map.entry(key.into()).or_default(),
                };
                if !changes.user_keys.contains(user_key) {
                    changes.user_keys.insert(user_key.into());
                }
            }
        }
    }

    fn whole_key(&mut self, key: &[u8]) {
        match self {
            Changes::Flat(set) => {
                if !set.contains(key) {
                    set.insert(key.into());
                }
            }
            Changes::Nested(map) => {
                let changes = map.entry(key.into()).or_default();
                changes.deleted = true;
                changes.user_keys.clear();
            }
        }
    }
}

#[derive(Debug)]
struct Registered {
    operator: String,
    state: &'static str,
    column: Column,
    /// `Some` while change tracking is on.
    changes: Option<Changes>,
}

impl Registered {
    /// Records a write at `(key, user_key)` while change tracking is on (a user key on a state
    /// without user keys is refused first, so nothing is recorded for it).
    fn record(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        if let Some(changes) = &mut self.changes {
            match &self.column {
                Column::Flat(t) => {
                    if !user_key.is_empty() {
                        return Err(user_key_on_flat(state));
                    }
                    // A change recorded under a key the table refuses would reach the next
                    // incremental checkpoint under the wrong key group.
                    t.checked(key)?;
                }
                Column::Timers(t) => {
                    t.checked(key)?;
                }
                Column::Spaced(t) => {
                    t.checked(key)?;
                }
                Column::Nested(_) => {}
            }
            changes.entry(key, user_key);
        }
        Ok(())
    }
}

/// In-memory keyed state storage.
///
/// With change tracking on ([`Snapshots::track_changes`], which the checkpointer turns on
/// for incremental checkpoints), every write also records its key in a set, so an incremental
/// snapshot copies only what changed.
///
/// Deterministic: its hash tables use a fixed seed, so the same input gives the same table
/// order, the same incremental TTL cleanup and byte-identical checkpoints in every run. A
/// random seed defends a hash table against keys chosen to collide; an operator's keys come
/// from its input, so a job whose input an adversary controls can ask for one with
/// [`with_random_seed`](Self::with_random_seed).
#[derive(Debug)]
pub struct HeapBackend {
    columns: Vec<Registered>,
    tracking: bool,
    hasher: Hasher,
}

impl Default for HeapBackend {
    fn default() -> Self {
        Self {
            columns: Vec::new(),
            tracking: false,
            hasher: Hasher::fixed(),
        }
    }
}

impl HeapBackend {
    /// An empty backend with fixed-seed hashing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backend whose hash tables are seeded randomly per process and table (as
    /// `std`'s `HashMap`): keys crafted to collide cannot slow it down, but table order, and
    /// with it incremental TTL cleanup, differs from run to run (snapshots stay canonical:
    /// they are sorted by key).
    #[must_use]
    pub fn with_random_seed() -> Self {
        Self {
            hasher: Hasher::random(),
            ..Self::default()
        }
    }

    /// Number of stored entries over all states (map entries count one each).
    #[must_use]
    pub fn entries(&self) -> usize {
        self.columns
            .iter()
            .map(|r| match &r.column {
                Column::Flat(t) => t.len(),
                Column::Nested(m) => m.iter().map(|(_, e)| e.len()).sum(),
                Column::Spaced(t) => t.len(),
                Column::Timers(t) => t.len(),
            })
            .sum()
    }

    #[inline]
    fn column(&self, state: StateId) -> Result<&Column> {
        // A match, not `ok_or`: an eagerly built error is dropped on every successful access.
        match self.columns.get(state.0 as usize) {
            Some(r) => Ok(&r.column),
            None => Err(unknown_state(state)),
        }
    }

    #[inline]
    fn registered_mut(&mut self, state: StateId) -> Result<&mut Registered> {
        match self.columns.get_mut(state.0 as usize) {
            Some(r) => Ok(r),
            None => Err(unknown_state(state)),
        }
    }

    /// Whether change tracking is on.
    #[must_use]
    pub fn is_tracking_changes(&self) -> bool {
        self.tracking
    }

    /// Entries recorded as changed since tracking started or the last drain (a changed map
    /// key whose entries were all deleted counts one).
    #[must_use]
    pub fn tracked_changes(&self) -> usize {
        self.columns
            .iter()
            .map(|r| match &r.changes {
                None => 0,
                Some(Changes::Flat(s)) => s.len(),
                Some(Changes::Nested(m)) => m
                    .values()
                    .map(|c| c.user_keys.len() + usize::from(c.deleted))
                    .sum(),
            })
            .sum()
    }

    /// [`StateBackend::put_hinted`] for every column but an untracked value state's.
    #[inline(never)]
    fn put_hinted_other(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let (Column::Spaced(t), None) = (&mut r.column, &r.changes) {
            return t.put_hinted(key, user_key, value, hint);
        }
        self.put_tracked(state, key, user_key, value)
    }

    /// [`StateBackend::put`] for map states and with change tracking on.
    #[inline(never)]
    fn put_tracked(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let Column::Timers(t) = &mut r.column {
            // Checked before it is recorded, then stored.
            if let Some(changes) = &mut r.changes {
                t.check(key, user_key, value)?;
                changes.entry(key, user_key);
            }
            t.insert(key, user_key, value)?;
            return Ok(());
        }
        r.record(state, key, user_key)?;
        match &mut r.column {
            Column::Flat(t) if user_key.is_empty() => t.put(key, value)?,
            Column::Flat(_) => return Err(user_key_on_flat(state)),
            Column::Nested(m) => match m.get_mut(key) {
                Some(entries) => entries.set(user_key, value),
                None => m.entries_mut(key).set(user_key, value),
            },
            Column::Spaced(t) => t.put(key, user_key, value)?,
            // Stored above.
            Column::Timers(_) => {}
        }
        Ok(())
    }
}

#[cold]
fn unknown_state(state: StateId) -> Error {
    Error::UnknownState {
        backend: "heap",
        id: state.0,
    }
}

/// [`StateBackend::get`] in `column`.
#[inline]
fn get_in<'a>(
    column: &'a Column,
    state: StateId,
    key: &[u8],
    user_key: &[u8],
) -> Result<Option<&'a [u8]>> {
    Ok(match column {
        Column::Flat(t) if user_key.is_empty() => t.get(key)?,
        Column::Flat(_) => return Err(user_key_on_flat(state)),
        Column::Nested(m) => m.get(key).and_then(|entries| entries.get(user_key)),
        Column::Spaced(t) => t.get(key, user_key)?,
        Column::Timers(t) => t.contains(key, user_key)?.then_some(&[][..]),
    })
}

/// [`StateBackend::get_hinted`] in every column but a value state's, out of line so that the
/// value state's read stays small: a namespaced state leaves its row's bucket, the others no
/// hint.
#[inline(never)]
fn get_hinted_other<'a>(
    column: &'a Column,
    state: StateId,
    key: &[u8],
    user_key: &[u8],
    hint: &mut EntryHint,
) -> Result<Option<&'a [u8]>> {
    if let Column::Spaced(t) = column {
        return t.get_hinted(key, user_key, hint);
    }
    *hint = EntryHint::NONE;
    get_in(column, state, key, user_key)
}

fn user_key_on_flat(state: StateId) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!(
            "state id {} has no user keys (it is not a map state)",
            state.0
        ),
    }
}

impl StateBackend for HeapBackend {
    fn name(&self) -> &'static str {
        "heap"
    }

    fn register(
        &mut self,
        operator: &OperatorDescriptor,
        state: &StateDescriptor,
    ) -> Result<StateId> {
        if let Some((i, r)) = self
            .columns
            .iter()
            .enumerate()
            .find(|(_, r)| r.operator == operator.name && r.state == state.name)
        {
            let max_parallelism = match &r.column {
                Column::Flat(t) => Some(t.max_parallelism()),
                Column::Timers(t) => Some(t.max_parallelism()),
                Column::Spaced(t) => Some(t.max_parallelism()),
                Column::Nested(_) => None,
            };
            if let Some(max_parallelism) = max_parallelism
                && max_parallelism != operator.max_parallelism
            {
                return Err(Error::Backend {
                    backend: "heap",
                    message: format!(
                        "state `{}.{}` was registered with maximum parallelism {}, not {}",
                        operator.name, state.name, max_parallelism, operator.max_parallelism
                    ),
                });
            }
            return Ok(StateId(i as u32));
        }
        let id = u32::try_from(self.columns.len()).map_err(|_| Error::Backend {
            backend: "heap",
            message: "too many states".into(),
        })?;
        let column = if state.kind == StateKind::Timers {
            Column::Timers(TimerTable::new(operator.max_parallelism))
        } else if state.namespace_type.is_some() && !state.kind.has_user_key() {
            // A list's value grows with every merge, so its rows are never fixed.
            Column::Spaced(SpacedTable::new(
                state.kind != StateKind::List,
                operator.max_parallelism,
                self.hasher.clone(),
            ))
        } else if state.has_user_key() {
            Column::Nested(NestedTable::new(self.hasher.clone()))
        } else {
            // A list's value grows with every merge, so its rows are never fixed.
            Column::Flat(FlatTable::new(
                state.kind != StateKind::List,
                operator.max_parallelism,
                self.hasher.clone(),
            ))
        };
        let changes = self.tracking.then(|| Changes::new(&column, &self.hasher));
        self.columns.push(Registered {
            operator: operator.name.to_owned(),
            state: state.name,
            column,
            changes,
        });
        Ok(StateId(id))
    }

    #[inline]
    fn get(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<&[u8]>> {
        get_in(self.column(state)?, state, key, user_key)
    }

    #[inline(always)]
    fn get_hinted(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        match self.column(state)? {
            Column::Flat(t) if user_key.is_empty() => t.get_hinted(key, hint),
            column => get_hinted_other(column, state, key, user_key, hint),
        }
    }

    #[inline(always)]
    fn put_hinted(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let (Column::Flat(t), None) = (&mut r.column, &r.changes)
            && user_key.is_empty()
        {
            return t.put_hinted(key, value, hint);
        }
        self.put_hinted_other(state, key, user_key, value, hint)
    }

    #[inline]
    fn read_modify_write(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        let r = self.registered_mut(state)?;
        if r.changes.is_none() {
            match &mut r.column {
                Column::Spaced(t) => return t.read_modify_write(key, user_key, value, update),
                Column::Flat(t) if user_key.is_empty() => {
                    return t.read_modify_write(key, value, update);
                }
                _ => {}
            }
        }
        read_then_write(self, state, key, user_key, value, update)
    }

    #[inline]
    fn put(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        let r = self.registered_mut(state)?;
        // The common write (a value state, no change tracking) stays small enough to inline.
        if let (Column::Flat(t), None) = (&mut r.column, &r.changes)
            && user_key.is_empty()
        {
            return t.put(key, value);
        }
        self.put_tracked(state, key, user_key, value)
    }

    fn merge(&mut self, state: StateId, key: &[u8], user_key: &[u8], operand: &[u8]) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let Column::Timers(_) = &r.column {
            return Err(Error::Backend {
                backend: "heap",
                message: format!("state id {} is a timer state: nothing merges", state.0),
            });
        }
        r.record(state, key, user_key)?;
        match &mut r.column {
            Column::Flat(t) if user_key.is_empty() => t.merge(key, operand)?,
            Column::Flat(_) => return Err(user_key_on_flat(state)),
            Column::Nested(m) => m.entries_mut(key).append(user_key, operand),
            Column::Spaced(t) => t.merge(key, user_key, operand)?,
            // Refused above.
            Column::Timers(_) => {}
        }
        Ok(())
    }

    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        let r = self.registered_mut(state)?;
        r.record(state, key, user_key)?;
        match &mut r.column {
            Column::Flat(t) if user_key.is_empty() => {
                t.remove(key)?;
            }
            Column::Flat(_) => return Err(user_key_on_flat(state)),
            Column::Nested(m) => {
                if let Some(entries) = m.get_mut(key) {
                    entries.remove(user_key);
                    if entries.is_empty() {
                        m.remove(key);
                    }
                }
            }
            Column::Spaced(t) => t.remove(key, user_key)?,
            Column::Timers(t) => {
                t.remove(key, user_key)?;
            }
        }
        Ok(())
    }

    fn scan<'a>(&'a self, state: StateId, key: &[u8]) -> Result<EntryIter<'a>> {
        Ok(match self.column(state)? {
            Column::Flat(t) => Box::new(t.get(key)?.into_iter().map(|v| Ok((&[][..], v)))),
            Column::Nested(m) => match m.get(key) {
                Some(entries) => Box::new(entries.iter().map(Ok)),
                None => Box::new(std::iter::empty()),
            },
            Column::Spaced(t) => Box::new(t.scan(key)?),
            Column::Timers(t) => Box::new(t.scan(key).map(|u| Ok((u, &[][..])))),
        })
    }

    fn count(&self, state: StateId, key: &[u8]) -> Result<usize> {
        match self.column(state)? {
            Column::Spaced(t) => t.count(key),
            Column::Nested(m) => Ok(m.get(key).map_or(0, |entries| entries.len())),
            _ => count_scanned(self.scan(state, key)?),
        }
    }

    fn delete_key(&mut self, state: StateId, key: &[u8]) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let Some(changes) = &mut r.changes {
            match &r.column {
                Column::Flat(t) => {
                    t.checked(key)?;
                }
                Column::Timers(t) => {
                    t.checked(key)?;
                }
                Column::Spaced(t) => {
                    t.checked(key)?;
                }
                Column::Nested(_) => {}
            }
            changes.whole_key(key);
        }
        match &mut r.column {
            Column::Flat(t) => {
                t.remove(key)?;
            }
            Column::Nested(m) => m.remove(key),
            Column::Spaced(t) => t.remove_key(key)?,
            Column::Timers(t) => t.remove_key(key),
        }
        Ok(())
    }

    fn for_each_entry(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        match self.column(state)? {
            Column::Flat(t) => t.for_each(|k, v| visit(k, &[], v))?,
            Column::Nested(m) => {
                for (k, entries) in m.iter() {
                    for (u, v) in entries {
                        visit(k, u, v)?;
                    }
                }
            }
            Column::Spaced(t) => t.for_each(|k, n, v| visit(k, n, v))?,
            Column::Timers(t) => t.for_each(|k, u| visit(k, u, &[]))?,
        }
        Ok(())
    }

    fn clear_state(&mut self, state: StateId) -> Result<()> {
        let r = self.registered_mut(state)?;
        if let Some(changes) = &mut r.changes {
            match &r.column {
                Column::Flat(t) => t.for_each(|k, _| {
                    changes.whole_key(k);
                    Ok(())
                })?,
                Column::Nested(m) => m.iter().for_each(|(k, _)| changes.whole_key(k)),
                Column::Spaced(t) => t.for_each(|k, _, _| {
                    changes.whole_key(k);
                    Ok(())
                })?,
                Column::Timers(t) => t.for_each(|k, _| {
                    changes.whole_key(k);
                    Ok(())
                })?,
            }
        }
        match &mut r.column {
            Column::Flat(t) => t.clear(),
            Column::Nested(m) => m.clear(),
            Column::Spaced(t) => t.clear(),
            Column::Timers(t) => t.clear(),
        }
        Ok(())
    }

    fn release_reads(&mut self) {
        // Reads borrow the tables themselves: nothing to release.
    }

    fn stamps_ttl(&self, state: StateId) -> bool {
        // Values are stored as written; TTL state is bound through `TtlBackend`.
        let _ = state;
        false
    }

    fn watermark(&self) -> Option<i64> {
        // Event time is kept by the operator instance and by a TTL wrapper, not here.
        None
    }

    fn set_watermark(&mut self, millis: i64) {
        let _ = millis;
    }

    fn queued_timers(&self, state: StateId, domain: u8) -> Result<Option<usize>> {
        Ok(match self.column(state)? {
            Column::Timers(t) => Some(t.len_of(domain)),
            _ => None,
        })
    }

    #[inline]
    fn earliest_timer(&self, state: StateId, domain: u8) -> Result<Option<QueuedTimer<'_>>> {
        let Column::Timers(t) = self.column(state)? else {
            return Ok(None);
        };
        Ok(t.earliest(domain).map(|(g, row)| QueuedTimer {
            key_group: g,
            timestamp: row.timestamp(),
            key: row.key(),
            namespace: row.namespace(),
        }))
    }

    #[inline]
    fn pop_earliest_timer(&mut self, state: StateId, domain: u8) -> Result<bool> {
        let r = self.registered_mut(state)?;
        let Column::Timers(t) = &mut r.column else {
            return Ok(false);
        };
        let changes = &mut r.changes;
        Ok(t.pop_earliest(domain, |g, row| {
            if let Some(changes) = changes {
                let mut key = Vec::with_capacity(2 + row.key().len());
                key.extend_from_slice(&g.to_be_bytes());
                key.extend_from_slice(row.key());
                changes.entry(&key, row.user_key());
            }
        }))
    }
}

impl Snapshots for HeapBackend {
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        // Values are stored as written: a TTL wrapper above adds and reads the stamps.
        self.for_each_entry(state, visit)
    }

    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.put(state, key, user_key, value)
    }

    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        // The heap has no copy-on-write view: a snapshot copies its entries out in the
        // synchronous step.
        Ok(None)
    }

    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        // No files of its own: heap checkpoints are canonical.
        Ok(None)
    }

    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        let _ = restore;
        Ok(false)
    }

    fn track_changes(&mut self, on: bool) -> bool {
        self.tracking = on;
        for r in &mut self.columns {
            r.changes = on.then(|| Changes::new(&r.column, &self.hasher));
        }
        true
    }

    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        let hasher = self.hasher.clone();
        let r = self.registered_mut(state)?;
        let Some(changes) = &mut r.changes else {
            return Err(Error::Backend {
                backend: "heap",
                message: "change tracking is off, so there are no changes to take".into(),
            });
        };
        match (
            std::mem::replace(changes, Changes::new(&r.column, &hasher)),
            &r.column,
        ) {
            (Changes::Flat(keys), Column::Flat(t)) => {
                for key in keys {
                    match t.get(&key)? {
                        Some(v) => visit(&key, &[], Change::Put(v))?,
                        None => visit(&key, &[], Change::Delete)?,
                    }
                }
            }
            (Changes::Nested(keys), Column::Timers(t)) => {
                for (key, changed) in keys {
                    if changed.deleted {
                        visit(&key, &[], Change::DeleteKey)?;
                        for u in t.scan(&key) {
                            visit(&key, u, Change::Put(&[]))?;
                        }
                        continue;
                    }
                    for u in changed.user_keys {
                        if t.contains(&key, &u)? {
                            visit(&key, &u, Change::Put(&[]))?;
                        } else {
                            visit(&key, &u, Change::Delete)?;
                        }
                    }
                }
            }
            (Changes::Nested(keys), Column::Spaced(t)) => {
                for (key, changed) in keys {
                    if changed.deleted {
                        visit(&key, &[], Change::DeleteKey)?;
                        for entry in t.scan(&key)? {
                            let (n, v) = entry?;
                            visit(&key, n, Change::Put(v))?;
                        }
                        continue;
                    }
                    for n in changed.user_keys {
                        match t.get(&key, &n)? {
                            Some(v) => visit(&key, &n, Change::Put(v))?,
                            None => visit(&key, &n, Change::Delete)?,
                        }
                    }
                }
            }
            (Changes::Nested(keys), Column::Nested(m)) => {
                for (key, changed) in keys {
                    let entries = m.get(&key);
                    if changed.deleted {
                        visit(&key, &[], Change::DeleteKey)?;
                        for (u, v) in entries.into_iter().flatten() {
                            visit(&key, u, Change::Put(v))?;
                        }
                        continue;
                    }
                    for u in changed.user_keys {
                        match entries.and_then(|e| e.get(&u)) {
                            Some(v) => visit(&key, &u, Change::Put(v))?,
                            None => visit(&key, &u, Change::Delete)?,
                        }
                    }
                }
            }
            // `Changes::new` follows the column's shape.
            _ => {}
        }
        Ok(())
    }
}

impl ExpiryHooks for HeapBackend {
    fn install_expiry_filter(&mut self, state: StateId, filter: ExpiryFilter) -> Result<bool> {
        // No background work to filter in: expired entries go in steps (`visit_some`).
        let _ = (state, filter);
        Ok(false)
    }

    fn visit_some(
        &self,
        state: StateId,
        cursor: &mut u64,
        limit: usize,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<bool> {
        match self.column(state)? {
            Column::Flat(t) => t.visit_some(cursor, limit, |k, v| visit(k, &[], v))?,
            Column::Nested(m) => m.visit_some(cursor, limit, |k, entries| {
                for (u, v) in entries {
                    visit(k, u, v)?;
                }
                Ok(())
            })?,
            Column::Spaced(t) => t.visit_some(cursor, limit, |k, n, v| visit(k, n, v))?,
            Column::Timers(t) => t.visit_some(cursor, limit, |k, u| visit(k, u, &[]))?,
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use statewright_core::conformance::{OPERATOR, TTL_VALUE, VALUE, key};

    #[test]
    fn a_hinted_write_is_tracked_for_incremental_snapshots() {
        let mut b = HeapBackend::new();
        let state = b.register(&OPERATOR, &VALUE).unwrap();
        let (k, other) = (key(&1u64.to_be_bytes()), key(&2u64.to_be_bytes()));
        b.put(state, &k, &[], &1u64.to_le_bytes()).unwrap();
        b.put(state, &other, &[], &1u64.to_le_bytes()).unwrap();
        assert!(b.track_changes(true));
        let mut hint = EntryHint::NONE;
        assert!(b.get_hinted(state, &k, &[], &mut hint).unwrap().is_some());
        assert_ne!(hint, EntryHint::NONE, "a fixed-row read leaves its bucket");
        b.put_hinted(state, &k, &[], &2u64.to_le_bytes(), hint)
            .unwrap();
        let mut changed = Vec::new();
        b.drain_changes(state, &mut |key, _, change| {
            changed.push((key.to_vec(), format!("{change:?}")));
            Ok(())
        })
        .unwrap();
        let put = format!("{:?}", Change::Put(&2u64.to_le_bytes()));
        assert_eq!(changed, vec![(k, put)]);
    }

    #[test]
    fn namespaced_writes_are_tracked_per_namespace() {
        use statewright_core::conformance::NS_VALUE;
        let mut b = HeapBackend::new();
        let state = b.register(&OPERATOR, &NS_VALUE).unwrap();
        let (k, j) = (key(&1u64.to_be_bytes()), key(&2u64.to_be_bytes()));
        b.put(state, &k, b"w1", b"a").unwrap();
        b.put(state, &k, b"w2", b"b").unwrap();
        b.put(state, &j, b"w1", b"c").unwrap();
        assert!(b.track_changes(true));
        let mut hint = EntryHint::NONE;
        assert!(b.get_hinted(state, &k, b"w1", &mut hint).unwrap().is_some());
        b.put_hinted(state, &k, b"w1", b"A", hint).unwrap();
        b.delete(state, &k, b"w2").unwrap();
        b.delete_key(state, &j).unwrap();
        b.put(state, &j, b"w3", b"d").unwrap();
        let mut changed = Vec::new();
        b.drain_changes(state, &mut |key, ns, change| {
            changed.push((key.to_vec(), ns.to_vec(), format!("{change:?}")));
            Ok(())
        })
        .unwrap();
        changed.sort();
        let put = |v: &[u8]| format!("{:?}", Change::Put(v));
        let mut want = vec![
            (k.clone(), b"w1".to_vec(), put(b"A")),
            (k.clone(), b"w2".to_vec(), format!("{:?}", Change::Delete)),
            (j.clone(), Vec::new(), format!("{:?}", Change::DeleteKey)),
            (j.clone(), b"w3".to_vec(), put(b"d")),
        ];
        want.sort();
        assert_eq!(changed, want);
        assert_eq!(b.entries(), 2);
    }

    #[test]
    fn a_key_the_table_refuses_records_no_change() {
        let mut b = HeapBackend::new();
        let state = b.register(&OPERATOR, &VALUE).unwrap();
        assert!(b.track_changes(true));
        let mut k = key(&1u64.to_be_bytes());
        k[1] = k[1].wrapping_add(1);
        assert!(b.put(state, &k, &[], &1u64.to_le_bytes()).is_err());
        assert!(b.delete(state, &k, &[]).is_err());
        assert!(b.delete_key(state, &k).is_err());
        assert_eq!((b.tracked_changes(), b.entries()), (0, 0));
    }

    #[test]
    fn a_state_registered_again_with_another_maximum_parallelism_is_an_error() {
        let mut b = HeapBackend::new();
        let state = b.register(&OPERATOR, &VALUE).unwrap();
        assert_eq!(b.register(&OPERATOR, &VALUE).unwrap(), state);
        let wider = OperatorDescriptor {
            max_parallelism: OPERATOR.max_parallelism * 2,
            ..OPERATOR
        };
        let err = b.register(&wider, &VALUE).unwrap_err();
        assert!(err.to_string().contains("maximum parallelism"), "{err}");
    }

    #[test]
    fn a_read_through_the_ttl_wrapper_leaves_the_heaps_hint_for_the_write() {
        let mut b = statewright_core::ttl::TtlBackend::new(HeapBackend::new());
        let state = b.register(&OPERATOR, &TTL_VALUE).unwrap();
        let (k, other) = (key(&1u64.to_be_bytes()), key(&2u64.to_be_bytes()));
        b.put(state, &k, &[], &1u64.to_le_bytes()).unwrap();
        b.put(state, &other, &[], &7u64.to_le_bytes()).unwrap();
        let mut hint = EntryHint::NONE;
        let read = b.get_hinted(state, &k, &[], &mut hint).unwrap();
        assert_eq!(
            read,
            Some(&1u64.to_le_bytes()[..]),
            "the value without its stamp"
        );
        assert_ne!(
            hint,
            EntryHint::NONE,
            "the stamped row's bucket is passed on"
        );
        b.put_hinted(state, &k, &[], &2u64.to_le_bytes(), hint)
            .unwrap();
        assert_eq!(
            b.get(state, &k, &[]).unwrap(),
            Some(&2u64.to_le_bytes()[..])
        );
        assert_eq!(
            b.get(state, &other, &[]).unwrap(),
            Some(&7u64.to_le_bytes()[..])
        );
    }
}
