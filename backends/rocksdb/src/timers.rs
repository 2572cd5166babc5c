//! Timers in time order: how a timer state is stored when RocksDB keeps its timers in time
//! order (the default; [`RocksDbOptions::timers_in_memory`](crate::RocksDbOptions) off).
//!
//! Each timer is one row of the state's time-ordered column family (`<state>#by-time`), and
//! nowhere else, as in Flink's RocksDB timer service. The row's key is the key group, the
//! domain tag and the timestamp (the first 9 bytes of the timer's user key), the canonical key
//! and the namespace: within a key group, RocksDB's byte order is Flink's timer order
//! (timestamp, key, namespace). The row's value is the canonical key's length (LEB128), which
//! splits the key from the namespace again. The state's own column family stays empty. Firing
//! reads a key group's rows in order and deletes each fired timer once; what reads timers by
//! key (a key's list, count and clear, a checkpoint) reads its key group's rows.

use rocksdb::{ColumnFamily, DB, ReadOptions};
use statewright_core::backend::EntryVisitor;
use statewright_core::{Error, Result};

use crate::{db_error, prefix_end, put_len, scan_options};

/// The domain tag and the timestamp at the front of a timer's user key.
const HEAD: usize = 9;

fn malformed(name: &str) -> Error {
    Error::Backend {
        backend: "rocksdb",
        message: format!("malformed timer row in column family `{name}`"),
    }
}

/// A timer's row key: the key group, the domain tag and the timestamp (the first 9 bytes of
/// the stored user key), the canonical key, the namespace. Canonical keys and namespaces are
/// prefix-free, so the byte order is (domain, timestamp, key, namespace) within a key group.
pub(crate) fn row_key(out: &mut Vec<u8>, key: &[u8], user_key: &[u8]) -> Result<()> {
    let (Some((kg, canonical)), Some((head, namespace))) = (
        key.split_first_chunk::<2>(),
        user_key.split_at_checked(HEAD),
    ) else {
        return Err(Error::Backend {
            backend: "rocksdb",
            message: "a timer's user key holds a domain and a timestamp (9 bytes)".into(),
        });
    };
    out.clear();
    out.extend_from_slice(kg);
    out.extend_from_slice(head);
    out.extend_from_slice(canonical);
    out.extend_from_slice(namespace);
    Ok(())
}

/// A timer's row value: the length of the canonical key of `key` (key group and canonical key).
pub(crate) fn row_value(out: &mut Vec<u8>, key: &[u8]) {
    out.clear();
    put_len(out, key.len().saturating_sub(2));
}

/// A timer row taken apart.
pub(crate) struct Parts<'a> {
    /// The key group, 2 bytes.
    pub(crate) key_group: &'a [u8],
    /// The domain tag and the timestamp.
    pub(crate) head: &'a [u8],
    /// The canonical key.
    pub(crate) key: &'a [u8],
    /// The namespace.
    pub(crate) namespace: &'a [u8],
}

impl Parts<'_> {
    /// The state key: key group and canonical key.
    pub(crate) fn state_key(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.key_group);
        out.extend_from_slice(self.key);
    }

    /// The stored user key: domain tag, timestamp, namespace.
    pub(crate) fn user_key(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(self.head);
        out.extend_from_slice(self.namespace);
    }
}

/// The LEB128 number that is the whole of `bytes`.
fn whole_len(bytes: &[u8]) -> Option<usize> {
    let (mut len, mut shift) = (0usize, 0u32);
    for (i, &b) in bytes.iter().enumerate() {
        len |= usize::from(b & 0x7F).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return (i + 1 == bytes.len()).then_some(len);
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    None
}

/// Takes a timer row apart; `None` when it is not one.
pub(crate) fn parts<'a>(row: &'a [u8], value: &[u8]) -> Option<Parts<'a>> {
    let (key_group, rest) = row.split_at_checked(2)?;
    let (head, rest) = rest.split_at_checked(HEAD)?;
    let (key, namespace) = rest.split_at_checked(whole_len(value)?)?;
    Some(Parts {
        key_group,
        head,
        key,
        namespace,
    })
}

/// Visits the timer rows of one key (`key`: key group and canonical key), in the order of
/// their user keys (domain, timestamp, namespace), as `(row key, parts)`.
pub(crate) fn for_each_of_key(
    db: &DB,
    cf: &ColumnFamily,
    name: &str,
    key: &[u8],
    visit: &mut dyn FnMut(&[u8], &Parts<'_>) -> Result<()>,
) -> Result<()> {
    let (Some(group), Some(canonical)) = (key.get(..2), key.get(2..)) else {
        return Err(Error::Backend {
            backend: "rocksdb",
            message: "a key must start with its 2-byte key group".into(),
        });
    };
    let mut read = ReadOptions::default();
    if let Some(end) = prefix_end(group) {
        read.set_iterate_upper_bound(end);
    }
    let mut it = db.raw_iterator_cf_opt(cf, read);
    it.seek(group);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(group) {
            break;
        }
        let p = parts(k, v).ok_or_else(|| malformed(name))?;
        if p.key == canonical {
            visit(k, &p)?;
        }
        it.next();
    }
    it.status().map_err(|e| db_error(&e))
}

