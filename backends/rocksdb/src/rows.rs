//! The row cache: a bounded map of recently used rows in front of RocksDB.
//!
//! A stream job touches the same key many times between checkpoints, and its durability comes
//! from checkpoints, not from each write (the write-ahead log is off). So the backend keeps the
//! rows it read or wrote last in memory, as Kafka Streams puts a record cache in front of its
//! RocksDB stores: a hit never reaches RocksDB, and a write to a row of a value, list, reducing
//! or aggregating state stays in the cache (dirty) until the row is evicted or a checkpoint,
//! flush or scan needs RocksDB to hold it, when dirty rows are written back, in key order.
//!
//! - Every row is one entry: its internal key (as RocksDB stores it) followed by its value.
//!   A row is *present* (the value is known), *absent* (RocksDB holds nothing: a miss is cached
//!   too, so a first write of a new key reads RocksDB once), or *pending* (list appends to a row
//!   the cache has not read: the operands, written back as one RocksDB merge, so an append never
//!   reads).
//! - Rows of map and namespaced states are written through (RocksDB and the cache get every
//!   write, the cache holds no dirty map row), so map iteration, which RocksDB serves as a
//!   prefix scan, needs no write-back first. Timers are written back like values: a key's
//!   timers are listed rarely, and a list writes the cache back first. Rows of every state are
//!   written through when the write-ahead log is on.
//! - Eviction is CLOCK (second chance): a hit marks a row, the hand clears marks and evicts the
//!   first unmarked row. Rows are only ever evicted or replaced under `&mut` of the backend,
//!   so the bytes a read handed out stay valid for the borrow the read was made under.
//! - Memory is bounded by [`RocksDbOptions::row_cache_size`](crate::RocksDbOptions): the bytes
//!   of every row plus a fixed cost per row; reads may add rows past the bound until the next
//!   write or key change, which evicts down to it.
//! - Dirty rows are bounded too ([`RocksDbOptions::row_cache_dirty_limit`](crate::RocksDbOptions)):
//!   past the bound every dirty row is written back (in key order) while records are processed,
//!   so a checkpoint's synchronous write-back never has more than the bound to write.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// What the cache knows of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Row {
    /// The value is known.
    Present,
    /// RocksDB holds nothing at this key (once the row is written back, if dirty).
    Absent,
    /// Merge operands to append to whatever RocksDB holds; always dirty.
    Pending,
}

/// One cached row.
pub(crate) struct Slot {
    hash: u64,
    state: u32,
    key_len: u32,
    row: Row,
    dirty: bool,
    referenced: bool,
    /// The internal key followed by the value (or the pending operands).
    bytes: Vec<u8>,
}

impl Slot {
    fn split(&self) -> (&[u8], &[u8]) {
        // The bytes always start with the whole key (`insert`, `set` and `append` keep it).
        self.bytes
            .split_at_checked(self.key_len as usize)
            .unwrap_or((&self.bytes, &[]))
    }

    /// The state the row belongs to.
    pub(crate) fn state(&self) -> u32 {
        self.state
    }

    /// The row's internal key.
    pub(crate) fn key(&self) -> &[u8] {
        self.split().0
    }

    /// The row's value (the operands of a pending row; empty for an absent one).
    pub(crate) fn value(&self) -> &[u8] {
        self.split().1
    }

    /// What the cache knows of the row.
    pub(crate) fn row(&self) -> Row {
        self.row
    }

    /// Whether RocksDB has yet to receive the row.
    #[cfg(test)]
    fn is_dirty(&self) -> bool {
        self.dirty
    }

    fn cost(&self) -> usize {
        SLOT_COST + self.bytes.capacity()
    }
}

/// The fixed memory of a row besides its bytes: the slot, its hash-table entry and the
/// allocator's bookkeeping of its byte buffer.
const SLOT_COST: usize = size_of::<Slot>() + size_of::<u32>() + 1 + 16;

