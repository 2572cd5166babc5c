//! The table of a state that holds one value per key (value, list, reducing and aggregating
//! states).
//!
//! A state keeps one hash table of its entries, keyed by the canonical key alone. The key-group
//! prefix of a key needs no storage: it is the key group of the canonical key under the
//! operator's maximum parallelism (as [`Bound::key`] builds it), checked where an entry is
//! created, merged or removed and computed again when entries are listed. Keeping one table,
//! where Flink keeps one per key group, means a lookup does not wait for the key-group hash
//! before it can start: the group selected the table, so every read waited for XXH3 and then
//! for the group's table header, where now the probe starts from the canonical key's own hash
//! (measured in `bench/ANALYSIS.md`: a read-modify-write on 128 group tables took 38 ns against
//! 24 ns on one table, with the same rows).
//!
//! When every key and every value of a state has one length (a `u64` key and an `i64` value:
//! 8 + 8 bytes), the table holds them inline as rows of 16 to 64 bytes, so a lookup reads one
//! row in place, as a `HashMap<u64, i64>` does, instead of following a pointer to a boxed key
//! and another to a value vector: at 100,000 keys that is the difference between a working set
//! that fits the processor's cache and one that does not. A state whose lengths vary (strings,
//! lists) keeps a boxed key and a value vector per entry; a state with fixed rows moves to
//! those, once, at the first key or value of another length.
//!
//! The cost of one table: it grows in one step, copying every entry, where per-group tables
//! grew 1/128 of the entries at a time. The copy is amortised (hashbrown doubles the table), so
//! it shows as a pause at each doubling, not in throughput.
//!
//! [`Bound::key`]: statewright_core::Bound::key

use std::hash::{BuildHasher, Hasher as _};

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, OccupiedEntry};

use statewright_core::backend::ValueUpdate;
use statewright_core::keygroup::key_group;
use statewright_core::{EntryHint, Error, Result};

type Hasher = foldhash::fast::SeedableRandomState;

/// A canonical key in a general row.
type InlineKey = smallvec::SmallVec<[u8; 16]>;

/// A state's entries, in the column's layout.
#[derive(Debug)]
enum Rows {
    R16(HashTable<[u8; 16]>),
    R24(HashTable<[u8; 24]>),
    R32(HashTable<Aligned32>),
    R48(HashTable<[u8; 48]>),
    R64(HashTable<Aligned64>),
    /// Canonical key (inline up to 16 bytes: a lookup compares it in the slot, not behind a
    /// pointer) and value of any length.
    General(HashTable<(InlineKey, Vec<u8>)>),
}

/// Applies `$fixed` to a fixed-row table or `$general` to a general one.
macro_rules! with_rows {
    ($rows:expr, $t:ident => $fixed:expr, $g:ident => $general:expr $(,)?) => {
        match $rows {
            Rows::R16($t) => $fixed,
            Rows::R24($t) => $fixed,
            Rows::R32($t) => $fixed,
            Rows::R48($t) => $fixed,
            Rows::R64($t) => $fixed,
            Rows::General($g) => $general,
        }
    };
}

/// How a column stores its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Nothing stored since the column was created or last emptied: the next put chooses.
    Open,
    /// Fixed rows of `width` bytes: the canonical key (`key_len` bytes stored), then the value.
    ///
    /// A namespaced table's row keys end with their key's length ([`RowKey::build`]), the
    /// same byte in every row of a state whose keys have one length: the rows leave it out
    /// (`tail`; `key_len` counts the bytes before it), so that a `u64` key, a window and an `i64` sum make rows of 32 bytes instead
    /// of 48, a third less memory to fill and to move as the table grows, and a row that never
    /// straddles two cache lines.
    Fixed {
        width: usize,
        key_len: usize,
        value_len: usize,
        tail: Option<u8>,
    },
    General,
}

const WIDTHS: [usize; 5] = [16, 24, 32, 48, 64];

impl Layout {
    fn rows(self) -> Rows {
        match self {
            Layout::Fixed { width: 16, .. } => Rows::R16(HashTable::new()),
            Layout::Fixed { width: 24, .. } => Rows::R24(HashTable::new()),
            Layout::Fixed { width: 32, .. } => Rows::R32(HashTable::new()),
            Layout::Fixed { width: 48, .. } => Rows::R48(HashTable::new()),
            Layout::Fixed { width: 64, .. } => Rows::R64(HashTable::new()),
            _ => Rows::General(HashTable::new()),
        }
    }

    fn lens(self) -> (usize, usize) {
        match self {
            Layout::Fixed {
                key_len, value_len, ..
            } => (key_len, value_len),
            _ => (0, 0),
        }
    }

    /// The part of canonical row key `canonical` that fixed rows store (without the `tail`
    /// they leave out), when it is a key of this layout's rows; `None` otherwise.
    #[inline(always)]
    fn stored(self, canonical: &[u8]) -> Option<&[u8]> {
        match self {
            Layout::Fixed {
                key_len,
                tail: None,
                ..
            } => (canonical.len() == key_len).then_some(canonical),
            Layout::Fixed {
                key_len,
                tail: Some(tail),
                ..
            } => match canonical.split_last() {
                Some((&last, rest)) if last == tail && rest.len() == key_len => Some(rest),
                _ => None,
            },
            _ => None,
        }
    }

    /// The canonical row key of a fixed row's stored key (its `tail` put back, in `buf`).
    #[inline]
    fn row_key<'a>(self, stored: &'a [u8], buf: &'a mut Vec<u8>) -> &'a [u8] {
        match self {
            Layout::Fixed {
                tail: Some(tail), ..
            } => {
                buf.clear();
                buf.extend_from_slice(stored);
                buf.push(tail);
                buf
            }
            _ => stored,
        }
    }
}

/// Fixed rows aligned to their width (32 or 64 bytes), so that a row never straddles two cache
/// lines: a new row is one line to fetch for writing, not two.
macro_rules! aligned_row {
    ($name:ident, $width:literal) => {
        #[derive(Debug, Clone, Copy)]
        #[repr(C, align($width))]
        struct $name([u8; $width]);

        impl std::ops::Deref for $name {
            type Target = [u8; $width];
            #[inline(always)]
            fn deref(&self) -> &[u8; $width] {
                &self.0
            }
        }

        impl std::ops::DerefMut for $name {
            #[inline(always)]
            fn deref_mut(&mut self) -> &mut [u8; $width] {
                &mut self.0
            }
        }

        impl AsRef<[u8]> for $name {
            #[inline(always)]
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl AsMut<[u8]> for $name {
            #[inline(always)]
            fn as_mut(&mut self) -> &mut [u8] {
                &mut self.0
            }
        }

        impl Row for $name {
            const WIDTH: usize = $width;

            fn zeroed() -> Self {
                Self([0; $width])
            }
        }
    };
}

aligned_row!(Aligned32, 32);
aligned_row!(Aligned64, 64);

/// A fixed-size row: canonical key, then value, then zero padding. When the padding has 8
/// bytes to spare, the row's last 8 bytes hold its key's hash ([`Row::keeps_hash`]), so that a
/// table that grows moves its rows without hashing their keys again: a state that creates a
/// row per record (a windowed add in a new window) hashes each key about three times over the
/// row's life (its own lookup and two moves), each a fifth of the add's instructions for a
/// 25-byte key and namespace in rows of 48 bytes. A row with no bytes to spare (a `u64` key, a
/// window and an `i64` sum in 32) hashes its key again when it moves.
trait Row: AsRef<[u8]> + AsMut<[u8]> + Sized {
    /// The row's width.
    const WIDTH: usize;

    fn zeroed() -> Self;

    /// Whether rows of these lengths keep their key's hash in their last 8 bytes.
    #[inline(always)]
    fn keeps_hash(key_len: usize, value_len: usize) -> bool {
        key_len + value_len + 8 <= Self::WIDTH
    }

    /// The hash a row keeps ([`keeps_hash`](Self::keeps_hash)), or its key's hash.
    #[inline(always)]
    fn hash_of(&self, hasher: &RowHasher, key_len: usize, value_len: usize) -> u64 {
        let r = self.as_ref();
        match r.last_chunk::<8>() {
            Some(kept) if Self::keeps_hash(key_len, value_len) => u64::from_ne_bytes(*kept),
            // Inline, as a table that grows calls this for every row it moves.
            _ => hash_inline(hasher, r.get(..key_len).unwrap_or(r)),
        }
    }

    /// A new row of `key` and `value`, keeping `hash` when it has room for it.
    #[inline(always)]
    fn new_row(key: &[u8], value: &[u8], hash: u64) -> Self {
        let mut r = Self::zeroed();
        let row = r.as_mut();
        copy_key(row, key);
        if let Some(dst) = row.get_mut(key.len()..) {
            copy(dst, value);
        }
        if Self::keeps_hash(key.len(), value.len())
            && let Some(kept) = row.last_chunk_mut::<8>()
        {
            *kept = hash.to_ne_bytes();
        }
        r
    }
}

impl<const W: usize> Row for [u8; W] {
    const WIDTH: usize = W;

    fn zeroed() -> Self {
        [0; W]
    }
}

/// `a == b`, without a call to `memcmp` for the common key lengths: the comparison is where a
/// lookup first touches its row.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    match (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        (Some(x), Some(y)) if a.len() == 8 && b.len() == 8 => x == y,
        _ => same_long(a, b),
    }
}

