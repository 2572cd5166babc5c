//! The table of a namespaced value, list, reducing or aggregating state: one row per key and
//! namespace (a window of a key), as Flink's heap backend keys its state map by
//! `(key, namespace)`.
//!
//! Rows live in one of two places. A namespace that many keys write (a tumbling or sliding
//! window, which every key of the stream fills while it is open) gets a table of its own,
//! keyed by the key alone as a value state's table is ([`Wide`]). Every other namespace (a
//! session window, which belongs to one key) keeps its rows in one shared table keyed by the
//! pair ([`RowKey::build`]; fixed rows when every key, namespace and value has one length: a
//! `u64` key, a [`TimeWindow`] and an `i64` sum make 32 bytes, the row key's last byte, the
//! key's length, being kept once for the table).
//!
//! A stream's records come roughly in time order, so the records of one window come
//! together. In one shared table, the rows of the open window were spread over all of it, and
//! at a million keys every new row was a cache miss and a page-table walk in a table of
//! hundreds of megabytes; in a table of its own, a window's rows lie together in a table of
//! its size, which the processor's caches hold while the window is filled, and the window's
//! cleanup frees it in one piece. A namespace moves to a table of its own once it takes a large
//! share of the shared table's new rows ([`Counts`]: more than one in nine, as the window that
//! time-ordered records fill does, or each of up to eight overlapping sliding windows); its rows
//! in the shared table move with it (a read of every shared row: up to [`FREE_MOVES`] shared
//! rows at once, beyond that once an eighth as many rows are new since the last move), and the
//! table is dropped when its last row goes. Session windows, one key each, and windows open by
//! the dozen or the thousand, where no namespace takes such a share, stay in the shared table.
//! Measured in `bench/ANALYSIS.md`.
//!
//! Listing a key's namespaces ([`scan`](SpacedTable::scan), and with it
//! `<field>_namespaces().list()`, merging session windows, removing every namespace of a key)
//! reads an index of each key's namespaces. A table builds that index the first time a listing
//! asks for it, from its rows, and keeps it up to date from then on; a job that never lists
//! (tumbling and sliding windows, whose timers clear each window by its namespace) never pays
//! for it.
//!
//! [`TimeWindow`]: statewright_core::window::TimeWindow

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use statewright_core::backend::ValueUpdate;
use statewright_core::keygroup::key_group;
use statewright_core::{EntryHint, Result};

use crate::flat::{FlatTable, RowKey, canonical_of, split_spaced};
use crate::nested::NestedTable;

type Hasher = foldhash::fast::SeedableRandomState;

/// The count ([`Counts`]) at which a namespace gets a table of its own.
#[cfg(not(test))]
const PROMOTE_AT: u32 = 64;
/// Small under test, so that the property test moves namespaces to tables of their own and
/// back.
#[cfg(test)]
const PROMOTE_AT: u32 = 3;

/// Up to this many shared rows, a move reads them without waiting for new ones
/// ([`SpacedTable::since_move`]): windows that open together (a sliding window's overlaps) move
/// one after the other while the shared table still holds only their first rows.
#[cfg(not(test))]
const FREE_MOVES: usize = 1 << 16;
/// Small under test, so that a test reaches the wait with a few thousand rows.
#[cfg(test)]
const FREE_MOVES: usize = 1 << 10;

/// The most new rows [`Counts`] leaves uncounted between two counts.
#[cfg(not(test))]
const MAX_GAP: u32 = 63;
/// Small under test, so that a few rows of a new window are counted after many sessions.
#[cfg(test)]
const MAX_GAP: u32 = 3;

/// The slots of [`Counts`].
const COUNTED: usize = 8;

/// No place in [`SpacedTable::wide`].
const NOWHERE: usize = usize::MAX;

/// Where a cursor of [`SpacedTable::visit_some`] keeps its table (its bucket below).
const PART_SHIFT: u32 = 40;

/// The rows of a namespaced state and, once something listed them, an index of each key's
/// namespaces.
#[derive(Debug)]
pub(crate) struct SpacedTable {
    /// The rows of every namespace without a table of its own, keyed by key and namespace.
    rows: FlatTable,
    /// The namespaces with a table of their own.
    wide: Vec<Wide>,
    /// Each namespace of `wide` and its place there.
    wide_at: HashMap<Box<[u8]>, usize, Hasher>,
    /// The place in `wide` of the last namespace found there ([`NOWHERE`]: none): the records
    /// of a window come together, so most accesses find their namespace here without a lookup.
    last: AtomicUsize,
    /// New rows in `rows` per recent namespace.
    counts: Counts,
    /// New rows in `rows` since a namespace last moved out of it: a move reads every row of
    /// `rows`, and once `rows` holds more than [`FREE_MOVES`] it waits until there have been an
    /// eighth as many new ones, so that its cost stays a few row visits per new row however
    /// large `rows` grows.
    since_move: usize,
    /// Per canonical key (without its prefix), its namespaces, as user keys with empty values:
    /// built at the first listing, then kept with every write.
    index: OnceLock<NestedTable>,
    hasher: Hasher,
    fixed_rows: bool,
}

