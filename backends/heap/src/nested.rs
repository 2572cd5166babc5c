//! The table of a map state: per key, its entries sorted by user key ([`UserEntries`]).
//!
//! One hash table of `(key, entries)` pairs held in the table itself, probed from the key's own
//! hash: a lookup reads the control bytes and then the slot that holds the key inline, where an
//! index map read its index table and then an entry vector, one more cache miss per lookup at
//! a million keys.

use std::hash::BuildHasher;

use hashbrown::HashTable;

pub(crate) use crate::entries::{Bytes, UserEntries};

type Hasher = foldhash::fast::SeedableRandomState;

/// Keys and their entries.
#[derive(Debug)]
pub(crate) struct NestedTable {
    table: HashTable<(Bytes, UserEntries)>,
    hasher: Hasher,
}

impl NestedTable {
    pub(crate) fn new(hasher: Hasher) -> Self {
        Self {
            table: HashTable::new(),
            hasher,
        }
    }

    #[inline]
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Option<&UserEntries> {
        self.table
            .find(self.hash(key), |(k, _)| k.as_slice() == key)
            .map(|(_, e)| e)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut UserEntries> {
        let hash = self.hash(key);
        self.table
            .find_mut(hash, |(k, _)| k.as_slice() == key)
            .map(|(_, e)| e)
    }

    /// The entries of `key`, created empty if it has none.
    pub(crate) fn entries_mut(&mut self, key: &[u8]) -> &mut UserEntries {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        let entry = self.table.entry(
            hash,
            |(k, _)| k.as_slice() == key,
            |(k, _)| hasher.hash_one(k.as_slice()),
        );
        &mut entry
            .or_insert_with(|| (Bytes::from_slice(key), UserEntries::default()))
            .into_mut()
            .1
    }

    pub(crate) fn remove(&mut self, key: &[u8]) {
        let hash = self.hash(key);
        if let Ok(entry) = self.table.find_entry(hash, |(k, _)| k.as_slice() == key) {
            entry.remove();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn clear(&mut self) {
        self.table.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &UserEntries)> {
        self.table.iter().map(|(k, e)| (k.as_slice(), e))
    }

    /// Visits the keys of up to `limit` occupied slots from slot `*cursor` on (wrapping), at
    /// most `8 × limit` slots, and leaves `*cursor` after the last slot looked at: a series of
    /// calls sees every key that stays in the table.
    pub(crate) fn visit_some(
        &self,
        cursor: &mut u64,
        limit: usize,
        mut visit: impl FnMut(&[u8], &UserEntries) -> statewright_core::Result<()>,
    ) -> statewright_core::Result<()> {
        let len = self.len();
        if len == 0 {
            *cursor = 0;
            return Ok(());
        }
        let buckets = self.table.num_buckets();
        let mut visited = 0;
        let mut budget = limit.saturating_mul(8).max(1);
        let mut at = usize::try_from(*cursor).unwrap_or(0);
        while visited < limit.min(len) && budget > 0 {
            if at >= buckets {
                at = 0;
            }
            budget -= 1;
            if let Some((k, e)) = self.table.get_bucket(at) {
                visit(k, e)?;
                visited += 1;
            }
            at += 1;
        }
        *cursor = at as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keys_come_and_go_and_a_series_of_visits_sees_every_one() {
        let mut t = NestedTable::new(Hasher::fixed());
        for i in 0u64..3000 {
            t.entries_mut(&i.to_be_bytes()).set(b"u", &i.to_le_bytes());
        }
        assert_eq!(t.len(), 3000);
        for i in (0u64..3000).step_by(2) {
            t.remove(&i.to_be_bytes());
        }
        assert_eq!(t.len(), 1500);
        assert!(t.get(&2u64.to_be_bytes()).is_none());
        let e = t.get(&3u64.to_be_bytes()).unwrap();
        assert_eq!(e.get(&b"u"[..]).unwrap(), 3u64.to_le_bytes());
        t.get_mut(&3u64.to_be_bytes()).unwrap().remove(b"u");
        assert!(t.get(&3u64.to_be_bytes()).unwrap().is_empty());
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        for _ in 0..10_000 {
            t.visit_some(&mut cursor, 7, |k, _| {
                seen.insert(k.to_vec());
                Ok(())
            })
            .unwrap();
            if seen.len() == 1500 {
                break;
            }
        }
        assert_eq!(seen.len(), 1500);
        assert_eq!(t.iter().count(), 1500);
        t.clear();
        assert_eq!(t.len(), 0);
    }
}