/// [`same`] for keys of any length but 8, out of line: the 8-byte form stays small.
#[inline(never)]
fn same_long(a: &[u8], b: &[u8]) -> bool {
    if a.len() == b.len() && (9..=64).contains(&a.len()) {
        same_words(a, b)
    } else {
        a == b
    }
}

/// `a == b` for slices of one length, compared as 8-byte words and then byte by byte. A row
/// key just built ([`RowKey::build`]) is read with loads of the sizes and places it was
/// written with, so each load takes its bytes from the store before it; a `memcmp`'s wider
/// loads over several stores wait for all of them to reach the cache.
#[inline(always)]
fn same_words(a: &[u8], b: &[u8]) -> bool {
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    for (p, q) in x.by_ref().zip(y.by_ref()) {
        if p.first_chunk::<8>() != q.first_chunk::<8>() {
            return false;
        }
    }
    x.remainder() == y.remainder()
}

/// The table hash of a canonical key. An 8-byte key (`u64`, `i64`, ...) is hashed as one word,
/// without the length dispatch of a byte-string hash; every hash of a table goes through here,
/// so the two forms never meet in one lookup.
///
/// The word is read big-endian, as the integer the canonical bytes encode, so that it is hashed
/// as a `HashMap<u64, _>` hashes its keys. Integer keys vary most in their last canonical
/// bytes; read little-endian, those land in the word's high bits, which foldhash's one
/// multiply spreads poorly into the low bits that pick a bucket: with keys 0 to 99,999 a lookup
/// probed 2.1 bucket groups on average instead of 1.0.
///
/// A key of 9 to 64 bytes (a key and a namespace: 25 bytes for a `u64` and a window) is hashed
/// as its 8-byte words, two at a time, and then the bytes after the last whole word and the
/// length ([`hash_words`]): two multiplies for 25 bytes, where foldhash's byte-string hash of a
/// key over 16 bytes took a tenth of a windowed add's instructions and its word hash one
/// multiply per word. The loads are those of [`same_words`], for the same reason.
#[inline(always)]
fn hash(hasher: &RowHasher, canonical: &[u8]) -> u64 {
    match canonical.first_chunk::<8>() {
        Some(word) if canonical.len() == 8 => hash_word(hasher, word),
        _ => hash_long(hasher, canonical),
    }
}

/// [`hash`], inline for every length.
#[inline(always)]
fn hash_inline(hasher: &RowHasher, canonical: &[u8]) -> u64 {
    match canonical.first_chunk::<8>() {
        Some(word) if canonical.len() == 8 => hash_word(hasher, word),
        _ => hash_bytes(hasher, canonical),
    }
}

/// [`hash`] of an 8-byte key.
#[inline(always)]
fn hash_word(hasher: &RowHasher, word: &[u8; 8]) -> u64 {
    let mut h = hasher.words.build_hasher();
    h.write_u64(u64::from_be_bytes(*word));
    h.finish()
}

/// [`hash`] of a key of any length but 8, out of line: the 8-byte form stays small enough to
/// inline into every lookup.
#[inline(never)]
fn hash_long(hasher: &RowHasher, canonical: &[u8]) -> u64 {
    hash_bytes(hasher, canonical)
}

/// [`hash`] of a key of any length but 8.
#[inline(always)]
fn hash_bytes(hasher: &RowHasher, canonical: &[u8]) -> u64 {
    if (9..=64).contains(&canonical.len()) {
        hash_words(&hasher.seeds, canonical)
    } else {
        hasher.words.hash_one(canonical)
    }
}

/// The hash of a key of 9 to 64 bytes: each pair of 8-byte words (big-endian, as [`hash`]
/// reads a word) folded into the accumulator with one 64 x 64 -> 128-bit multiply, the
/// remaining word (or a seed) with the bytes after the last whole word and the length in one
/// more: foldhash's folded multiply, over two words at a time.
#[inline(always)]
fn hash_words(seeds: &[u64; 4], key: &[u8]) -> u64 {
    // The lengths of a namespaced row's key (a `u64` key and a window: 24 stored bytes; a
    // `u64` key and an `i64` namespace: 16; two windows' worth: 32), in straight lines: the
    // loop's general form costs a namespaced write more than its multiplies. Each gives what
    // the loop below gives for its length.
    let be = |w: &[u8; 8]| u64::from_be_bytes(*w);
    let pair = |acc: u64, a: &[u8; 8], b: &[u8; 8]| folded_multiply(acc ^ be(a), be(b) ^ seeds[1]);
    if let Some((ab, rest)) = key.split_first_chunk::<16>()
        && let Some((a, b)) = ab.split_first_chunk::<8>()
        && let Ok(b) = <&[u8; 8]>::try_from(b)
    {
        let acc = pair(seeds[0], a, b);
        match rest.len() {
            0 => return folded_multiply(acc ^ seeds[2], 16 ^ seeds[3]),
            8 => {
                if let Some(c) = rest.first_chunk::<8>() {
                    return folded_multiply(acc ^ be(c), 24 ^ seeds[3]);
                }
            }
            16 => {
                if let Some((c, d)) = rest.split_first_chunk::<8>()
                    && let Ok(d) = <&[u8; 8]>::try_from(d)
                {
                    return folded_multiply(pair(acc, c, d) ^ seeds[2], 32 ^ seeds[3]);
                }
            }
            _ => {}
        }
    }
    hash_words_loop(seeds, key)
}

/// [`hash_words`] of any length of 9 to 64 bytes.
#[inline(always)]
fn hash_words_loop(seeds: &[u64; 4], key: &[u8]) -> u64 {
    let len = key.len();
    let word = |at: usize| {
        key.get(at..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map_or(0, |w| u64::from_be_bytes(*w))
    };
    let mut acc = seeds[0];
    let mut at = 0;
    while at + 16 <= len {
        acc = folded_multiply(acc ^ word(at), word(at + 8) ^ seeds[1]);
        at += 16;
    }
    let last = if at + 8 <= len {
        at += 8;
        word(at - 8)
    } else {
        seeds[2]
    };
    let tail = key
        .get(at..)
        .unwrap_or_default()
        .iter()
        .fold(len as u64, |acc, &b| (acc << 8) | u64::from(b));
    folded_multiply(acc ^ last, tail ^ seeds[3])
}

/// The 128-bit product of `x` and `y`, its halves xor-ed (foldhash's and wyhash's mixing step).
#[inline(always)]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    // The halves of the product, each 64 bits by construction.
    (full as u64) ^ ((full >> 64) as u64)
}

/// A table's hasher: foldhash for 8-byte keys and longer byte strings, and the seeds of
/// [`hash_words`], drawn from it when the table is made.
#[derive(Debug, Clone)]
pub(crate) struct RowHasher {
    words: Hasher,
    seeds: [u64; 4],
}

impl RowHasher {
    fn new(words: Hasher) -> Self {
        let seeds = [1u64, 2, 3, 4].map(|i| words.hash_one(i));
        Self { words, seeds }
    }
}

/// The hint of a read that found no entry.
const ABSENT: EntryHint = EntryHint::new(u64::MAX);

/// The hint for bucket `index` (the position is one more, as 0 is no hint).
#[inline]
fn bucket_hint(index: usize) -> EntryHint {
    EntryHint::new((index as u64).wrapping_add(1))
}

/// The bucket a hint names, if any.
#[inline]
fn hinted_bucket(hint: EntryHint) -> Option<usize> {
    hint.position()
        .checked_sub(1)
        .and_then(|i| usize::try_from(i).ok())
}

/// The canonical key of a backend key (after its 2-byte key-group prefix), if it has a prefix.
#[inline(always)]
pub(crate) fn canonical_of(key: &[u8]) -> Option<&[u8]> {
    key.get(2..)
}

/// The key group and canonical bytes of a backend key whose prefix is the key group of its
/// canonical bytes; an error for any other.
pub(crate) fn checked_key(key: &[u8], max_parallelism: u16) -> Result<(u16, &[u8])> {
    let canonical = canonical(key)?;
    checked_group(key, canonical, canonical, max_parallelism)
}

/// `(key group, canonical)` when `key`'s prefix is the key group of `group_bytes` (the canonical
/// key, or its part that names the group); an error otherwise.
#[inline(always)]
fn checked_group<'k>(
    key: &[u8],
    canonical: &'k [u8],
    group_bytes: &[u8],
    max_parallelism: u16,
) -> Result<(u16, &'k [u8])> {
    let expected = key_group(group_bytes, max_parallelism);
    match key.first_chunk::<2>() {
        Some(prefix) if *prefix == expected.to_be_bytes() => Ok((expected, canonical)),
        _ => Err(wrong_group(key, expected, max_parallelism)),
    }
}