/// Counters of the row cache since the backend opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RowCacheStats {
    /// The configured bound (bytes); 0 when the cache is off.
    pub capacity_bytes: u64,
    /// Bytes the cached rows take now, fixed cost per row included.
    pub bytes: u64,
    /// Rows cached now.
    pub rows: u64,
    /// Rows RocksDB has yet to receive.
    pub dirty_rows: u64,
    /// Bytes of the dirty rows, bounded by `row_cache_dirty_limit` (plus one row).
    pub dirty_bytes: u64,
    /// Reads the cache answered.
    pub hits: u64,
    /// Reads that went to RocksDB.
    pub misses: u64,
    /// Rows evicted to stay within the bound.
    pub evictions: u64,
    /// Dirty rows written to RocksDB (at eviction, checkpoint, flush or scan).
    pub written_back: u64,
}

/// The cache itself; the backend keeps it in a `RefCell` and owns the RocksDB side.
pub(crate) struct RowCache {
    capacity: usize,
    dirty_limit: usize,
    bytes: usize,
    dirty_bytes: usize,
    table: HashTable<u32>,
    slots: Vec<Slot>,
    hand: usize,
    dirty: usize,
    /// The index of every dirty slot, at least once (and stale or clean ones, skipped): a
    /// write-back visits these, not the whole slab. An index is added when a slot turns dirty
    /// and when a removal moves a dirty slot to another index.
    dirty_list: Vec<u32>,
    hasher: foldhash::fast::FixedState,
    hits: u64,
    misses: u64,
    evictions: u64,
    written_back: u64,
}