/// A namespace with a table of its own: its rows, keyed by the key alone.
#[derive(Debug)]
struct Wide {
    namespace: Box<[u8]>,
    rows: FlatTable,
}

/// The namespaces that take a large share of the shared table's new rows, found as Misra and
/// Gries find frequent items: [`COUNTED`] namespaces (by a hash) with a count each. A new row of
/// one of them counts it up; a new row of another takes a slot whose count is down to zero or,
/// with none, counts every slot down. A namespace that takes more than one new row in
/// `COUNTED + 1` keeps counting up; when many namespaces take new rows at once (session
/// windows, windows open by the dozen), every count stays near zero.
///
/// While no namespace takes such a share, counting every new row is wasted: each count that
/// finds no slot of its own doubles the number of new rows left uncounted before the next one
/// (up to [`MAX_GAP`]), and a count that finds its namespace counts every row again.
#[derive(Debug)]
struct Counts {
    slots: Box<CountSlots>,
}

/// The namespaces' hashes and their counts, and the gap between counted rows.
#[derive(Debug, Default)]
struct CountSlots {
    hashes: [u32; COUNTED],
    counts: [u32; COUNTED],
    /// New rows to leave uncounted before the next count.
    skip: u32,
    /// `skip` after each count.
    gap: u32,
}

impl Counts {
    fn new() -> Self {
        Self {
            slots: Box::default(),
        }
    }

    /// Counts a new row of the namespace of hash `h`; whether it has now counted up to
    /// [`PROMOTE_AT`] (its count starts again).
    #[inline]
    fn count(&mut self, h: u32) -> bool {
        let CountSlots {
            hashes,
            counts,
            skip,
            gap,
        } = &mut *self.slots;
        let hit = (0..COUNTED).find(|&i| hashes[i] == h && counts[i] > 0);
        if let Some(i) = hit {
            *gap = 0;
            counts[i] += 1;
            if counts[i] >= PROMOTE_AT {
                counts[i] = 0;
                return true;
            }
        } else if let Some(i) = (0..COUNTED).find(|&i| counts[i] == 0) {
            (hashes[i], counts[i]) = (h, 1);
        } else {
            for c in counts.iter_mut() {
                *c -= 1;
            }
            *gap = (*gap * 2 + 1).min(MAX_GAP);
        }
        *skip = *gap;
        false
    }

    /// Whether the next new row goes uncounted ([`Counts`]' gap).
    #[inline(always)]
    fn skips(&mut self) -> bool {
        let skip = &mut self.slots.skip;
        if *skip > 0 {
            *skip -= 1;
            return true;
        }
        false
    }
}