#[cold]
#[inline(never)]
fn wrong_group(key: &[u8], expected: u16, max_parallelism: u16) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!(
            "a key's prefix names key group {}, but its canonical bytes belong to key \
             group {expected} (maximum parallelism {max_parallelism})",
            key.first_chunk::<2>().map_or(0, |p| u16::from_be_bytes(*p)),
        ),
    }
}

/// The canonical key of a backend key.
#[inline]
fn canonical(key: &[u8]) -> Result<&[u8]> {
    match canonical_of(key) {
        Some(canonical) => Ok(canonical),
        None => Err(no_prefix(key)),
    }
}

#[cold]
fn no_prefix(key: &[u8]) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!(
            "a key of {} byte(s) has no key-group prefix (2 bytes)",
            key.len()
        ),
    }
}

/// The entries of one state.
#[derive(Debug)]
pub(crate) struct FlatTable {
    hasher: RowHasher,
    layout: Layout,
    /// Whether fixed rows may be chosen: not for list states, whose values grow by merges.
    fixed_rows: bool,
    /// The operator's maximum parallelism: an entry's key group is the key group of its
    /// canonical key under it.
    max_parallelism: u16,
    /// Whether the rows are keyed by a key and a namespace ([`RowKey::build`]): the key group
    /// is then the key group of the key's part.
    spaced: bool,
    rows: Rows,
    /// Where the last row [`read_modify_write`](Self::read_modify_write) wrote lies.
    anchor: Anchor,
}

/// A bucket of fixed rows and where its row lies, with the table's bucket count then: the
/// rows of a table are one array (bucket `i` at the array's end minus `i + 1` rows), so the
/// row of any bucket of the same array is found from it.
#[derive(Debug, Default, Clone, Copy)]
struct Anchor {
    buckets: usize,
    index: usize,
    addr: usize,
}

impl Anchor {
    /// Asks for the row of the bucket where a probe for `hash` starts (where a new row of a
    /// table not too full goes), so that it comes while the probe waits for the bucket's
    /// control bytes, instead of after them.
    #[inline(always)]
    fn fetch<R>(&self, hash: u64, buckets: usize) {
        if self.buckets == buckets && buckets > 0 {
            let target = (hash as usize) & (buckets - 1);
            let addr = self
                .addr
                .wrapping_add(self.index.wrapping_sub(target).wrapping_mul(size_of::<R>()));
            // Buckets after `target` lie below it: the slot a new row takes is the first free
            // one of the probe's group, most often among the next few.
            for line in 0..PREFETCHED_LINES {
                prefetch_addr(addr.wrapping_sub(line * 64));
            }
        }
    }

    /// Notes the row an insert just wrote. The bucket count is read after the insert: the
    /// probe may have grown the table.
    #[inline(always)]
    fn inserted<R>(&mut self, e: OccupiedEntry<'_, R>) {
        let (index, addr) = (e.bucket_index(), std::ptr::from_ref(e.get()) as usize);
        *self = Self {
            buckets: e.into_table().num_buckets(),
            index,
            addr,
        };
    }

    #[inline(always)]
    fn note<R>(&mut self, buckets: usize, index: usize, row: &R) {
        *self = Self {
            buckets,
            index,
            addr: std::ptr::from_ref(row) as usize,
        };
    }
}

const PREFETCHED_LINES: usize = 4;

