//! The table of a namespaced value, list, reducing or aggregating state: one row per key and
//! namespace (a window of a key), as Flink's heap backend keys its state map by
//! `(key, namespace)`.
//!
//! The rows are a [`FlatTable`] keyed by the pair ([`RowKey::build`]), so a windowed add is
//! the read-modify-write of value state ([`read_modify_write`](SpacedTable::read_modify_write)):
//! one probe finds the row or the bucket of a new one, and the value is written there (fixed
//! rows when every key, namespace and value has one length: a `u64` key, a [`TimeWindow`] and
//! an `i64` sum make 32 bytes, the row key's last byte, the key's length, being kept once for
//! the table). Kept as a map state, a key's
//! windows were records in one buffer behind the key's slot: the slot, then the buffer, then a
//! search of it, and a reallocation for every new window.
//!
//! Listing a key's namespaces ([`scan`](SpacedTable::scan), and with it
//! `<field>_namespaces().list()`, merging session windows, removing every namespace of a key)
//! reads an index of each key's namespaces. A table builds that index the first time a listing
//! asks for it, from its rows, and keeps it up to date from then on; a job that never lists (tumbling
//! and sliding windows, whose timers clear each window by its namespace) never pays for it.
//!
//! [`TimeWindow`]: statewright_core::window::TimeWindow

use std::sync::OnceLock;

use statewright_core::backend::ValueUpdate;
use statewright_core::{EntryHint, Result};

use crate::flat::{FlatTable, RowKey, canonical_of, split_spaced};
use crate::nested::NestedTable;

type Hasher = foldhash::fast::SeedableRandomState;

/// The rows of a namespaced state and, once something listed them, an index of each key's
/// namespaces.
#[derive(Debug)]
pub(crate) struct SpacedTable {
    rows: FlatTable,
    /// Per canonical key (without its prefix), its namespaces, as user keys with empty values:
    /// built at the first listing, then kept with every write.
    index: OnceLock<NestedTable>,
    hasher: Hasher,
}

impl SpacedTable {
    pub(crate) fn new(fixed_rows: bool, max_parallelism: u16, hasher: Hasher) -> Self {
        Self {
            rows: FlatTable::new(fixed_rows, max_parallelism, hasher.clone()).namespaced(),
            index: OnceLock::new(),
            hasher,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn max_parallelism(&self) -> u16 {
        self.rows.max_parallelism()
    }

    /// The canonical key of `key`, when its prefix is the key group of its canonical bytes.
    pub(crate) fn checked<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        crate::flat::checked_key(key, self.rows.max_parallelism()).map(|(_, canonical)| canonical)
    }

    #[inline(never)]
    pub(crate) fn get(&self, key: &[u8], namespace: &[u8]) -> Result<Option<&[u8]>> {
        self.rows.get(RowKey::new().build(key, namespace)?)
    }

    #[inline(never)]
    pub(crate) fn get_hinted(
        &self,
        key: &[u8],
        namespace: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        self.rows
            .get_hinted(RowKey::new().build(key, namespace)?, hint)
    }

    #[inline(never)]
    pub(crate) fn put_hinted(
        &mut self,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        self.rows
            .put_hinted(RowKey::new().build(key, namespace)?, value, hint)?;
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
        self.rows
            .read_modify_write_spaced(key, namespace, value, update)?;
        self.indexed(key, namespace);
        Ok(())
    }

    #[inline(never)]
    pub(crate) fn put(&mut self, key: &[u8], namespace: &[u8], value: &[u8]) -> Result<()> {
        self.rows.put(RowKey::new().build(key, namespace)?, value)?;
        self.indexed(key, namespace);
        Ok(())
    }

    pub(crate) fn merge(&mut self, key: &[u8], namespace: &[u8], operand: &[u8]) -> Result<()> {
        self.rows
            .merge(RowKey::new().build(key, namespace)?, operand)?;
        self.indexed(key, namespace);
        Ok(())
    }

    pub(crate) fn remove(&mut self, key: &[u8], namespace: &[u8]) -> Result<()> {
        let removed = self.rows.remove(RowKey::new().build(key, namespace)?)?;
        if removed
            && let (Some(index), Some(canonical)) = (self.index.get_mut(), canonical_of(key))
            && let Some(entries) = index.get_mut(canonical)
        {
            entries.remove(namespace);
            if entries.is_empty() {
                index.remove(canonical);
            }
        }
        if self.rows.len() == 0 {
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
            self.rows.remove(RowKey::new().build(key, &namespace)?)?;
        }
        if self.rows.len() == 0 {
            self.index = OnceLock::new();
        }
        Ok(())
    }

    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.index = OnceLock::new();
    }

    /// Calls `visit(key, namespace, value)` for every entry, in the table's order; the key has
    /// its key-group prefix.
    pub(crate) fn for_each(
        &self,
        mut visit: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut key = Vec::new();
        self.rows.for_each(|row_key, value| {
            let (full, namespace) = split_row(&mut key, row_key);
            visit(full, namespace, value)
        })
    }

    /// [`FlatTable::visit_some`], with each row split into its key and namespace.
    pub(crate) fn visit_some(
        &self,
        cursor: &mut u64,
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut key = Vec::new();
        self.rows.visit_some(cursor, limit, |row_key, value| {
            let (full, namespace) = split_row(&mut key, row_key);
            visit(full, namespace, value)
        })
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

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, u8, u64),
        Merge(u8, u8, u8),
        Remove(u8, u8),
        RemoveKey(u8),
        List(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..5, any::<u64>()).prop_map(|(k, n, v)| Op::Put(k, n, v)),
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
            prop_assert_eq!(entries(&t), all);
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