/// A hash of a namespace for [`Counts`]: its first and last 8 bytes (or all of a shorter one)
/// and its length, mixed. Two namespaces that collide count together, which at worst gives one
/// of them a table of its own early.
#[inline(always)]
fn namespace_hash(namespace: &[u8]) -> u32 {
    let fold = |b: &[u8]| b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let (first, last) = match (namespace.first_chunk::<8>(), namespace.last_chunk::<8>()) {
        (Some(f), Some(l)) => (u64::from_le_bytes(*f), u64::from_le_bytes(*l)),
        _ => (fold(namespace), 0),
    };
    let x =
        (first ^ last.rotate_left(29) ^ namespace.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (x >> 32) as u32
}

impl SpacedTable {
    pub(crate) fn new(fixed_rows: bool, max_parallelism: u16, hasher: Hasher) -> Self {
        Self {
            rows: FlatTable::new(fixed_rows, max_parallelism, hasher.clone()).namespaced(),
            wide: Vec::new(),
            wide_at: HashMap::with_hasher(hasher.clone()),
            last: AtomicUsize::new(NOWHERE),
            counts: Counts::new(),
            since_move: 0,
            index: OnceLock::new(),
            hasher,
            fixed_rows,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len() + self.wide.iter().map(|w| w.rows.len()).sum::<usize>()
    }

    pub(crate) fn max_parallelism(&self) -> u16 {
        self.rows.max_parallelism()
    }

    /// The canonical key of `key`, when its prefix is the key group of its canonical bytes.
    pub(crate) fn checked<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        crate::flat::checked_key(key, self.rows.max_parallelism()).map(|(_, canonical)| canonical)
    }

    /// The place in `wide` of `namespace`'s table, if it has one.
    #[inline(always)]
    fn wide_of(&self, namespace: &[u8]) -> Option<usize> {
        let last = self.last.load(Ordering::Relaxed);
        if let Some(w) = self.wide.get(last)
            && *w.namespace == *namespace
        {
            return Some(last);
        }
        if self.wide.is_empty() {
            return None;
        }
        self.wide_of_listed(namespace)
    }

    /// [`wide_of`](Self::wide_of) for a namespace other than the last one, out of line.
    #[inline(never)]
    fn wide_of_listed(&self, namespace: &[u8]) -> Option<usize> {
        let at = *self.wide_at.get(namespace)?;
        self.last.store(at, Ordering::Relaxed);
        Some(at)
    }

    /// The table of `namespace`'s own, if it has one.
    #[inline(always)]
    fn wide_mut(&mut self, namespace: &[u8]) -> Option<&mut FlatTable> {
        let at = self.wide_of(namespace)?;
        self.wide.get_mut(at).map(|w| &mut w.rows)
    }

    #[inline(never)]
    pub(crate) fn get(&self, key: &[u8], namespace: &[u8]) -> Result<Option<&[u8]>> {
        match self.wide_of(namespace).and_then(|at| self.wide.get(at)) {
            Some(w) => w.rows.get(key),
            None => self.rows.get(RowKey::new().build(key, namespace)?),
        }
    }

    #[inline(never)]
    pub(crate) fn get_hinted(
        &self,
        key: &[u8],
        namespace: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        match self.wide_of(namespace).and_then(|at| self.wide.get(at)) {
            Some(w) => w.rows.get_hinted(key, hint),
            None => self
                .rows
                .get_hinted(RowKey::new().build(key, namespace)?, hint),
        }
    }

    #[inline(never)]
    pub(crate) fn put_hinted(
        &mut self,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        if let Some(rows) = self.wide_mut(namespace) {
            rows.put_hinted(key, value, hint)?;
        } else {
            let before = self.rows.len();
            self.rows
                .put_hinted(RowKey::new().build(key, namespace)?, value, hint)?;
            self.counted(before, namespace);
        }
        self.indexed(key, namespace);
        Ok(())
    }

    /// [`FlatTable::read_modify_write`] of `(key, namespace)`.
    #[inline(never)]
    pub(crate) fn read_modify_write(
        &mut self,
        key: &[u8],
        namespace: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        if let Some(rows) = self.wide_mut(namespace) {
            rows.read_modify_write(key, value, update)?;
        } else {
            let before = self.rows.len();
            self.rows
                .read_modify_write_spaced(key, namespace, value, update)?;
            self.counted(before, namespace);
        }
        self.indexed(key, namespace);
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn put(&mut self, key: &[u8], namespace: &[u8], value: &[u8]) -> Result<()> {
        if let Some(rows) = self.wide_mut(namespace) {
            rows.put(key, value)?;
        } else {
            let before = self.rows.len();
            self.rows.put(RowKey::new().build(key, namespace)?, value)?;
            self.counted(before, namespace);
        }
        self.indexed(key, namespace);
        Ok(())
    }

    pub(crate) fn merge(&mut self, key: &[u8], namespace: &[u8], operand: &[u8]) -> Result<()> {
        if let Some(rows) = self.wide_mut(namespace) {
            rows.merge(key, operand)?;
        } else {
            let before = self.rows.len();
            self.rows
                .merge(RowKey::new().build(key, namespace)?, operand)?;
            self.counted(before, namespace);
        }
        self.indexed(key, namespace);
        Ok(())
    }

    /// Counts a new row of `namespace` in the shared table (when it has more rows than
    /// `before`), and gives the namespace a table of its own when it has taken enough.
    ///
    /// The write that called it has succeeded, and where a namespace's rows are is not part of
    /// what the state holds: a move that fails (it cannot for rows the shared table accepted,
    /// whose keys it checked) leaves the namespace in the shared table, unchanged, and the
    /// write is not reported as failed.
    #[inline(always)]
    fn counted(&mut self, before: usize, namespace: &[u8]) {
        let shared = self.rows.len();
        if shared > before {
            self.since_move += 1;
            if !self.counts.skips()
                && self.counts.count(namespace_hash(namespace))
                && (shared <= FREE_MOVES || self.since_move.saturating_mul(8) >= shared)
            {
                self.since_move = 0;
                let _unchanged_on_failure = self.promote(namespace);
            }
        }
    }

    /// Moves `namespace`'s rows from the shared table to a table of its own. Nothing changes
    /// when it fails.
    #[cold]
    #[inline(never)]
    fn promote(&mut self, namespace: &[u8]) -> Result<()> {
        let mp = self.rows.max_parallelism();
        let mut own = FlatTable::new(self.fixed_rows, mp, self.hasher.clone());
        let mut full = Vec::new();
        let mut failed = None;
        self.rows.for_each_row(|row_key, value| {
            if failed.is_none()
                && let Some((canonical, ns)) = split_spaced(row_key)
                && ns == namespace
            {
                full.clear();
                full.extend_from_slice(&key_group(canonical, mp).to_be_bytes());
                full.extend_from_slice(canonical);
                if let Err(e) = own.put(&full, value) {
                    failed = Some(e);
                }
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        self.rows
            .retain_rows(|row_key| split_spaced(row_key).is_none_or(|(_, ns)| ns != namespace));
        let namespace: Box<[u8]> = namespace.into();
        self.wide_at.insert(namespace.clone(), self.wide.len());
        self.last.store(self.wide.len(), Ordering::Relaxed);
        self.wide.push(Wide {
            namespace,
            rows: own,
        });
        Ok(())
    }

    /// Removes the row of `(key, namespace)`, without the index; whether there was one.
    fn remove_row(&mut self, key: &[u8], namespace: &[u8]) -> Result<bool> {
        let Some(at) = self.wide_of(namespace) else {
            return self.rows.remove(RowKey::new().build(key, namespace)?);
        };
        let Some(w) = self.wide.get_mut(at) else {
            return Ok(false);
        };
        let removed = w.rows.remove(key)?;
        if w.rows.len() == 0 {
            // The namespace's last row: its table goes, and the last one takes its place.
            let gone = self.wide.swap_remove(at);
            self.wide_at.remove(&gone.namespace);
            if let Some(moved) = self.wide.get(at)
                && let Some(place) = self.wide_at.get_mut(&moved.namespace)
            {
                *place = at;
            }
            self.last.store(NOWHERE, Ordering::Relaxed);
        }
        Ok(removed)
    }

    pub(crate) fn remove(&mut self, key: &[u8], namespace: &[u8]) -> Result<()> {
        let removed = self.remove_row(key, namespace)?;
        if removed
            && let (Some(index), Some(canonical)) = (self.index.get_mut(), canonical_of(key))
            && let Some(entries) = index.get_mut(canonical)
        {
            entries.remove(namespace);
            if entries.is_empty() {
                index.remove(canonical);
            }
        }
        if self.len() == 0 {
            self.index = OnceLock::new();
        }
        Ok(())
    }

    /// Notes a stored `(key, namespace)` in the index, when there is one.
    #[inline(always)]
    fn indexed(&mut self, key: &[u8], namespace: &[u8]) {
        if self.index.get().is_some() {
            self.index_entry(key, namespace);
        }
    }

    /// [`indexed`](Self::indexed) for a table with an index, out of line.
    #[inline(never)]
    fn index_entry(&mut self, key: &[u8], namespace: &[u8]) {
        if let (Some(index), Some(canonical)) = (self.index.get_mut(), canonical_of(key)) {
            match index.get_mut(canonical) {
                Some(entries) => {
                    if entries.get(namespace).is_none() {
                        entries.set(namespace, &[]);
                    }
                }
                None => index.entries_mut(canonical).set(namespace, &[]),
            }
        }
    }

    /// The index of each key's namespaces, built from the rows the first time.
    fn index(&self) -> &NestedTable {
        self.index.get_or_init(|| {
            let mut index = NestedTable::new(self.hasher.clone());
            self.rows.for_each_row(|row_key, _| {
                if let Some((key, namespace)) = split_spaced(row_key) {
                    index.entries_mut(key).set(namespace, &[]);
                }
            });
            for w in &self.wide {
                w.rows.for_each_row(|key, _| {
                    index.entries_mut(key).set(&w.namespace, &[]);
                });
            }
            index
        })
    }

    /// The `(namespace, value)` pairs of `key`, in namespace byte order.
    pub(crate) fn scan<'a>(
        &'a self,
        key: &[u8],
    ) -> Result<impl Iterator<Item = Result<(&'a [u8], &'a [u8])>> + 'a> {
        let canonical = self.checked(key)?;
        let full = key.to_vec();
        let namespaces = self.index().get(canonical).into_iter().flatten();
        Ok(namespaces.filter_map(move |(namespace, _)| {
            match self.get(&full, namespace) {
                Ok(Some(value)) => Some(Ok((namespace, value))),
                // The index follows the rows: a namespace without a row is not listed.
                Ok(None) => None,
                Err(e) => Some(Err(e)),
            }
        }))
    }

    /// The number of namespaces `key` holds state in.
    pub(crate) fn count(&self, key: &[u8]) -> Result<usize> {
        let canonical = self.checked(key)?;
        Ok(self
            .index()
            .get(canonical)
            .map_or(0, |entries| entries.len()))
    }

    /// Removes every namespace of `key`.
    pub(crate) fn remove_key(&mut self, key: &[u8]) -> Result<()> {
        let canonical = self.checked(key)?;
        self.index();
        let Some(index) = self.index.get_mut() else {
            return Ok(());
        };
        let Some(entries) = index.get(canonical) else {
            return Ok(());
        };
        let namespaces: Vec<Vec<u8>> = entries.iter().map(|(n, _)| n.to_vec()).collect();
        index.remove(canonical);
        for namespace in namespaces {
            self.remove_row(key, &namespace)?;
        }
        if self.len() == 0 {
            self.index = OnceLock::new();
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.wide.clear();
        self.wide_at.clear();
        self.last.store(NOWHERE, Ordering::Relaxed);
        self.counts = Counts::new();
        self.since_move = 0;
        self.index = OnceLock::new();
    }

    /// Calls `visit(key, namespace, value)` for every entry: the shared table's rows, then
    /// each namespace's own; the key has its key-group prefix.
    pub(crate) fn for_each(
        &self,
        mut visit: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut key = Vec::new();
        self.rows.for_each(|row_key, value| {
            let (full, namespace) = split_row(&mut key, row_key);
            visit(full, namespace, value)
        })?;
        for w in &self.wide {
            w.rows
                .for_each(|key, value| visit(key, &w.namespace, value))?;
        }
        Ok(())
    }

    /// [`FlatTable::visit_some`] over the shared table and then each namespace's own, with
    /// each row split into its key and namespace; a call ends at the end of the last table,
    /// with the cursor back at 0. The cursor holds the table (above bit [`PART_SHIFT`]; 0 is
    /// the shared one) and the bucket in it. A namespace whose table goes between two calls
    /// moves the last one into its place, whose rows the pass then skips; the next pass
    /// visits them.
    pub(crate) fn visit_some(
        &self,
        cursor: &mut u64,
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let tables = 1 + self.wide.len();
        let mut part = usize::try_from(*cursor >> PART_SHIFT).unwrap_or(0);
        let mut at = usize::try_from(*cursor & ((1 << PART_SHIFT) - 1)).unwrap_or(0);
        if part >= tables {
            (part, at) = (0, 0);
        }
        let mut left = limit;
        let mut key = Vec::new();
        for _ in 0..tables {
            let (visited, ended) = match part.checked_sub(1).and_then(|w| self.wide.get(w)) {
                Some(w) => w
                    .rows
                    .visit_to_end(&mut at, left, |k, v| visit(k, &w.namespace, v))?,
                None => self.rows.visit_to_end(&mut at, left, |row_key, value| {
                    let (full, namespace) = split_row(&mut key, row_key);
                    visit(full, namespace, value)
                })?,
            };
            left = left.saturating_sub(visited);
            if !ended {
                break;
            }
            // The last table's end ends the pass, and the call.
            (part, at) = ((part + 1) % tables, 0);
            if left == 0 || part == 0 {
                break;
            }
        }
        *cursor = ((part as u64) << PART_SHIFT) | at as u64;
        Ok(())
    }
}

/// The backend key (in `key`) and the namespace of a row key with its prefix, as the table
/// lists it (the prefix is the key's key group, computed by the listing). A row key that does
/// not split (the table writes none) is listed whole, with an empty namespace.
fn split_row<'r>(key: &'r mut Vec<u8>, row_key: &'r [u8]) -> (&'r [u8], &'r [u8]) {
    match (
        row_key.get(..2),
        canonical_of(row_key).and_then(split_spaced),
    ) {
        (Some(prefix), Some((canonical, namespace))) => {
            key.clear();
            key.extend_from_slice(prefix);
            key.extend_from_slice(canonical);
            (key.as_slice(), namespace)
        }
        _ => (row_key, &[]),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use statewright_core::keygroup::key_group;

    use super::*;

    const MP: u16 = 128;

    fn key(canonical: &[u8]) -> Vec<u8> {
        let mut k = key_group(canonical, MP).to_be_bytes().to_vec();
        k.extend_from_slice(canonical);
        k
    }

    /// Every entry, sorted.
    fn entries(t: &SpacedTable) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        t.for_each(|k, n, v| {
            all.push((k.to_vec(), n.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        all.sort();
        all
    }

    /// The entries `visit_some` visits, `limit` a call, until its cursor is back at the start:
    /// one pass; sorted.
    fn one_pass(t: &SpacedTable, limit: usize) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let (mut cursor, mut seen) = (0, Vec::new());
        for _ in 0..10_000 {
            t.visit_some(&mut cursor, limit, |k, n, v| {
                seen.push((k.to_vec(), n.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
            if cursor == 0 {
                break;
            }
        }
        seen.sort();
        seen
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8, u64),
        Add(u8, u8, u64),
        Hinted(u8, u8, u64),
        Merge(u8, u8, u8),
        Remove(u8, u8),
        RemoveKey(u8),
        List(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..5, any::<u64>()).prop_map(|(k, n, v)| Op::Put(k, n, v)),
            (0u8..6, 0u8..5, any::<u64>()).prop_map(|(k, n, v)| Op::Add(k, n, v)),
            (0u8..6, 0u8..5, any::<u64>()).prop_map(|(k, n, v)| Op::Hinted(k, n, v)),
            (0u8..6, 0u8..5, any::<u8>()).prop_map(|(k, n, v)| Op::Merge(k, n, v)),
            (0u8..6, 0u8..5).prop_map(|(k, n)| Op::Remove(k, n)),
            (0u8..6).prop_map(Op::RemoveKey),
            (0u8..6).prop_map(Op::List),
        ]
    }

    /// A key of 8 bytes, or of 200 (a two-byte length) for the last ones.
    fn canonical(k: u8) -> Vec<u8> {
        if k < 4 {
            u64::from(k).to_be_bytes().to_vec()
        } else {
            vec![k; 200]
        }
    }

    /// A namespace: 16 bytes, or none at all (a `()` namespace).
    fn namespace(n: u8) -> Vec<u8> {
        if n == 0 { Vec::new() } else { [n; 16].to_vec() }
    }

    proptest! {
        /// The table against a sorted map of `(key, namespace) -> value`, with listings that
        /// build the index part way through and keep it from then on.
        #[test]
        fn the_table_agrees_with_a_sorted_map(ops in proptest::collection::vec(op(), 1..200), fixed in any::<bool>()) {
            let mut t = SpacedTable::new(fixed, MP, Hasher::fixed());
            let mut model: BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Put(k, n, v) => {
                        let (k, n) = (key(&canonical(k)), namespace(n));
                        t.put(&k, &n, &v.to_le_bytes()).unwrap();
                        model.insert((k, n), v.to_le_bytes().to_vec());
                    }
                    Op::Add(k, n, v) => {
                        // A sum of 8-byte values; any other stored value counts as none.
                        let sum = |old: Option<&[u8]>| {
                            old.and_then(|b| <[u8; 8]>::try_from(b).ok())
                                .map_or(v, |b| u64::from_le_bytes(b).wrapping_add(v))
                        };
                        let (k, n) = (key(&canonical(k)), namespace(n));
                        let mut value = Vec::new();
                        t.read_modify_write(&k, &n, &mut value, &mut |old, out| {
                            out.extend_from_slice(&sum(old).to_le_bytes());
                            Ok(())
                        })
                        .unwrap();
                        let new = sum(model.get(&(k.clone(), n.clone())).map(Vec::as_slice));
                        model.insert((k, n), new.to_le_bytes().to_vec());
                    }
                    Op::Hinted(k, n, v) => {
                        let (k, n) = (key(&canonical(k)), namespace(n));
                        let mut hint = EntryHint::NONE;
                        let old = t.get_hinted(&k, &n, &mut hint).unwrap().map(<[u8]>::to_vec);
                        prop_assert_eq!(old.as_ref(), model.get(&(k.clone(), n.clone())));
                        t.put_hinted(&k, &n, &v.to_le_bytes(), hint).unwrap();
                        model.insert((k, n), v.to_le_bytes().to_vec());
                    }
                    Op::Merge(k, n, v) => {
                        let (k, n) = (key(&canonical(k)), namespace(n));
                        t.merge(&k, &n, &[v]).unwrap();
                        model.entry((k, n)).or_default().push(v);
                    }
                    Op::Remove(k, n) => {
                        let (k, n) = (key(&canonical(k)), namespace(n));
                        t.remove(&k, &n).unwrap();
                        model.remove(&(k, n));
                    }
                    Op::RemoveKey(k) => {
                        let k = key(&canonical(k));
                        t.remove_key(&k).unwrap();
                        model.retain(|(mk, _), _| *mk != k);
                    }
                    Op::List(k) => {
                        let k = key(&canonical(k));
                        let listed: Vec<(Vec<u8>, Vec<u8>)> = t
                            .scan(&k)
                            .unwrap()
                            .map(|e| e.map(|(n, v)| (n.to_vec(), v.to_vec())))
                            .collect::<Result<_>>()
                            .unwrap();
                        let expected: Vec<(Vec<u8>, Vec<u8>)> = model
                            .iter()
                            .filter(|((mk, _), _)| *mk == k)
                            .map(|((_, n), v)| (n.clone(), v.clone()))
                            .collect();
                        prop_assert_eq!(t.count(&k).unwrap(), expected.len());
                        prop_assert_eq!(listed, expected);
                    }
                }
                for ((k, n), v) in &model {
                    prop_assert_eq!(t.get(k, n).unwrap(), Some(v.as_slice()));
                }
            }
            let all: Vec<_> = model.into_iter().map(|((k, n), v)| (k, n, v)).collect();
            prop_assert_eq!(t.len(), all.len());
            prop_assert_eq!(entries(&t), all.clone());
            // One pass of `visit_some`, two entries a call, sees every entry once.
            prop_assert_eq!(one_pass(&t, 2), all);
        }
    }

    /// A window's sum for key `k`.
    fn add(t: &mut SpacedTable, k: &[u8], window: &[u8], by: i64) {
        let mut value = Vec::new();
        t.read_modify_write(k, window, &mut value, &mut |old, out| {
            let old = old.map_or(0, |b| i64::from_le_bytes(b.try_into().unwrap()));
            out.extend_from_slice(&(old + by).to_le_bytes());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn a_window_many_keys_write_gets_a_table_of_its_own_until_it_is_empty() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        let (window, session) = ([1u8; 16], [2u8; 16]);
        // One key's session stays in the shared table.
        let k = key(&500u64.to_be_bytes());
        t.put(&k, &session, &5i64.to_le_bytes()).unwrap();
        for i in 0..100u64 {
            add(&mut t, &key(&i.to_be_bytes()), &window, 1);
            add(&mut t, &key(&i.to_be_bytes()), &window, 2);
        }
        assert_eq!(t.wide.len(), 1, "the window has a table of its own");
        assert_eq!(t.rows.len(), 1, "only the session is shared");
        assert_eq!(t.len(), 101);
        for i in 0..100u64 {
            let got = t.get(&key(&i.to_be_bytes()), &window).unwrap();
            assert_eq!(got, Some(&3i64.to_le_bytes()[..]), "key {i}");
        }
        // Listing sees both tables.
        add(&mut t, &k, &window, 7);
        let listed: Vec<_> = t.scan(&k).unwrap().map(|e| e.unwrap().0.to_vec()).collect();
        assert_eq!(listed, vec![window.to_vec(), session.to_vec()]);
        assert_eq!(t.count(&k).unwrap(), 2);
        // Every entry once.
        let all = entries(&t);
        assert_eq!(all.len(), 102);
        assert!(all.contains(&(k.clone(), session.to_vec(), 5i64.to_le_bytes().to_vec())));

        // The window's cleanup, key by key: its table goes with its last row.
        t.remove_key(&k).unwrap();
        for i in 0..100u64 {
            t.remove(&key(&i.to_be_bytes()), &window).unwrap();
        }
        assert!(t.wide.is_empty());
        assert_eq!(t.len(), 0);
        // Written again, the window starts in the shared table.
        add(&mut t, &key(&1u64.to_be_bytes()), &window, 4);
        assert_eq!((t.wide.len(), t.rows.len()), (0, 1));
        assert_eq!(
            t.get(&key(&1u64.to_be_bytes()), &window).unwrap(),
            Some(&4i64.to_le_bytes()[..])
        );
    }

    #[test]
    fn a_window_s_table_refuses_a_misplaced_key_and_keeps_its_place_when_another_goes() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        for w in 1..=3u8 {
            for i in 0..10u64 {
                add(&mut t, &key(&i.to_be_bytes()), &[w; 16], i64::from(w));
            }
        }
        assert_eq!(t.wide.len(), 3);
        // A key whose prefix names another key group, into a window's own table.
        let mut misplaced = key(&77u64.to_be_bytes());
        misplaced[1] = misplaced[1].wrapping_add(1);
        let err = t
            .put(&misplaced, &[2; 16], &1i64.to_le_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("key group"), "{err}");
        assert_eq!(t.len(), 30);
        // The first window's table goes; the last one takes its place.
        for i in 0..10u64 {
            t.remove(&key(&i.to_be_bytes()), &[1; 16]).unwrap();
        }
        assert_eq!(t.wide.len(), 2);
        for w in 2..=3u8 {
            add(&mut t, &key(&50u64.to_be_bytes()), &[w; 16], 1);
            for i in (0..10u64).chain([50]) {
                let got = t.get(&key(&i.to_be_bytes()), &[w; 16]).unwrap();
                let sum = if i == 50 { 1 } else { i64::from(w) };
                assert_eq!(got, Some(&sum.to_le_bytes()[..]), "window {w}, key {i}");
            }
        }
        assert_eq!(t.len(), 22);
        assert!(t.wide.iter().all(|w| w.rows.len() == 11));
    }

    #[test]
    fn eight_windows_open_at_once_move_and_twenty_stay_shared() {
        // Every record adds to each open window in turn, as overlapping sliding windows do.
        for (open, moved) in [(8u8, 8), (20, 0)] {
            let mut t = SpacedTable::new(true, MP, Hasher::fixed());
            for i in 0..50u64 {
                for w in 0..open {
                    add(&mut t, &key(&i.to_be_bytes()), &[w; 16], 1);
                }
            }
            assert_eq!(t.wide.len(), moved, "{open} windows open");
            assert_eq!(t.len(), 50 * usize::from(open));
        }
    }

    /// Adds to `n` session windows, one per key.
    fn sessions(t: &mut SpacedTable, n: u64) {
        for i in 0..n {
            let session = [i.to_be_bytes(), (i + 30).to_be_bytes()].concat();
            add(t, &key(&i.to_be_bytes()), &session, 1);
        }
    }

    #[test]
    fn session_windows_one_key_each_stay_in_the_shared_table() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        sessions(&mut t, 5_000);
        assert!(t.wide.is_empty());
        assert_eq!(t.len(), 5_000);
    }

    #[test]
    fn a_window_among_many_sessions_moves_once_the_new_rows_pay_for_the_move() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        sessions(&mut t, 8_000);
        let window = |w: u8, i: u64, t: &mut SpacedTable| {
            add(t, &key(&(100_000 + i).to_be_bytes()), &[w; 16], 1);
        };
        // The 8,000 new session rows pay for the first move (a read of every shared row).
        for i in 0..10 {
            window(1, i, &mut t);
        }
        assert_eq!(t.wide.len(), 1);
        // The next one waits for an eighth of the shared rows to be new since.
        for i in 0..1_000 {
            window(2, i, &mut t);
        }
        assert_eq!(
            t.wide.len(),
            1,
            "1,000 new rows of 9,000 do not pay for a move"
        );
        for i in 1_000..1_200 {
            window(2, i, &mut t);
        }
        assert_eq!(t.wide.len(), 2);
        assert_eq!(t.rows.len(), 8_000);
        assert_eq!(t.len(), 9_210);
        for i in 0..1_200u64 {
            let got = t.get(&key(&(100_000 + i).to_be_bytes()), &[2; 16]).unwrap();
            assert_eq!(got, Some(&1i64.to_le_bytes()[..]));
        }
    }

    #[test]
    fn visit_some_sees_every_entry_of_every_table_in_a_pass() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        let mut expected = Vec::new();
        for w in 0..4u8 {
            for i in 0..(20 * u64::from(w) + 1) {
                let k = key(&i.to_be_bytes());
                t.put(&k, &[w; 16], &i.to_le_bytes()).unwrap();
                expected.push((k, vec![w; 16], i.to_le_bytes().to_vec()));
            }
        }
        assert_eq!(t.wide.len(), 3, "windows 1 to 3 have tables of their own");
        expected.sort();
        for limit in [1, 3, 50, 1_000] {
            assert_eq!(one_pass(&t, limit), expected, "limit {limit}");
        }
    }

    #[test]
    fn a_window_row_is_fixed_and_a_read_leaves_its_bucket() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        let k = key(&7u64.to_be_bytes());
        let window = [3u8; 16];
        t.put(&k, &window, &1i64.to_le_bytes()).unwrap();
        let mut hint = EntryHint::NONE;
        assert!(t.get_hinted(&k, &window, &mut hint).unwrap().is_some());
        assert_ne!(hint, EntryHint::NONE, "a fixed-row read leaves its bucket");
        t.put_hinted(&k, &window, &2i64.to_le_bytes(), hint)
            .unwrap();
        assert_eq!(t.get(&k, &window).unwrap(), Some(&2i64.to_le_bytes()[..]));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_key_whose_prefix_is_not_its_group_is_refused() {
        let mut t = SpacedTable::new(true, MP, Hasher::fixed());
        let mut k = key(&7u64.to_be_bytes());
        k[1] = k[1].wrapping_add(1);
        let err = t.put(&k, b"ns", &[1; 8]).unwrap_err();
        assert!(err.to_string().contains("key group"), "{err}");
        assert!(t.scan(&k).is_err());
        assert!(t.remove_key(&k).is_err());
        assert!(t.put(&[1], b"ns", &[1; 8]).is_err(), "no prefix");
        assert_eq!(t.len(), 0);
    }
}