/// Asks the processor for the cache line of `addr` without waiting for it.
#[inline(always)]
fn prefetch_addr(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        #[allow(unsafe_code)]
        // SAFETY: a prefetch reads nothing the program sees and cannot fault, whatever the
        // address; SSE, which it needs, is part of every x86-64 processor.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(std::ptr::without_provenance::<i8>(addr));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

impl FlatTable {
    pub(crate) fn new(fixed_rows: bool, max_parallelism: u16, hasher: Hasher) -> Self {
        Self {
            hasher: RowHasher::new(hasher),
            layout: Layout::Open,
            fixed_rows,
            max_parallelism,
            spaced: false,
            rows: Rows::General(HashTable::new()),
            anchor: Anchor::default(),
        }
    }

    /// A table whose row keys are [`RowKey::build`]s: `(key, namespace)` pairs, grouped by
    /// the key.
    pub(crate) fn namespaced(mut self) -> Self {
        self.spaced = true;
        self
    }

    /// The bytes of a canonical row key that name its key group.
    #[inline]
    fn group_bytes<'k>(&self, canonical: &'k [u8]) -> &'k [u8] {
        if self.spaced {
            split_spaced(canonical).map_or(canonical, |(key, _)| key)
        } else {
            canonical
        }
    }

    /// Calls `visit(canonical row key, value)` for every entry, in the table's order.
    pub(crate) fn for_each_row(&self, mut visit: impl FnMut(&[u8], &[u8])) {
        let (kl, vl) = self.layout.lens();
        let mut buf = key_buffer(kl);
        with_rows!(&self.rows,
            t => for r in t {
                visit(self.layout.row_key(&r[..kl], &mut buf), &r[kl..kl + vl]);
            },
            g => for (k, v) in g {
                visit(k, v);
            },
        );
    }

    pub(crate) fn len(&self) -> usize {
        with_rows!(&self.rows, t => t.len(), g => g.len())
    }

    #[inline]
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        let mut unused = EntryHint::NONE;
        self.get_hinted(key, &mut unused)
    }

    /// [`get`](Self::get), leaving the entry's bucket in `hint` for
    /// [`put_hinted`](Self::put_hinted).
    #[inline]
    pub(crate) fn get_hinted(&self, key: &[u8], hint: &mut EntryHint) -> Result<Option<&[u8]>> {
        // Until found: the write that follows will most likely insert.
        *hint = ABSENT;
        let canonical = canonical(key)?;
        let (kl, vl) = self.layout.lens();
        Ok(with_rows!(&self.rows,
            t => {
                let Some(stored) = self.layout.stored(canonical) else {
                    return Ok(None);
                };
                let h = hash(&self.hasher, stored);
                let Some(index) = t.find_bucket_index(h, |r| same(&r[..kl], stored)) else {
                    return Ok(None);
                };
                *hint = bucket_hint(index);
                t.get_bucket(index).and_then(|r| r.get(kl..kl + vl))
            },
            g => {
                let h = hash(&self.hasher, canonical);
                let found = g.find(h, |(k, _)| same(k, canonical)).map(|(_, v)| v.as_slice());
                if found.is_some() {
                    *hint = EntryHint::NONE;
                }
                found
            },
        ))
    }

    /// Makes the layout hold canonical row key `canonical` and a value of `value_len` bytes.
    #[inline]
    fn prepare(&mut self, canonical: &[u8], value_len: usize) {
        match self.layout {
            Layout::Fixed { value_len: vl, .. }
                if vl == value_len && self.layout.stored(canonical).is_some() => {}
            Layout::General => {}
            Layout::Open => {
                let (key_len, tail) = match (self.spaced, canonical.split_last()) {
                    (true, Some((&tail, rest))) => (rest.len(), Some(tail)),
                    _ => (canonical.len(), None),
                };
                self.layout = WIDTHS
                    .iter()
                    .find(|&&w| key_len + value_len <= w)
                    .filter(|_| self.fixed_rows)
                    .map_or(Layout::General, |&width| Layout::Fixed {
                        width,
                        key_len,
                        value_len,
                        tail,
                    });
                self.rows = self.layout.rows();
            }
            Layout::Fixed { .. } => self.make_general(),
        }
    }

    /// Moves every entry to general rows (a key or value of another length arrived).
    fn make_general(&mut self) {
        let (kl, vl) = self.layout.lens();
        let (hasher, layout) = (&self.hasher, self.layout);
        let mut buf = key_buffer(kl);
        let general = with_rows!(&mut self.rows,
            t => {
                let mut g = HashTable::with_capacity(t.len());
                for r in t.drain() {
                    let (k, v) = (layout.row_key(&r[..kl], &mut buf), &r[kl..kl + vl]);
                    g.insert_unique(hash(hasher, k), (InlineKey::from_slice(k), v.to_vec()), |(k, _): &(InlineKey, Vec<u8>)| hash(hasher, k));
                }
                g
            },
            g => std::mem::take(g),
        );
        self.rows = Rows::General(general);
        self.layout = Layout::General;
    }

    #[inline]
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let canonical = canonical(key)?;
        if self.replace_fixed(canonical, value) {
            return Ok(());
        }
        self.insert(key, value)
    }

    /// [`put`](Self::put), trying the bucket in `hint` (from [`get_hinted`](Self::get_hinted))
    /// first: when it holds this key in fixed rows of the value's length, the value is replaced
    /// there without a lookup. Any other hint (stale, from another key or table) falls through
    /// to [`put`](Self::put)'s lookup, so it never reaches another entry.
    #[inline(always)]
    pub(crate) fn put_hinted(&mut self, key: &[u8], value: &[u8], hint: EntryHint) -> Result<()> {
        // A write after a read that found no entry: straight to `insert`, whose one probe
        // also finds an entry that is there after all (the hint came from another read).
        if hint == ABSENT {
            return self.insert(key, value);
        }
        let Some(index) = hinted_bucket(hint) else {
            // No read before this write (a plain `set`).
            return self.put(key, value);
        };
        if let Some(canonical) = canonical_of(key)
            && self.replace_at(index, canonical, value)
        {
            return Ok(());
        }
        self.put_unhinted(key, value)
    }

    /// [`put`](Self::put) out of line, for a hint that did not apply.
    #[inline(never)]
    fn put_unhinted(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put(key, value)
    }

    /// The rows, the hasher and the stored part of `canonical`, when the column keeps fixed
    /// rows of its key and of values of `value_len` bytes: where a write can replace a value
    /// in place.
    #[inline(always)]
    fn fixed_rows<'k>(
        &mut self,
        canonical: &'k [u8],
        value_len: usize,
    ) -> Option<(&mut Rows, &RowHasher, &'k [u8])> {
        match self.layout {
            Layout::Fixed { value_len: vl, .. } if vl == value_len => {
                let stored = self.layout.stored(canonical)?;
                Some((&mut self.rows, &self.hasher, stored))
            }
            _ => None,
        }
    }

    /// Replaces the value in bucket `index` when that bucket holds `canonical` in fixed rows of
    /// the value's length; `false` otherwise.
    #[inline(always)]
    fn replace_at(&mut self, index: usize, canonical: &[u8], value: &[u8]) -> bool {
        let Some((rows, _, stored)) = self.fixed_rows(canonical, value.len()) else {
            return false;
        };
        with_rows!(rows,
            t => replace_in(t, index, stored.len(), stored, value),
            _g => false,
        )
    }

    /// The common write, kept small so it inlines: replaces the value of a key that is already
    /// stored in fixed rows of its lengths. `false` when it does not apply.
    #[inline]
    fn replace_fixed(&mut self, canonical: &[u8], value: &[u8]) -> bool {
        let Some((rows, hasher, stored)) = self.fixed_rows(canonical, value.len()) else {
            return false;
        };
        let key_len = stored.len();
        let h = hash(hasher, stored);
        let row = with_rows!(rows,
            t => t.find_mut(h, |r| same(&r[..key_len], stored)).map(|r| &mut r[key_len..]),
            _g => None,
        );
        match row {
            Some(row) => {
                copy(row, value);
                true
            }
            None => false,
        }
    }

    /// Every other write: a new key, a first entry, a key or value of another length.
    #[inline(never)]
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Checked before the layout may change, so a refused key changes nothing.
        let canonical = self.checked(key)?;
        self.prepare(canonical, value.len());
        let (hasher, layout) = (&self.hasher, self.layout);
        with_rows!(&mut self.rows,
            t => match layout.stored(canonical) {
                Some(stored) => put_fixed(t, hasher, stored, value),
                // `prepare` made the layout hold the key.
                None => return Err(layout_refused(canonical.len())),
            },
            g => match g.entry(hash(hasher, canonical), |(k, _)| same(k, canonical), |(k, _)| hash(hasher, k)) {
                Entry::Occupied(mut e) => {
                    let slot = &mut e.get_mut().1;
                    slot.clear();
                    slot.extend_from_slice(value);
                }
                Entry::Vacant(e) => {
                    e.insert((InlineKey::from_slice(canonical), value.to_vec()));
                }
            },
        );
        Ok(())
    }

    /// The canonical key of `key`, when its prefix is the key group of its canonical bytes.
    ///
    /// The table stores no prefix, so every entry's group must follow from its canonical key:
    /// a key with another prefix is refused wherever an entry is created or removed (and, by
    /// the backend, where a change is recorded for an incremental checkpoint). Reads, in-place
    /// replacements and appends to a stored value, the per-record path, do not hash the key a
    /// second time: with such a key they reach the entry of its canonical bytes.
    pub(crate) fn checked<'k>(&self, key: &'k [u8]) -> Result<&'k [u8]> {
        checked_in(key, self.spaced, self.max_parallelism)
    }

    /// [`StateBackend::read_modify_write`]. In fixed rows of the key's length (the common
    /// case), one probe finds the entry or the bucket for a new one, and a new value of the
    /// row's length is written there: a new key costs one lookup, where a read and then an
    /// insert took two. Anything else (another length, general rows) reads, then writes.
    ///
    /// [`StateBackend::read_modify_write`]: statewright_core::StateBackend::read_modify_write
    #[inline]
    pub(crate) fn read_modify_write(
        &mut self,
        key: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        let canonical = canonical(key)?;
        if let Layout::Fixed { value_len, .. } = self.layout
            && let Some(stored_key) = self.layout.stored(canonical)
        {
            let (hasher, spaced, max_parallelism) =
                (&self.hasher, self.spaced, self.max_parallelism);
            let check = |key| checked_in(key, spaced, max_parallelism).map(|_| ());
            let anchor = &mut self.anchor;
            let stored = with_rows!(&mut self.rows,
                t => update_fixed(t, hasher, anchor, stored_key, value_len, value, update, || check(key))?,
                _g => false,
            );
            if !stored {
                // `update` wrote a value of another length: the general write stores it.
                self.put(key, value)?;
            }
            return Ok(());
        }
        value.clear();
        update(self.get(key)?, value)?;
        self.put(key, value)
    }
}

impl FlatTable {
    /// [`read_modify_write`](Self::read_modify_write) of the row key of `(key, namespace)` in
    /// a namespaced table ([`RowKey::build`]).
    ///
    /// A windowed add creates a row per record. The common shape of such a row (an 8-byte key,
    /// a namespace of 8, 16 or 24 bytes, an 8-byte value) takes a path that never builds the
    /// row key: it is hashed and compared from its two parts, and the new row is written
    /// into its bucket as whole words. The row key built on the stack was read back with loads
    /// wider than the stores that wrote it, and such a load waits until every store before it
    /// has reached the cache, the last record's new row among them: the records ran one after
    /// the other instead of overlapping their cache misses. Any other shape builds the row
    /// key. Measured in `bench/ANALYSIS.md`.
    #[inline(always)]
    pub(crate) fn read_modify_write_spaced(
        &mut self,
        key: &[u8],
        namespace: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        if let Layout::Fixed {
            key_len,
            value_len: 8,
            tail: Some(8),
            ..
        } = self.layout
            && key_len == 8 + namespace.len()
            && let Some((_, word)) = key.split_first_chunk::<2>()
            && let Ok(word) = <&[u8; 8]>::try_from(word)
        {
            let (hasher, mp) = (&self.hasher, self.max_parallelism);
            let anchor = &mut self.anchor;
            let stored = match (&mut self.rows, namespace.len()) {
                (Rows::R24(t), 8) => {
                    let parts = Parts::<1>::new(word, namespace);
                    update_parts(t, hasher, anchor, key, parts, value, update, mp)?
                }
                (Rows::R32(t), 16) => {
                    let parts = Parts::<2>::new(word, namespace);
                    update_parts(t, hasher, anchor, key, parts, value, update, mp)?
                }
                (Rows::R48(t), 24) => {
                    let parts = Parts::<3>::new(word, namespace);
                    update_parts(t, hasher, anchor, key, parts, value, update, mp)?
                }
                _ => return self.read_modify_write_built(key, namespace, value, update),
            };
            if !stored {
                // `update` wrote a value of another length: the general write stores it.
                self.put_built(key, namespace, value)?;
            }
            return Ok(());
        }
        self.read_modify_write_built(key, namespace, value, update)
    }

    /// [`read_modify_write_spaced`](Self::read_modify_write_spaced) of any other shape, out of
    /// line: the common one keeps a small frame.
    #[inline(never)]
    fn read_modify_write_built(
        &mut self,
        key: &[u8],
        namespace: &[u8],
        value: &mut Vec<u8>,
        update: ValueUpdate<'_>,
    ) -> Result<()> {
        self.read_modify_write(RowKey::new().build(key, namespace)?, value, update)
    }

    /// [`put`](Self::put) of the row key of `(key, namespace)`, out of line.
    #[inline(never)]
    fn put_built(&mut self, key: &[u8], namespace: &[u8], value: &[u8]) -> Result<()> {
        self.put(RowKey::new().build(key, namespace)?, value)
    }
}

/// The stored key of a namespaced row of the common shape as its parts, 8-byte words: the
/// canonical key, then `N` words of namespace (the row key's last byte, the key's length, is
/// the table's `tail`).
#[derive(Clone, Copy)]
struct Parts<const N: usize> {
    words: [u64; 4],
}

