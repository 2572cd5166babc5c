//! The entries of one key of a map state, sorted by user key.
//!
//! Most keys of a map state hold a few entries (a window or two of a namespaced state, a
//! key's pending timers, ten attributes of a user), so they are packed into one buffer:
//! `[length][user key][length][value]` records in user-key order, lengths as LEB128 varints
//! (one byte below 128). A lookup reads one allocation front to back, where a `BTreeMap`
//! leaf of small-vector keys and values spanned nine cache lines and allocated more than
//! 500 bytes even for one entry. A key whose entries outgrow [`PACKED_MAX`] bytes moves to a
//! `BTreeMap` (a top-N list of a thousand entries is searched, not scanned), and stays there.
//!
//! The order is the byte order of the canonical user keys, the same as RocksDB's and the
//! tree's: `entries()` and every checkpoint see a key's entries in that order on any backend.

use std::collections::BTreeMap;

use smallvec::SmallVec;

/// Bytes of a tree entry, inline up to 16 bytes (a `u64` user key and an `i64` value never
/// allocate).
pub(crate) type Bytes = SmallVec<[u8; 16]>;

/// The packed buffer's bound: past it, a key's entries move to a tree. 768 bytes hold 42
/// entries of a `u64` user key and an `i64` value, 12 cache lines scanned at most.
pub(crate) const PACKED_MAX: usize = 768;

/// A packed buffer: up to 40 bytes in the table's slot itself (two entries of a `u64` user
/// key and an `i64` value, a window's sum, three timers), so that a lookup of a key with few
/// entries does not follow a pointer at all.
pub(crate) type Packed = SmallVec<[u8; 40]>;

/// The entries of one key, sorted by user key.
#[derive(Debug, Clone)]
pub(crate) enum UserEntries {
    /// Records in user-key order in one buffer.
    Packed(Packed),
    /// Many entries, or large ones.
    Tree(BTreeMap<Bytes, Bytes>),
}

impl Default for UserEntries {
    fn default() -> Self {
        UserEntries::Packed(Packed::new())
    }
}

/// Reads a varint at `*at`, moving `*at` past it.
#[inline(always)]
fn read_len(buf: &[u8], at: &mut usize) -> Option<usize> {
    let first = *buf.get(*at)?;
    if first < 0x80 {
        *at += 1;
        return Some(usize::from(first));
    }
    read_long_len(buf, at)
}

#[cold]
#[inline(never)]
fn read_long_len(buf: &[u8], at: &mut usize) -> Option<usize> {
    let mut value = 0usize;
    let mut shift = 0u32;
    loop {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= usize::from(byte & 0x7f).checked_shl(shift)?;
        if byte < 0x80 {
            return Some(value);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
}

#[inline]
fn write_len(out: &mut Record64, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// One record of a packed buffer: where it starts and ends, and its user key and value.
struct Record<'a> {
    start: usize,
    end: usize,
    user_key: &'a [u8],
    value: &'a [u8],
}

/// Whether two short byte strings are equal: user keys are mostly a few bytes, where a call
/// of `memcmp` costs more than the comparison.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>())
        && a.len() == 8
    {
        return x == y;
    }
    if a.len() <= 16 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    a == b
}

/// The byte order of two user keys, without a call of `memcmp` for 8-byte keys.
#[inline(always)]
fn order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.first_chunk::<8>(), b.first_chunk::<8>())
        && a.len() == 8
        && b.len() == 8
    {
        return u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y));
    }
    a.cmp(b)
}

/// Reads the record at `at` (`None` at the end of the buffer).
#[inline(always)]
fn record(buf: &[u8], at: usize) -> Option<Record<'_>> {
    let mut pos = at;
    let ulen = read_len(buf, &mut pos)?;
    let user_key = buf.get(pos..pos.checked_add(ulen)?)?;
    pos += ulen;
    let vlen = read_len(buf, &mut pos)?;
    let value = buf.get(pos..pos.checked_add(vlen)?)?;
    Some(Record {
        start: at,
        end: pos + vlen,
        user_key,
        value,
    })
}

/// Where `user_key` is in a packed buffer: `Ok(record)` when present, `Err(offset)` of the
/// first record after it when not.
#[inline]
fn find<'a>(buf: &'a [u8], user_key: &[u8]) -> Result<Record<'a>, usize> {
    let mut at = 0;
    while let Some(r) = record(buf, at) {
        match order(r.user_key, user_key) {
            std::cmp::Ordering::Less => at = r.end,
            std::cmp::Ordering::Equal => return Ok(r),
            std::cmp::Ordering::Greater => return Err(at),
        }
    }
    Err(buf.len())
}