impl RowCache {
    pub(crate) fn new(capacity: usize, dirty_limit: usize) -> Self {
        Self {
            capacity,
            dirty_limit,
            bytes: 0,
            dirty_bytes: 0,
            table: HashTable::new(),
            slots: Vec::new(),
            hand: 0,
            dirty: 0,
            dirty_list: Vec::new(),
            hasher: foldhash::fast::FixedState::with_seed(0x5754_6174_6552_6f77),
            hits: 0,
            misses: 0,
            evictions: 0,
            written_back: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn stats(&self) -> RowCacheStats {
        RowCacheStats {
            capacity_bytes: self.capacity as u64,
            bytes: self.bytes as u64,
            rows: self.slots.len() as u64,
            dirty_rows: self.dirty as u64,
            dirty_bytes: self.dirty_bytes as u64,
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            written_back: self.written_back,
        }
    }

    pub(crate) fn hash(&self, state: u32, key: &[u8]) -> u64 {
        self.hasher.hash_one((state, key))
    }

    /// The index of the row at `(state, key)`.
    pub(crate) fn find(&self, hash: u64, state: u32, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.table
            .find(hash, |&i| {
                slots
                    .get(i as usize)
                    .is_some_and(|s| s.state == state && s.key() == key)
            })
            .map(|&i| i as usize)
    }

    pub(crate) fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    /// Marks a row as used (a read hit).
    pub(crate) fn touch(&mut self, index: usize) {
        self.hits += 1;
        if let Some(s) = self.slots.get_mut(index) {
            s.referenced = true;
        }
    }

    pub(crate) fn count_miss(&mut self) {
        self.misses += 1;
    }

    /// Adds a row not in the cache; returns its index.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        state: u32,
        key: &[u8],
        row: Row,
        dirty: bool,
        value: &[u8],
    ) -> usize {
        let mut bytes = Vec::with_capacity(key.len() + value.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        let slot = Slot {
            hash,
            state,
            key_len: u32::try_from(key.len()).unwrap_or(u32::MAX),
            row,
            dirty,
            referenced: false,
            bytes,
        };
        self.bytes += slot.cost();
        let index = self.slots.len();
        if dirty {
            self.dirty += 1;
            self.dirty_bytes += slot.cost();
            self.list_dirty(index);
        }
        self.slots.push(slot);
        let slots = &self.slots;
        self.table.insert_unique(hash, index as u32, |&i| {
            slots.get(i as usize).map_or(0, |s| s.hash)
        });
        index
    }

    /// Replaces the row's value (in place when the length is the same).
    pub(crate) fn set(&mut self, index: usize, row: Row, dirty: bool, value: &[u8]) {
        let Some(s) = self.slots.get_mut(index) else {
            return;
        };
        let before = s.cost();
        let was_dirty = s.dirty;
        let key_len = s.key_len as usize;
        s.bytes.truncate(key_len);
        s.bytes.extend_from_slice(value);
        if s.bytes.capacity() > 2 * s.bytes.len() + 64 {
            s.bytes.shrink_to_fit();
        }
        s.row = row;
        s.referenced = true;
        s.dirty = dirty;
        let after = s.cost();
        self.bytes = self.bytes + after - before;
        if was_dirty {
            self.dirty -= 1;
            self.dirty_bytes -= before;
        }
        if dirty {
            self.dirty += 1;
            self.dirty_bytes += after;
            if !was_dirty {
                self.list_dirty(index);
            }
        }
    }

    /// Appends operands to a present or pending row (or makes an absent row present with
    /// them); the row is dirty after.
    pub(crate) fn append(&mut self, index: usize, operand: &[u8]) {
        let Some(s) = self.slots.get_mut(index) else {
            return;
        };
        let before = s.cost();
        s.bytes.extend_from_slice(operand);
        if s.row == Row::Absent {
            s.row = Row::Present;
        }
        s.referenced = true;
        let after = s.cost();
        let was_dirty = s.dirty;
        s.dirty = true;
        self.bytes = self.bytes + after - before;
        if was_dirty {
            self.dirty_bytes = self.dirty_bytes + after - before;
        } else {
            self.dirty += 1;
            self.dirty_bytes += after;
            self.list_dirty(index);
        }
    }

    /// Removes the row at `index`; the last row takes its index.
    pub(crate) fn remove(&mut self, index: usize) {
        let Some(hash) = self.slots.get(index).map(|s| s.hash) else {
            return;
        };
        if let Ok(entry) = self.table.find_entry(hash, |&i| i as usize == index) {
            entry.remove();
        }
        let slot = self.slots.swap_remove(index);
        self.bytes -= slot.cost();
        if slot.dirty {
            self.dirty -= 1;
            self.dirty_bytes -= slot.cost();
        }
        let moved = self.slots.len();
        if let Some(s) = self.slots.get(index) {
            let dirty = s.dirty;
            if let Some(i) = self.table.find_mut(s.hash, |&i| i as usize == moved) {
                *i = index as u32;
            }
            if dirty {
                self.list_dirty(index);
            }
        }
        if self.slots.is_empty() {
            self.dirty_list.clear();
        }
    }

    /// Records that the slot at `index` is dirty; keeps the list within twice the dirty rows
    /// (plus some slack) by dropping the clean, stale and repeated indexes it gathered, so its
    /// memory stays within the bound's order whatever eviction moves.
    fn list_dirty(&mut self, index: usize) {
        self.dirty_list.push(index as u32);
        if self.dirty_list.len() > 2 * self.dirty + 1024 {
            let slots = &self.slots;
            self.dirty_list
                .retain(|&i| slots.get(i as usize).is_some_and(|s| s.dirty));
            self.dirty_list.sort_unstable();
            self.dirty_list.dedup();
        }
    }

    /// Whether the rows take more than the bound.
    pub(crate) fn over(&self) -> bool {
        self.bytes > self.capacity
    }

    /// Whether the dirty rows take more than their bound.
    pub(crate) fn too_dirty(&self) -> bool {
        self.dirty_bytes > self.dirty_limit
    }

    /// Evicts rows until they take at most `target` bytes, giving each dirty one to `write`
    /// first (to a batch the caller writes afterwards).
    pub(crate) fn evict_to(&mut self, target: usize, write: &mut dyn FnMut(&Slot)) {
        while self.bytes > target && !self.slots.is_empty() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let Some(s) = self.slots.get_mut(self.hand) else {
                break;
            };
            if s.referenced {
                s.referenced = false;
                self.hand += 1;
                continue;
            }
            if s.dirty {
                write(s);
                self.written_back += 1;
            }
            self.evictions += 1;
            self.remove(self.hand);
        }
    }

    /// Gives every dirty row to `write` and marks it clean; pending rows, whose value only
    /// RocksDB knows once their operands are merged, leave the cache. Removing a pending row
    /// is allowed under a shared borrow of the backend: no read ever handed out its bytes.
    pub(crate) fn write_back(&mut self, write: &mut dyn FnMut(&Slot)) {
        if self.dirty == 0 {
            self.dirty_list.clear();
            return;
        }
        // Removing a pending row may move a dirty one and list its new index: the list is
        // taken out while it is walked, and what it gathered meanwhile walked next.
        loop {
            let list = std::mem::take(&mut self.dirty_list);
            if list.is_empty() {
                break;
            }
            for i in list {
                let i = i as usize;
                let Some(s) = self.slots.get_mut(i) else {
                    continue;
                };
                if !s.dirty {
                    continue;
                }
                write(s);
                self.written_back += 1;
                if s.row == Row::Pending {
                    self.remove(i);
                } else {
                    s.dirty = false;
                    self.dirty -= 1;
                    self.dirty_bytes -= s.cost();
                }
            }
        }
    }

    /// Drops every row of `state` (dirty ones too), or of every state.
    pub(crate) fn forget(&mut self, state: Option<u32>) {
        let mut i = 0;
        while i < self.slots.len() {
            if state.is_none_or(|st| self.slots.get(i).is_some_and(|s| s.state == st)) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        if self.slots.is_empty() {
            self.table = HashTable::new();
            self.slots = Vec::new();
            self.dirty_list = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rows_are_found_updated_and_removed() {
        let mut c = RowCache::new(1 << 20, 1 << 20);
        let mut index = Vec::new();
        for k in 0u32..1000 {
            let key = k.to_be_bytes();
            let h = c.hash(1, &key);
            index.push(c.insert(h, 1, &key, Row::Present, k % 2 == 0, &[k as u8; 3]));
        }
        assert_eq!(c.stats().dirty_rows, 500);
        for k in (0u32..1000).step_by(3) {
            let key = k.to_be_bytes();
            let i = c.find(c.hash(1, &key), 1, &key).unwrap();
            c.remove(i);
        }
        for k in 0u32..1000 {
            let key = k.to_be_bytes();
            let found = c.find(c.hash(1, &key), 1, &key);
            assert_eq!(found.is_some(), k % 3 != 0, "{k}");
            if let Some(i) = found {
                assert_eq!(c.slot(i).unwrap().value(), &[k as u8; 3]);
                assert_eq!(c.slot(i).unwrap().key(), &key);
            }
            // Another state's row under the same key is another row.
            assert!(c.find(c.hash(2, &key), 2, &key).is_none());
        }
        let i = c
            .find(c.hash(1, &7u32.to_be_bytes()), 1, &7u32.to_be_bytes())
            .unwrap();
        c.set(i, Row::Present, true, b"longer value");
        c.append(i, b"+x");
        assert_eq!(c.slot(i).unwrap().value(), b"longer value+x");
    }

    /// The dirty counters agree with the rows after every kind of change.
    fn assert_accounting(c: &RowCache) {
        let dirty: Vec<&Slot> = c.slots.iter().filter(|s| s.dirty).collect();
        assert_eq!(c.dirty, dirty.len());
        assert_eq!(c.dirty_bytes, dirty.iter().map(|s| s.cost()).sum::<usize>());
        assert_eq!(c.bytes, c.slots.iter().map(Slot::cost).sum::<usize>());
        for (i, slot) in c.slots.iter().enumerate() {
            if slot.dirty {
                assert!(
                    c.dirty_list.contains(&(i as u32)),
                    "dirty slot {i} is not listed"
                );
            }
        }
    }

    #[test]
    fn dirty_bytes_follow_every_change() {
        let mut c = RowCache::new(1 << 20, 4 << 10);
        for k in 0u32..300 {
            let key = k.to_be_bytes();
            let h = c.hash(0, &key);
            let row = if k % 5 == 0 {
                Row::Pending
            } else {
                Row::Present
            };
            c.insert(h, 0, &key, row, k % 2 == 0 || row == Row::Pending, &[1; 16]);
            assert_accounting(&c);
        }
        for k in (0u32..300).step_by(3) {
            let key = k.to_be_bytes();
            let i = c.find(c.hash(0, &key), 0, &key).unwrap();
            match k % 4 {
                0 => c.set(i, Row::Present, true, &[2; 200]),
                1 => c.set(i, Row::Absent, false, &[]),
                2 => c.append(i, &[3; 40]),
                _ => c.remove(i),
            }
            assert_accounting(&c);
        }
        assert!(c.too_dirty());
        c.evict_to(8 << 10, &mut |_| {});
        assert_accounting(&c);
        c.write_back(&mut |_| {});
        assert_accounting(&c);
        assert!(!c.too_dirty());
        assert_eq!(c.stats().dirty_bytes, 0);
    }

    #[test]
    fn a_write_back_hands_out_every_dirty_row_once_while_pending_rows_leave() {
        let mut c = RowCache::new(64 << 20, 64 << 20);
        for k in 0u32..20_000 {
            let key = k.to_be_bytes();
            let h = c.hash(0, &key);
            let row = if k % 2 == 0 {
                Row::Pending
            } else {
                Row::Present
            };
            c.insert(h, 0, &key, row, true, &[1; 8]);
        }
        let mut written = std::collections::HashSet::new();
        c.write_back(&mut |s| assert!(written.insert(s.key().to_vec()), "written twice"));
        assert_eq!(written.len(), 20_000);
        assert_eq!(c.stats().dirty_rows, 0);
        assert_eq!(c.stats().rows, 10_000);
        assert_accounting(&c);
    }

    #[test]
    fn the_dirty_list_stays_bounded_under_eviction() {
        let mut c = RowCache::new(64 << 10, 64 << 20);
        for k in 0u32..200_000 {
            let key = k.to_be_bytes();
            let h = c.hash(0, &key);
            c.insert(h, 0, &key, Row::Present, true, &[0; 8]);
            if c.over() {
                c.evict_to(c.capacity - c.capacity / 16, &mut |_| {});
            }
            assert!(c.dirty_list.len() <= 2 * c.dirty + 1025);
        }
        assert_accounting(&c);
    }

    #[test]
    fn eviction_keeps_the_bound_and_hands_out_dirty_rows() {
        let mut c = RowCache::new(64 << 10, 64 << 10);
        for k in 0u32..10_000 {
            let key = k.to_be_bytes();
            let h = c.hash(0, &key);
            c.insert(h, 0, &key, Row::Present, true, &[0; 8]);
        }
        let mut written = 0;
        c.evict_to(c.capacity, &mut |s| {
            assert!(s.is_dirty());
            written += 1;
        });
        let st = c.stats();
        assert!(st.bytes <= 64 << 10);
        assert_eq!(st.evictions, written);
        assert_eq!(st.rows + st.evictions, 10_000);
        // Whatever stayed is still found.
        let mut left = 0;
        for k in 0u32..10_000 {
            let key = k.to_be_bytes();
            left += u64::from(c.find(c.hash(0, &key), 0, &key).is_some());
        }
        assert_eq!(left, st.rows);
        let mut back = 0;
        c.write_back(&mut |_| back += 1);
        assert_eq!(back, st.rows);
        assert_eq!(c.stats().dirty_rows, 0);
        c.forget(None);
        assert_eq!(c.stats().bytes, 0);
    }
}