impl<const N: usize> Parts<N> {
    /// The parts of `key` and `namespace` (`N` words long; missing words read as zero, which
    /// the caller's length check rules out).
    #[inline(always)]
    fn new(key: &[u8; 8], namespace: &[u8]) -> Self {
        let mut words = [u64::from_ne_bytes(*key), 0, 0, 0];
        for (i, w) in words.iter_mut().skip(1).take(N).enumerate() {
            if let Some(b) = namespace.get(i * 8..).and_then(<[u8]>::first_chunk::<8>) {
                *w = u64::from_ne_bytes(*b);
            }
        }
        Self { words }
    }

    /// [`hash`] of the stored key the parts make (the same value, from the words).
    #[inline(always)]
    fn hash(&self, seeds: &[u64; 4]) -> u64 {
        let be = |i: usize| u64::from_be(self.words[i]);
        let acc = folded_multiply(seeds[0] ^ be(0), be(1) ^ seeds[1]);
        match N {
            1 => folded_multiply(acc ^ seeds[2], 16 ^ seeds[3]),
            2 => folded_multiply(acc ^ be(2), 24 ^ seeds[3]),
            _ => {
                let acc = folded_multiply(acc ^ be(2), be(3) ^ seeds[1]);
                folded_multiply(acc ^ seeds[2], 32 ^ seeds[3])
            }
        }
    }

    /// The `i`-th 8-byte word of `row`.
    #[inline(always)]
    fn row_word(row: &[u8], i: usize) -> Option<u64> {
        row.get(i * 8..)
            .and_then(<[u8]>::first_chunk::<8>)
            .map(|b| u64::from_ne_bytes(*b))
    }

    /// The parts of a row's stored key (a row of a table whose stored keys are `N + 1` words).
    #[inline(always)]
    fn of_row(row: &[u8]) -> Self {
        let mut words = [0; 4];
        for (i, w) in words.iter_mut().take(N + 1).enumerate() {
            *w = Self::row_word(row, i).unwrap_or(0);
        }
        Self { words }
    }

    /// Whether a row's stored key is this one.
    #[inline(always)]
    fn is_in(&self, row: &[u8]) -> bool {
        (0..=N).all(|i| Self::row_word(row, i) == Some(self.words[i]))
    }

    /// A new row of these parts and the 8-byte `value` (and the key's hash when the row keeps
    /// it), as whole words.
    #[inline(always)]
    fn row<R: Row>(&self, value: [u8; 8], hash: u64) -> R {
        let mut r = R::zeroed();
        let row = r.as_mut();
        for (i, w) in self.words.iter().take(N + 1).enumerate() {
            if let Some(d) = row.get_mut(i * 8..).and_then(<[u8]>::first_chunk_mut::<8>) {
                *d = w.to_ne_bytes();
            }
        }
        let kl = 8 * (N + 1);
        if let Some(d) = row.get_mut(kl..).and_then(<[u8]>::first_chunk_mut::<8>) {
            *d = value;
        }
        if R::keeps_hash(kl, 8)
            && let Some(kept) = row.last_chunk_mut::<8>()
        {
            *kept = hash.to_ne_bytes();
        }
        r
    }
}