/// Grows `buf` to hold `more` bytes, by half its length at least (fewer, smaller
/// reallocations than doubling: a key's buffer ends close to its size).
#[inline]
fn reserve(buf: &mut Packed, more: usize) {
    if buf.capacity() - buf.len() < more {
        buf.reserve_exact(more.max(buf.len() / 2).max(16));
    }
}

/// One encoded record, on the stack when small.
type Record64 = SmallVec<[u8; 64]>;

fn encoded(user_key: &[u8], value: &[&[u8]]) -> Record64 {
    let mut out = Record64::new();
    write_len(&mut out, user_key.len());
    out.extend_from_slice(user_key);
    write_len(&mut out, value.iter().map(|v| v.len()).sum());
    for v in value {
        out.extend_from_slice(v);
    }
    out
}

/// Replaces `start..end` of `buf` (an empty range for an insertion) with `record`.
fn splice(buf: &mut Packed, start: usize, end: usize, record: &[u8]) {
    buf.drain(start..end);
    reserve(buf, record.len());
    buf.insert_from_slice(start, record);
}

impl UserEntries {
    /// The value of `user_key`.
    #[inline]
    pub(crate) fn get(&self, user_key: &[u8]) -> Option<&[u8]> {
        match self {
            UserEntries::Packed(buf) => {
                // Equality only: no order is needed to find a present key.
                let mut at = 0;
                while let Some(r) = record(buf, at) {
                    if same(r.user_key, user_key) {
                        return Some(r.value);
                    }
                    at = r.end;
                }
                None
            }
            UserEntries::Tree(tree) => tree.get(user_key).map(SmallVec::as_slice),
        }
    }

    /// Sets `user_key` to `value`.
    pub(crate) fn set(&mut self, user_key: &[u8], value: &[u8]) {
        match self {
            UserEntries::Packed(buf) => {
                match find(buf, user_key) {
                    Ok(r) if r.value.len() == value.len() => {
                        let from = r.end - value.len();
                        let end = r.end;
                        if let Some(slot) = buf.get_mut(from..end) {
                            slot.copy_from_slice(value);
                        }
                    }
                    Ok(r) => {
                        let (start, end) = (r.start, r.end);
                        splice(buf, start, end, &encoded(user_key, &[value]));
                    }
                    Err(at) => splice(buf, at, at, &encoded(user_key, &[value])),
                }
                self.spill();
            }
            UserEntries::Tree(tree) => match tree.get_mut(user_key) {
                Some(slot) => {
                    slot.clear();
                    slot.extend_from_slice(value);
                }
                None => {
                    tree.insert(Bytes::from_slice(user_key), Bytes::from_slice(value));
                }
            },
        }
    }

    /// Appends `operand` to the value of `user_key` (sets it when absent).
    pub(crate) fn append(&mut self, user_key: &[u8], operand: &[u8]) {
        match self {
            UserEntries::Packed(buf) => {
                let (start, end, record) = match find(buf, user_key) {
                    Ok(r) => (r.start, r.end, encoded(user_key, &[r.value, operand])),
                    Err(at) => (at, at, encoded(user_key, &[operand])),
                };
                splice(buf, start, end, &record);
                self.spill();
            }
            UserEntries::Tree(tree) => match tree.get_mut(user_key) {
                Some(slot) => slot.extend_from_slice(operand),
                None => {
                    tree.insert(Bytes::from_slice(user_key), Bytes::from_slice(operand));
                }
            },
        }
    }

    /// Removes `user_key`.
    pub(crate) fn remove(&mut self, user_key: &[u8]) {
        match self {
            UserEntries::Packed(buf) => {
                if let Ok(r) = find(buf, user_key) {
                    let (start, end) = (r.start, r.end);
                    buf.drain(start..end);
                }
            }
            UserEntries::Tree(tree) => {
                tree.remove(user_key);
            }
        }
    }

    /// Moves packed entries past [`PACKED_MAX`] bytes into a tree.
    fn spill(&mut self) {
        if let UserEntries::Packed(buf) = self
            && buf.len() > PACKED_MAX
        {
            let tree = Iter::Packed { buf, at: 0 }
                .map(|(u, v)| (Bytes::from_slice(u), Bytes::from_slice(v)))
                .collect();
            *self = UserEntries::Tree(tree);
        }
    }