/// Visits every timer of a time-ordered column family as `(key, user key, empty value)`, in
/// the column's order.
pub(crate) fn visit_all(
    db: &DB,
    cf: &ColumnFamily,
    name: &str,
    visit: &mut EntryVisitor<'_>,
) -> Result<()> {
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    let (mut key, mut user_key) = (Vec::new(), Vec::new());
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let p = parts(k, v).ok_or_else(|| malformed(name))?;
        p.state_key(&mut key);
        p.user_key(&mut user_key);
        visit(&key, &user_key, &[])?;
        it.next();
    }
    it.status().map_err(|e| db_error(&e))
}

/// Visits every timer of a time-ordered column family in the canonical order of snapshots
/// (key group, canonical key, user key): the column is read one key group at a time, and each
/// group's timers are sorted before they are visited. Memory holds one key group's timers.
pub(crate) fn visit_canonical(
    db: &DB,
    cf: &ColumnFamily,
    name: &str,
    visit: &mut EntryVisitor<'_>,
) -> Result<()> {
    let mut it = db.raw_iterator_cf_opt(cf, scan_options());
    it.seek_to_first();
    // One key group's timers: each is its key group, canonical key and user key, one after
    // the other in `bytes`, with where it starts, the length of its state key, where it ends.
    // Canonical keys are prefix-free, so the byte order of the three together is the order of
    // (key, user key).
    let mut bytes = Vec::new();
    let mut rows: Vec<(usize, usize, usize)> = Vec::new();
    let mut group: Option<[u8; 2]> = None;
    let flush = |bytes: &mut Vec<u8>,
                 rows: &mut Vec<(usize, usize, usize)>,
                 visit: &mut EntryVisitor<'_>|
     -> Result<()> {
        let all = &bytes[..];
        rows.sort_unstable_by(|a, b| all[a.0..a.2].cmp(&all[b.0..b.2]));
        for &(start, key_len, end) in rows.iter() {
            visit(
                &all[start..start + key_len],
                &all[start + key_len..end],
                &[],
            )?;
        }
        bytes.clear();
        rows.clear();
        Ok(())
    };
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let p = parts(k, v).ok_or_else(|| malformed(name))?;
        let kg = p
            .key_group
            .first_chunk::<2>()
            .copied()
            .ok_or_else(|| malformed(name))?;
        if group.is_some_and(|g| g != kg) {
            flush(&mut bytes, &mut rows, visit)?;
        }
        group = Some(kg);
        let start = bytes.len();
        bytes.extend_from_slice(p.key_group);
        bytes.extend_from_slice(p.key);
        let key_len = bytes.len() - start;
        bytes.extend_from_slice(p.head);
        bytes.extend_from_slice(p.namespace);
        rows.push((start, key_len, bytes.len()));
        it.next();
    }
    it.status().map_err(|e| db_error(&e))?;
    flush(&mut bytes, &mut rows, visit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_back_into_key_and_user_key() {
        let key = [0u8, 7, 1, 2, 3];
        let user_key = [0u8, 0x80, 0, 0, 0, 0, 0, 0, 5, 9, 9];
        let (mut row, mut value) = (Vec::new(), Vec::new());
        row_key(&mut row, &key, &user_key).unwrap();
        row_value(&mut value, &key);
        assert_eq!(row, [0, 7, 0, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 9, 9]);
        let p = parts(&row, &value).unwrap();
        let (mut k, mut u) = (Vec::new(), Vec::new());
        p.state_key(&mut k);
        p.user_key(&mut u);
        assert_eq!((k.as_slice(), u.as_slice()), (&key[..], &user_key[..]));
        // A value that is not one length, or a length past the row, is no timer row.
        assert!(parts(&row, &[]).is_none());
        assert!(parts(&row, &[3, 0]).is_none());
        assert!(parts(&row, &[6]).is_none());
        assert!(parts(&row[..5], &value).is_none());
        // A long key's length takes two bytes.
        let long = vec![1u8; 302];
        row_value(&mut value, &long);
        assert_eq!(whole_len(&value), Some(300));
        assert!(row_key(&mut row, &key, &user_key[..8]).is_err());
    }
}