/// [`FlatTable::read_modify_write_spaced`] in fixed rows with 8-byte values: [`update_fixed`]
/// for a row key given as its parts. `key` is the backend key (its prefix is checked before a
/// row is created). `false` when `update` wrote a value of another length: the caller stores it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_parts<R: Row, const N: usize>(
    t: &mut HashTable<R>,
    hasher: &RowHasher,
    anchor: &mut Anchor,
    key: &[u8],
    parts: Parts<N>,
    value: &mut Vec<u8>,
    update: ValueUpdate<'_>,
    max_parallelism: u16,
) -> Result<bool> {
    let kl = 8 * (N + 1);
    let h = parts.hash(&hasher.seeds);
    let buckets = t.num_buckets();
    anchor.fetch::<R>(h, buckets);
    value.clear();
    // Every row of the table has a stored key of this shape, so a table that grows hashes
    // the rows it moves as parts too (the same hash as `hash_of`, in a third of the
    // instructions).
    let seeds = &hasher.seeds;
    let rehash = |r: &R| match R::keeps_hash(kl, 8) {
        true => r.hash_of(hasher, kl, 8),
        false => Parts::<N>::of_row(r.as_ref()).hash(seeds),
    };
    match t.entry(h, |r| parts.is_in(r.as_ref()), rehash) {
        Entry::Occupied(mut e) => {
            let index = e.bucket_index();
            anchor.note(buckets, index, e.get());
            let row = e.get_mut().as_mut();
            update(row.get(kl..kl + 8), value)?;
            match (
                row.get_mut(kl..).and_then(<[u8]>::first_chunk_mut::<8>),
                value.first_chunk::<8>(),
            ) {
                (Some(dst), Some(v)) if value.len() == 8 => {
                    *dst = *v;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        Entry::Vacant(e) => {
            // Checked before anything is stored, so a refused key changes nothing.
            checked_group(key, key, &parts.words[0].to_ne_bytes(), max_parallelism)?;
            update(None, value)?;
            let v = match value.first_chunk::<8>() {
                Some(v) if value.len() == 8 => *v,
                _ => return Ok(false),
            };
            anchor.inserted(e.insert(parts.row(v, h)));
            Ok(true)
        }
    }
}

/// [`FlatTable::checked`] for a table of this kind.
#[inline(always)]
fn checked_in(key: &[u8], spaced: bool, max_parallelism: u16) -> Result<&[u8]> {
    let canonical = canonical(key)?;
    let group = if spaced {
        match split_spaced(canonical) {
            Some((key, _)) => key,
            None => return Err(malformed_row_key(canonical)),
        }
    } else {
        canonical
    };
    checked_group(key, canonical, group, max_parallelism).map(|(_, canonical)| canonical)
}

impl FlatTable {
    /// The operator's maximum parallelism the table computes key groups with.
    pub(crate) fn max_parallelism(&self) -> u16 {
        self.max_parallelism
    }

    /// Appends `operand` to the value (or stores it when absent).
    pub(crate) fn merge(&mut self, key: &[u8], operand: &[u8]) -> Result<()> {
        // An append to a stored list, the per-record path, is an in-place write: it finds the
        // entry by its canonical bytes without hashing the key group again (a tenth of a list
        // append's instructions, measured in `bench/ANALYSIS.md`).
        if let Rows::General(g) = &mut self.rows {
            let canonical = canonical(key)?;
            let h = hash(&self.hasher, canonical);
            if let Some((_, v)) = g.find_mut(h, |(k, _)| same(k, canonical)) {
                v.extend_from_slice(operand);
                return Ok(());
            }
        }
        let canonical = self.checked(key)?;
        if self.layout != Layout::General {
            if self.get(key)?.is_none() {
                return self.put(key, operand);
            }
            // The value grows, so it no longer has the column's fixed length.
            self.make_general();
        }
        let hasher = &self.hasher;
        let h = hash(hasher, canonical);
        let Rows::General(g) = &mut self.rows else {
            return Err(Error::Backend {
                backend: "heap",
                message: "the column has fixed rows, a merge needs general ones".into(),
            });
        };
        match g.entry(h, |(k, _)| same(k, canonical), |(k, _)| hash(hasher, k)) {
            Entry::Occupied(mut e) => e.get_mut().1.extend_from_slice(operand),
            Entry::Vacant(e) => {
                e.insert((InlineKey::from_slice(canonical), operand.to_vec()));
            }
        }
        Ok(())
    }

    /// Removes the entry; whether there was one.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Result<bool> {
        let canonical = self.checked(key)?;
        let (kl, _) = self.layout.lens();
        let (hasher, layout) = (&self.hasher, self.layout);
        let removed = with_rows!(&mut self.rows,
            t => layout.stored(canonical).is_some_and(|stored| {
                t.find_entry(hash(hasher, stored), |r| same(&r[..kl], stored)).map(|e| e.remove()).is_ok()
            }),
            g => g.find_entry(hash(hasher, canonical), |(k, _)| same(k, canonical)).map(|e| e.remove()).is_ok(),
        );
        if removed && self.len() == 0 {
            self.clear();
        }
        Ok(removed)
    }

    pub(crate) fn clear(&mut self) {
        self.rows = Rows::General(HashTable::new());
        self.layout = Layout::Open;
    }

    /// Calls `visit(key, value)` for every entry, in the table's order; the key has its
    /// key-group prefix.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let (kl, vl) = self.layout.lens();
        let mut key = key_buffer(kl);
        let mut row_key = key_buffer(kl);
        let mp = self.max_parallelism;
        with_rows!(&self.rows,
            t => for r in t {
                let canonical = self.layout.row_key(&r[..kl], &mut row_key);
                full_key(&mut key, mp, self.group_bytes(canonical), canonical);
                visit(&key, &r[kl..kl + vl])?;
            },
            g => for (k, v) in g {
                full_key(&mut key, mp, self.group_bytes(k), k);
                visit(&key, v)?;
            },
        );
        Ok(())
    }

    /// Visits up to `limit` entries from bucket `*cursor`, wrapping at the end; at most
    /// `limit * 8` buckets are looked at, so a call costs little even when the table is nearly
    /// empty.
    pub(crate) fn visit_some(
        &self,
        cursor: &mut u64,
        limit: usize,
        visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut at = usize::try_from(*cursor).unwrap_or(0);
        self.visit_buckets(&mut at, limit, true, visit)?;
        *cursor = at as u64;
        Ok(())
    }

    /// [`visit_some`](Self::visit_some) from bucket `*at` without wrapping: the number of
    /// entries visited, and whether the walk reached the table's end (`*at` is then the bucket
    /// count).
    pub(crate) fn visit_to_end(
        &self,
        at: &mut usize,
        limit: usize,
        visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<(usize, bool)> {
        let visited = self.visit_buckets(at, limit, false, visit)?;
        let buckets = with_rows!(&self.rows, t => t.num_buckets(), g => g.num_buckets());
        Ok((visited, *at >= buckets))
    }

    /// Visits up to `limit` entries from bucket `*at`, looking at `limit * 8` buckets at most
    /// and, when `wrap`, going on from the first bucket after the last.
    fn visit_buckets(
        &self,
        at: &mut usize,
        limit: usize,
        wrap: bool,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<usize> {
        let len = self.len();
        let buckets = with_rows!(&self.rows, t => t.num_buckets(), g => g.num_buckets());
        if len == 0 {
            *at = if wrap { 0 } else { buckets };
            return Ok(0);
        }
        let (kl, vl) = self.layout.lens();
        let mp = self.max_parallelism;
        let mut key = key_buffer(kl);
        let mut row_key = key_buffer(kl);
        let mut visited = 0;
        let mut budget = limit.saturating_mul(8).max(1);
        // Wrapping, a call visits each entry once at most; otherwise it goes on to the end.
        let most = if wrap { limit.min(len) } else { limit };
        while visited < most && budget > 0 {
            if *at >= buckets {
                if !wrap {
                    break;
                }
                *at = 0;
            }
            budget -= 1;
            with_rows!(&self.rows,
                t => if let Some(r) = t.get_bucket(*at) {
                    let canonical = self.layout.row_key(&r[..kl], &mut row_key);
                    full_key(&mut key, mp, self.group_bytes(canonical), canonical);
                    visit(&key, &r[kl..kl + vl])?;
                    visited += 1;
                },
                g => if let Some((k, v)) = g.get_bucket(*at) {
                    full_key(&mut key, mp, self.group_bytes(k), k);
                    visit(&key, v)?;
                    visited += 1;
                },
            );
            *at += 1;
        }
        Ok(visited)
    }

    /// Keeps the rows whose canonical row key `keep` accepts and removes the others.
    pub(crate) fn retain_rows(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let (kl, layout) = (self.layout.lens().0, self.layout);
        let mut buf = key_buffer(kl);
        with_rows!(&mut self.rows,
            t => t.retain(|r| keep(layout.row_key(&r[..kl], &mut buf))),
            g => g.retain(|(k, _)| keep(k)),
        );
        if self.len() == 0 {
            self.clear();
        }
    }
}

/// Stores `value` under `canonical` in fixed rows. Reached after [`FlatTable::replace_fixed`]
/// missed, so the key is usually absent: one probe finds the slot either way (`entry`),
/// instead of a lookup and then an insert.
#[inline]
fn put_fixed<R: Row>(t: &mut HashTable<R>, hasher: &RowHasher, canonical: &[u8], value: &[u8]) {
    let (kl, vl) = (canonical.len(), value.len());
    let h = hash(hasher, canonical);
    match t.entry(
        h,
        |r| same(&r.as_ref()[..kl], canonical),
        |r| r.hash_of(hasher, kl, vl),
    ) {
        Entry::Occupied(mut e) => copy(&mut e.get_mut().as_mut()[kl..], value),
        Entry::Vacant(e) => {
            e.insert(R::new_row(canonical, value, h));
        }
    }
}

/// [`FlatTable::read_modify_write`] in fixed rows whose keys have `canonical`'s length: the
/// value `update` writes is stored in place (a stored key) or in a new row (a new key, after
/// `check`) when it has the rows' value length `value_len`. `false` when it has another: the
/// caller stores it.
#[inline]
#[allow(clippy::too_many_arguments)]
fn update_fixed<R: Row>(
    t: &mut HashTable<R>,
    hasher: &RowHasher,
    anchor: &mut Anchor,
    canonical: &[u8],
    value_len: usize,
    value: &mut Vec<u8>,
    update: ValueUpdate<'_>,
    check: impl FnOnce() -> Result<()>,
) -> Result<bool> {
    let kl = canonical.len();
    let h = hash(hasher, canonical);
    let buckets = t.num_buckets();
    anchor.fetch::<R>(h, buckets);
    value.clear();
    match t.entry(
        h,
        |r| same(&r.as_ref()[..kl], canonical),
        |r| r.hash_of(hasher, kl, value_len),
    ) {
        Entry::Occupied(mut e) => {
            // The table did not grow: the entry was found.
            let index = e.bucket_index();
            anchor.note(buckets, index, e.get());
            let row = e.get_mut().as_mut();
            update(row.get(kl..kl + value_len), value)?;
            match row.get_mut(kl..) {
                Some(dst) if value.len() == value_len => {
                    copy(dst, value);
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        Entry::Vacant(e) => {
            // Checked before anything is stored, so a refused key changes nothing.
            check()?;
            update(None, value)?;
            if value.len() != value_len {
                return Ok(false);
            }
            anchor.inserted(e.insert(R::new_row(canonical, value, h)));
            Ok(true)
        }
    }
}

/// Replaces the value in bucket `index` of fixed rows when the bucket holds `canonical`.
#[inline(always)]
fn replace_in<R: Row>(
    t: &mut HashTable<R>,
    index: usize,
    key_len: usize,
    canonical: &[u8],
    value: &[u8],
) -> bool {
    let Some(row) = t.get_bucket_mut(index) else {
        return false;
    };
    match row.as_mut().split_at_mut_checked(key_len) {
        Some((key, rest)) if same(key, canonical) => {
            copy(rest, value);
            true
        }
        _ => false,
    }
}

/// Copies `src` to the start of `dst` (which is long enough: the row's width was chosen for
/// the key and value lengths), without a call to `memcpy` for 8 bytes.
#[inline(always)]
fn copy(dst: &mut [u8], src: &[u8]) {
    match (dst.first_chunk_mut::<8>(), src.first_chunk::<8>()) {
        (Some(d), Some(s)) if src.len() == 8 => *d = *s,
        _ => {
            if let Some(d) = dst.get_mut(..src.len()) {
                d.copy_from_slice(src);
            }
        }
    }
}

/// [`copy`] of a key into a new row: word by word up to 64 bytes, the loads of
/// [`same_words`], for a row key just built.
#[inline]
fn copy_key(dst: &mut [u8], src: &[u8]) {
    match dst.get_mut(..src.len()) {
        Some(d) if src.len() != 8 && src.len() <= 64 => {
            let (mut to, mut from) = (d.chunks_exact_mut(8), src.chunks_exact(8));
            for (t, f) in to.by_ref().zip(from.by_ref()) {
                t.copy_from_slice(f);
            }
            for (t, f) in to.into_remainder().iter_mut().zip(from.remainder()) {
                *t = *f;
            }
        }
        _ => copy(dst, src),
    }
}

/// A buffer for full keys of `key_len` bytes (`0`: varying), large enough for the first key: a
/// visit allocates once, where a buffer grown from empty allocated twice.
fn key_buffer(key_len: usize) -> Vec<u8> {
    Vec::with_capacity(2 + key_len.max(30))
}

/// Writes the backend key of `canonical` (the key-group prefix of `group_bytes`, then the
/// canonical bytes).
fn full_key(key: &mut Vec<u8>, max_parallelism: u16, group_bytes: &[u8], canonical: &[u8]) {
    key.clear();
    key.extend_from_slice(&key_group(group_bytes, max_parallelism).to_be_bytes());
    key.extend_from_slice(canonical);
}

/// Where a namespaced table's row keys are built: on the stack up to 48 bytes.
pub(crate) struct RowKey {
    inline: [u8; 48],
    long: Vec<u8>,
}

impl RowKey {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Self {
            inline: [0; 48],
            long: Vec::new(),
        }
    }

    /// The row key of `(key, namespace)` in a namespaced table, as a backend key: the key's
    /// key-group prefix, then the canonical key, the namespace bytes and the canonical key's
    /// length (one byte below 255; otherwise 255 after the length as 4 bytes, little endian).
    /// The length makes the pair one byte string that splits again ([`split_spaced`])
    /// whatever the namespace's encoding; at the end, it leaves the key and the namespace where
    /// word loads of the row key meet the stores that wrote them.
    #[inline(always)]
    pub(crate) fn build(&mut self, key: &[u8], namespace: &[u8]) -> Result<&[u8]> {
        let Some(canonical) = canonical_of(key) else {
            return Err(no_prefix(key));
        };
        let total = key.len() + namespace.len() + 1;
        let short = u8::try_from(canonical.len()).ok().filter(|&l| l < u8::MAX);
        let (Some(klen), true) = (short, total <= self.inline.len()) else {
            return self.build_long(key, namespace);
        };
        let buf = &mut self.inline[..total];
        // The key with its prefix, then the namespace, each in overlapping words.
        let (head, rest) = buf.split_at_mut(key.len());
        copy_small(head, key);
        if let Some((last, body)) = rest.split_last_mut() {
            copy_small(body, namespace);
            *last = klen;
        }
        Ok(buf)
    }

    /// [`build`](Self::build) of a row key over 48 bytes or of a key over 254 bytes.
    #[inline(never)]
    fn build_long(&mut self, key: &[u8], namespace: &[u8]) -> Result<&[u8]> {
        let klen = key.len().saturating_sub(2);
        self.long.clear();
        self.long.extend_from_slice(key);
        self.long.extend_from_slice(namespace);
        match u8::try_from(klen) {
            Ok(short) if short < u8::MAX => self.long.push(short),
            _ => {
                let long = u32::try_from(klen).map_err(|_| too_long(klen))?;
                self.long.extend_from_slice(&long.to_le_bytes());
                self.long.push(u8::MAX);
            }
        }
        Ok(&self.long)
    }
}

#[cold]
fn layout_refused(len: usize) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!("a row key of {len} bytes does not fit the rows prepared for it"),
    }
}

#[cold]
fn too_long(len: usize) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!("a key of {len} bytes is too long for a namespaced state"),
    }
}

/// `dst.copy_from_slice(src)` for slices of one length, without a call to `memcpy` for 1 to 16
/// bytes (a key, a namespace): two overlapping word copies.
#[inline(always)]
fn copy_small(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        return;
    }
    match (src.first_chunk::<8>(), src.last_chunk::<8>()) {
        (Some(first), Some(last)) if n <= 16 => {
            if let Some(d) = dst.first_chunk_mut::<8>() {
                *d = *first;
            }
            if let Some(d) = dst.last_chunk_mut::<8>() {
                *d = *last;
            }
        }
        _ if n < 8 => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = *s;
            }
        }
        _ => dst.copy_from_slice(src),
    }
}