    /// Whether the key has no entries.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            UserEntries::Packed(buf) => buf.is_empty(),
            UserEntries::Tree(tree) => tree.is_empty(),
        }
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        match self {
            UserEntries::Packed(_) => self.iter().count(),
            UserEntries::Tree(tree) => tree.len(),
        }
    }

    /// The entries in user-key order.
    #[inline]
    pub(crate) fn iter(&self) -> Iter<'_> {
        match self {
            UserEntries::Packed(buf) => Iter::Packed { buf, at: 0 },
            UserEntries::Tree(tree) => Iter::Tree(tree.iter()),
        }
    }

    /// Whether the entries are packed into one buffer.
    #[cfg(test)]
    pub(crate) fn is_packed(&self) -> bool {
        matches!(self, UserEntries::Packed(_))
    }
}

/// The entries of a key in user-key order.
pub(crate) enum Iter<'a> {
    Packed { buf: &'a [u8], at: usize },
    Tree(std::collections::btree_map::Iter<'a, Bytes, Bytes>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Packed { buf, at } => {
                let r = record(buf, *at)?;
                *at = r.end;
                Some((r.user_key, r.value))
            }
            Iter::Tree(it) => it.next().map(|(u, v)| (u.as_slice(), v.as_slice())),
        }
    }
}

impl<'a> IntoIterator for &'a UserEntries {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Set(Vec<u8>, Vec<u8>),
        Append(Vec<u8>, Vec<u8>),
        Remove(Vec<u8>),
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(0u8..4, 0..max)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (bytes(4), prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(u, v)| Op::Set(u, v)),
            (bytes(4), prop::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(u, v)| Op::Append(u, v)),
            bytes(4).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Packed or spilled into a tree, the entries are those of a `BTreeMap` given the
        /// same writes, in the same order.
        #[test]
        fn entries_match_a_btreemap(ops in prop::collection::vec(op(), 0..120)) {
            let mut model = BTreeMap::<Vec<u8>, Vec<u8>>::new();
            let mut entries = UserEntries::default();
            for op in ops {
                match op {
                    Op::Set(u, v) => {
                        entries.set(&u, &v);
                        model.insert(u, v);
                    }
                    Op::Append(u, v) => {
                        entries.append(&u, &v);
                        model.entry(u).or_default().extend_from_slice(&v);
                    }
                    Op::Remove(u) => {
                        entries.remove(&u);
                        model.remove(&u);
                    }
                }
                for (u, v) in &model {
                    prop_assert_eq!(entries.get(u), Some(v.as_slice()));
                }
                prop_assert_eq!(entries.get(b"\x09"), None);
                let listed: Vec<(Vec<u8>, Vec<u8>)> =
                    entries.iter().map(|(u, v)| (u.to_vec(), v.to_vec())).collect();
                let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
                prop_assert_eq!(listed, expected);
                prop_assert_eq!(entries.len(), model.len());
                prop_assert_eq!(entries.is_empty(), model.is_empty());
            }
        }
    }

    #[test]
    fn a_key_with_few_small_entries_stays_packed_and_many_move_to_a_tree() {
        let mut e = UserEntries::default();
        for u in 0u64..10 {
            e.set(&u.to_be_bytes(), &(u as i64).to_le_bytes());
        }
        assert!(e.is_packed());
        // A value of 200 bytes has a two-byte length.
        e.set(b"long", &[7; 200]);
        assert_eq!(e.get(b"long"), Some(&[7u8; 200][..]));
        for u in 10u64..100 {
            e.set(&u.to_be_bytes(), &(u as i64).to_le_bytes());
        }
        assert!(!e.is_packed());
        assert_eq!(e.len(), 101);
        assert_eq!(e.get(&42u64.to_be_bytes()), Some(&42i64.to_le_bytes()[..]));
        let keys: Vec<&[u8]> = e.iter().map(|(u, _)| u).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn lengths_of_every_size_read_back() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 21] {
            let mut buf = Record64::new();
            write_len(&mut buf, len);
            let mut at = 0;
            assert_eq!(read_len(&buf, &mut at), Some(len));
            assert_eq!(at, buf.len());
        }
        // A varint that never ends is no length.
        assert_eq!(read_len(&[0xff; 12], &mut 0), None);
    }
}