/// The canonical key and the namespace of a namespaced table's canonical row key (without its
/// prefix); `None` when the bytes are not one.
#[inline]
pub(crate) fn split_spaced(row_key: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&last, rest) = row_key.split_last()?;
    let (klen, body) = if last < u8::MAX {
        (usize::from(last), rest)
    } else {
        let (body, long) = rest.split_last_chunk::<4>()?;
        (usize::try_from(u32::from_le_bytes(*long)).ok()?, body)
    };
    Some((body.get(..klen)?, body.get(klen..)?))
}

#[cold]
fn malformed_row_key(canonical: &[u8]) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!(
            "a namespaced row key of {} byte(s) does not end with its key's length",
            canonical.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MP: u16 = 128;

    /// The backend key of `canonical`, as `Bound::key` builds it.
    fn key(canonical: &[u8]) -> Vec<u8> {
        let mut k = key_group(canonical, MP).to_be_bytes().to_vec();
        k.extend_from_slice(canonical);
        k
    }

    #[test]
    fn the_straight_word_hashes_are_the_loop_s() {
        let seeds = [11, 0x9e37_79b9_7f4a_7c15, 3, u64::MAX];
        let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(151) ^ 0x5a).collect();
        for len in 9..=64 {
            let key = &bytes[..len];
            assert_eq!(
                hash_words(&seeds, key),
                hash_words_loop(&seeds, key),
                "{len} bytes"
            );
        }
        // Keys that differ in one word hash apart.
        let mut other = bytes[..24].to_vec();
        other[20] ^= 1;
        assert_ne!(hash_words(&seeds, &bytes[..24]), hash_words(&seeds, &other));
    }

    /// Pseudo-random bytes, different for each `seed` and each position.
    fn bytes(seed: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let x = ((seed << 8) | i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                ((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 56) as u8
            })
            .collect()
    }

    /// A row key's parts against the same stored key side by side: hash, comparison, and the
    /// new row, for each of the three shapes.
    fn parts_agree<R: Row, const N: usize>(hasher: &RowHasher) {
        for seed in 0..200u64 {
            let key = bytes(seed, 8);
            let key: [u8; 8] = key.as_slice().try_into().unwrap();
            let namespace = bytes(seed ^ 0xabc, 8 * N);
            let stored = [&key[..], &namespace].concat();
            let parts = Parts::<N>::new(&key, &namespace);
            let h = hash(hasher, &stored);
            assert_eq!(parts.hash(&hasher.seeds), h, "{N} words, seed {seed}");
            let value = seed.to_le_bytes();
            let row: R = parts.row(value, h);
            let built = R::new_row(&stored, &value, h);
            assert_eq!(row.as_ref(), built.as_ref(), "{N} words, seed {seed}");
            assert!(parts.is_in(row.as_ref()));
            assert_eq!(Parts::<N>::of_row(row.as_ref()).hash(&hasher.seeds), h);
            assert_eq!(row.hash_of(hasher, stored.len(), 8), h);
            // A row of another key is not this one.
            let mut other = stored.clone();
            other[8 * N] ^= 1;
            assert!(!parts.is_in(R::new_row(&other, &value, h).as_ref()));
        }
    }

    #[test]
    fn a_row_key_s_parts_hash_compare_and_write_as_the_built_key() {
        let hasher = RowHasher::new(Hasher::fixed());
        parts_agree::<[u8; 24], 1>(&hasher);
        parts_agree::<Aligned32, 2>(&hasher);
        // Rows of 48 bytes keep their key's hash.
        assert!(<[u8; 48]>::keeps_hash(32, 8));
        parts_agree::<[u8; 48], 3>(&hasher);
    }

    #[test]
    fn windowed_adds_of_every_shape_keep_their_sums() {
        let add = |t: &mut FlatTable, key: &[u8], namespace: &[u8], by: u64| {
            let mut value = Vec::new();
            t.read_modify_write_spaced(key, namespace, &mut value, &mut |old, out| {
                let old = old.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
                out.extend_from_slice(&(old + by).to_le_bytes());
                Ok(())
            })
        };
        // Namespaces of 8, 16 and 24 bytes take the parts path (rows of 24, 32 and 48 bytes:
        // the row key's parts and the value, without the length byte the row key ends with);
        // 5 and 40 bytes build the row key.
        for (ns_len, width) in [(8, 24), (16, 32), (24, 48), (5, 24), (40, 64)] {
            let mut t = FlatTable::new(true, MP, Hasher::fixed()).namespaced();
            let mut model = std::collections::HashMap::new();
            // Enough rows for the table to grow several times.
            for i in 0..30_000u64 {
                let k = key(&(i % 3_001).to_be_bytes());
                let namespace = bytes(i % 7, ns_len);
                add(&mut t, &k, &namespace, i).unwrap();
                *model.entry((k, namespace)).or_insert(0) += i;
            }
            assert_eq!(t.len(), model.len(), "{ns_len}");
            let rows = match &t.rows {
                Rows::R24(_) => 24,
                Rows::R32(_) => 32,
                Rows::R48(_) => 48,
                Rows::R64(_) => 64,
                _ => 0,
            };
            assert_eq!(rows, width, "{ns_len}");
            for ((k, namespace), sum) in &model {
                let got = t.get(RowKey::new().build(k, namespace).unwrap()).unwrap();
                assert_eq!(got, Some(&sum.to_le_bytes()[..]), "{ns_len}");
            }
            // Every row lists under its own key group.
            let mut listed = 0;
            t.for_each(|k, v| {
                let (key, namespace) = split_spaced(canonical_of(k).unwrap()).unwrap();
                let full = [&k[..2], key].concat();
                assert_eq!(full, self::key(key));
                let sum = model[&(full, namespace.to_vec())];
                assert_eq!(v, sum.to_le_bytes());
                listed += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(listed, model.len());

            // A key whose prefix names another group is refused and stores nothing.
            let mut misplaced = key(&5_000u64.to_be_bytes());
            misplaced[1] = misplaced[1].wrapping_add(1);
            let err = add(&mut t, &misplaced, &bytes(1, ns_len), 1).unwrap_err();
            assert!(err.to_string().contains("key group"), "{err}");
            assert_eq!(t.len(), model.len());

            // A value of another length moves the rows to general ones, losing none.
            let (k, namespace) = model.keys().next().unwrap().clone();
            let mut value = Vec::new();
            t.read_modify_write_spaced(&k, &namespace, &mut value, &mut |_, out| {
                out.extend_from_slice(b"longer value");
                Ok(())
            })
            .unwrap();
            assert_eq!(t.layout, Layout::General);
            assert_eq!(t.len(), model.len());
            let got = t.get(RowKey::new().build(&k, &namespace).unwrap()).unwrap();
            assert_eq!(got, Some(&b"longer value"[..]));
        }
    }

    fn entries(t: &FlatTable) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        t.for_each(|k, v| {
            all.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        all.sort();
        all
    }

    #[test]
    fn fixed_rows_move_make_general_ones_without_losing_entries() {
        let mut t = FlatTable::new(true, MP, Hasher::fixed());
        for i in 0u64..1000 {
            t.put(&key(&i.to_be_bytes()), &i.to_le_bytes()).unwrap();
        }
        assert!(matches!(t.layout, Layout::Fixed { width: 16, .. }));
        // A longer value: every entry moves to general rows.
        let five = key(&5u64.to_be_bytes());
        t.put(&five, b"a longer value").unwrap();
        assert_eq!(t.layout, Layout::General);
        assert_eq!(t.len(), 1000);
        for i in (0u64..1000).filter(|&i| i != 5) {
            let got = t.get(&key(&i.to_be_bytes())).unwrap();
            assert_eq!(got, Some(&i.to_le_bytes()[..]));
        }
        assert_eq!(t.get(&five).unwrap(), Some(&b"a longer value"[..]));
        let all = entries(&t);
        assert_eq!(all.len(), 1000);
        assert!(all.contains(&(key(&13u64.to_be_bytes()), 13u64.to_le_bytes().to_vec())));
    }

    #[test]
    fn listed_keys_carry_the_key_group_prefix_they_were_written_with() {
        for fixed in [true, false] {
            let mut t = FlatTable::new(fixed, MP, Hasher::fixed());
            let mut written = Vec::new();
            for i in 0u64..500 {
                let k = key(&i.to_be_bytes());
                t.put(&k, &i.to_le_bytes()).unwrap();
                written.push((k, i.to_le_bytes().to_vec()));
            }
            written.sort();
            assert_eq!(entries(&t), written);
            // The groups are spread: the prefix is not the same for every key.
            let groups: std::collections::HashSet<_> =
                written.iter().map(|(k, _)| [k[0], k[1]]).collect();
            assert!(groups.len() > 100, "{} groups", groups.len());
        }
    }

    #[test]
    fn a_key_whose_prefix_is_not_its_group_is_refused_and_stores_nothing() {
        /// `key` with a prefix naming another key group.
        fn misplaced(key: &[u8]) -> Vec<u8> {
            let mut k = key.to_vec();
            k[1] = k[1].wrapping_add(1);
            k
        }
        for fixed in [true, false] {
            // On an empty table a refused key does not choose the layout.
            let mut t = FlatTable::new(fixed, MP, Hasher::fixed());
            assert!(t.put(&misplaced(&key(b"k")), &[1; 8]).is_err());
            assert_eq!((t.len(), t.layout), (0, Layout::Open));

            let good = key(&7u64.to_be_bytes());
            t.put(&good, &1u64.to_le_bytes()).unwrap();
            let layout = t.layout;
            // A new key, by put, hinted put and merge.
            let other = key(&8u64.to_be_bytes());
            let err = t.put(&misplaced(&other), &2u64.to_le_bytes()).unwrap_err();
            assert!(err.to_string().contains("key group"), "{err}");
            let mut hint = EntryHint::NONE;
            assert_eq!(t.get_hinted(&other, &mut hint).unwrap(), None);
            assert!(
                t.put_hinted(&misplaced(&other), &2u64.to_le_bytes(), hint)
                    .is_err()
            );
            assert!(t.merge(&misplaced(&other), b"x").is_err());
            // A key of another length, which would move fixed rows to general ones.
            assert!(t.put(&misplaced(&key(b"long key")), b"v").is_err());
            // The stored key, by remove.
            assert!(t.remove(&misplaced(&good)).is_err());

            assert_eq!(t.layout, layout);
            assert_eq!(t.len(), 1);
            assert_eq!(t.get(&good).unwrap(), Some(&1u64.to_le_bytes()[..]));
            assert_eq!(
                entries(&t),
                vec![(good.clone(), 1u64.to_le_bytes().to_vec())]
            );

            // An append to the stored key: fixed rows refuse it (it would change their
            // layout); general rows append in place, to the entry of the canonical bytes.
            let appended = t.merge(&misplaced(&good), b"x");
            let mut value = 1u64.to_le_bytes().to_vec();
            if fixed {
                assert!(appended.is_err());
            } else {
                appended.unwrap();
                value.push(b'x');
            }
            assert_eq!(entries(&t), vec![(good, value)]);
        }
    }

    #[test]
    fn a_merge_into_a_fixed_row_grows_the_value() {
        let mut t = FlatTable::new(true, MP, Hasher::fixed());
        let k = key(b"abcd");
        t.merge(&k, b"12").unwrap();
        assert!(matches!(t.layout, Layout::Fixed { .. }));
        t.merge(&k, b"34").unwrap();
        t.merge(&key(b"other"), b"5").unwrap();
        assert_eq!(t.get(&k).unwrap(), Some(&b"1234"[..]));
        assert_eq!(t.get(&key(b"other")).unwrap(), Some(&b"5"[..]));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn lists_never_use_fixed_rows_and_emptied_tables_choose_again() {
        let mut t = FlatTable::new(false, MP, Hasher::fixed());
        t.put(&key(b"k"), b"v").unwrap();
        assert_eq!(t.layout, Layout::General);
        let mut t = FlatTable::new(true, MP, Hasher::fixed());
        t.put(
            &key(b"k"),
            b"a string value longer than sixty-four bytes, so no fixed row fits it",
        )
        .unwrap();
        assert_eq!(t.layout, Layout::General);
        assert!(t.remove(&key(b"k")).unwrap());
        assert!(!t.remove(&key(b"k")).unwrap());
        assert_eq!((t.len(), t.layout), (0, Layout::Open));
        t.put(&key(b"k"), &[1; 20]).unwrap();
        assert!(matches!(t.layout, Layout::Fixed { width: 24, .. }));
    }

    #[test]
    fn a_replace_writes_only_its_own_entry() {
        let mut t = FlatTable::new(true, MP, Hasher::fixed());
        let a = key(&1u64.to_be_bytes());
        t.put(&a, &1u64.to_le_bytes()).unwrap();
        // The table grows (every row moves) under later inserts.
        for i in 2u64..5000 {
            t.put(&key(&i.to_be_bytes()), &i.to_le_bytes()).unwrap();
        }
        let b = key(&4999u64.to_be_bytes());
        t.put(&b, &7u64.to_le_bytes()).unwrap();
        assert_eq!(t.get(&a).unwrap(), Some(&1u64.to_le_bytes()[..]));
        assert_eq!(t.get(&b).unwrap(), Some(&7u64.to_le_bytes()[..]));
        // A hint taken for one key does not reach it from another.
        let mut hint = EntryHint::NONE;
        assert!(t.get_hinted(&a, &mut hint).unwrap().is_some());
        t.put_hinted(&b, &8u64.to_le_bytes(), hint).unwrap();
        assert_eq!(t.get(&a).unwrap(), Some(&1u64.to_le_bytes()[..]));
        assert_eq!(t.get(&b).unwrap(), Some(&8u64.to_le_bytes()[..]));
        assert_eq!(t.len(), 4999);
    }

    #[test]
    fn visit_some_sees_every_entry_in_a_pass() {
        for fixed in [true, false] {
            let mut t = FlatTable::new(fixed, MP, Hasher::fixed());
            for i in 0u64..3000 {
                t.put(&key(&i.to_be_bytes()), &i.to_le_bytes()).unwrap();
            }
            let mut seen = std::collections::HashSet::new();
            let mut cursor = 0;
            for _ in 0..10_000 {
                t.visit_some(&mut cursor, 7, |k, _| {
                    assert_eq!(k, key(&k[2..]), "listed with its prefix");
                    seen.insert(k.to_vec());
                    Ok(())
                })
                .unwrap();
                if seen.len() == 3000 {
                    break;
                }
            }
            assert_eq!(seen.len(), 3000);
        }
    }

    #[test]
    fn a_key_without_a_group_prefix_is_an_error() {
        let mut t = FlatTable::new(true, MP, Hasher::fixed());
        assert!(t.put(&[1], b"v").is_err());
        assert!(t.get(&[]).is_err());
        assert!(t.merge(&[7], b"v").is_err());
        assert!(t.remove(&[]).is_err());
        assert_eq!(t.len(), 0);
    }
}
