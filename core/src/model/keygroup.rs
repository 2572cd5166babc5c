//! Key groups: the unit of state partitioning, as in Flink.
//!
//! A key's group is a stable hash of its canonical bytes modulo the operator's maximum
//! parallelism; instance `i` of `p` owns the contiguous range of groups given by
//! [`KeyGroupRange::for_instance`]. The hash and this mapping are part of the persisted format:
//! [`KEY_HASH_VERSION`] is recorded in every snapshot.

/// Version of the key hash and key-group assignment written into snapshots.
pub const KEY_HASH_VERSION: u8 = 1;

/// The largest maximum parallelism (as in Flink: `2^15`).
pub const MAX_PARALLELISM_LIMIT: u16 = 1 << 15;

/// The default maximum parallelism of an operator.
pub const DEFAULT_MAX_PARALLELISM: u16 = 128;

/// Stable hash of canonical key bytes (XXH3, 64 bit, seed 0).
#[inline]
#[must_use]
pub fn key_hash(canonical_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(canonical_key)
}

/// The key group of a canonical key for the given maximum parallelism.
///
/// # Examples
///
/// ```
/// use statewright::keygroup::key_group;
/// use statewright::StateKey;
///
/// let kg = key_group(&42u64.to_key_bytes(), 128);
/// assert!(kg < 128);
/// assert_eq!(kg, key_group(&42u64.to_key_bytes(), 128)); // stable
/// ```
#[inline]
#[must_use]
pub fn key_group(canonical_key: &[u8], max_parallelism: u16) -> u16 {
    // An 8-byte key (`u64`, `i64`, ...) is hashed with its length known, so XXH3's length
    // dispatch folds away and the hash is a few instructions inline; this runs on every key
    // change. The value is the same XXH3 of the same bytes either way.
    let h = match canonical_key.first_chunk::<8>() {
        Some(word) if canonical_key.len() == 8 => key_hash(word),
        _ => key_hash_any(canonical_key),
    };
    let m = u64::from(max_parallelism.max(1));
    // The remainder is below `max_parallelism`, so it fits. For a power of two (the default,
    // 128) it is the low bits, without a division's latency on every key.
    (if m.is_power_of_two() {
        h & (m - 1)
    } else {
        h % m
    }) as u16
}

/// [`key_hash`] of a key of any length, out of line.
#[inline(never)]
fn key_hash_any(canonical_key: &[u8]) -> u64 {
    key_hash(canonical_key)
}

/// An inclusive range of key groups owned by one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    first: u16,
    last: u16,
}

impl KeyGroupRange {
    /// The range `first..=last`; `None` when `first > last`.
    #[must_use]
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// Every key group of an operator with this maximum parallelism.
    #[must_use]
    pub fn all(max_parallelism: u16) -> Self {
        Self {
            first: 0,
            last: max_parallelism.max(1) - 1,
        }
    }

    /// The groups owned by instance `index` of `parallelism` instances (Flink's assignment).
    ///
    /// `None` when `parallelism` is zero, `index >= parallelism` or
    /// `parallelism > max_parallelism`.
    ///
    /// # Examples
    ///
    /// ```
    /// use statewright::keygroup::KeyGroupRange;
    ///
    /// let r = KeyGroupRange::for_instance(128, 3, 1).unwrap();
    /// assert_eq!((r.first(), r.last()), (43, 85));
    /// ```
    #[must_use]
    pub fn for_instance(max_parallelism: u16, parallelism: u16, index: u16) -> Option<Self> {
        if parallelism == 0 || index >= parallelism || parallelism > max_parallelism {
            return None;
        }
        let (m, p, i) = (
            u32::from(max_parallelism),
            u32::from(parallelism),
            u32::from(index),
        );
        let first = (i * m).div_ceil(p);
        let last = ((i + 1) * m - 1) / p;
        Some(Self {
            first: u16::try_from(first).ok()?,
            last: u16::try_from(last).ok()?,
        })
    }

    /// The instance of `parallelism` that owns `key_group`.
    #[must_use]
    pub fn instance_of(key_group: u16, max_parallelism: u16, parallelism: u16) -> u16 {
        let v = u32::from(key_group) * u32::from(parallelism) / u32::from(max_parallelism.max(1));
        u16::try_from(v).unwrap_or(u16::MAX)
    }

    /// First group in the range.
    #[must_use]
    pub fn first(&self) -> u16 {
        self.first
    }

    /// Last group in the range (inclusive).
    #[must_use]
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Whether `key_group` is in the range.
    #[inline]
    #[must_use]
    pub fn contains(&self, key_group: u16) -> bool {
        (self.first..=self.last).contains(&key_group)
    }

    /// Whether the two ranges share a key group.
    #[must_use]
    pub fn overlaps(&self, other: KeyGroupRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Number of groups in the range.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Always false: a range holds at least one group.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ranges_partition_all_groups() {
        for m in [1u16, 7, 128, 1000] {
            for p in 1..=m.min(17) {
                let mut next = 0u32;
                for i in 0..p {
                    let r = KeyGroupRange::for_instance(m, p, i).unwrap();
                    assert_eq!(u32::from(r.first()), next);
                    for kg in r.first()..=r.last() {
                        assert_eq!(KeyGroupRange::instance_of(kg, m, p), i);
                    }
                    next = u32::from(r.last()) + 1;
                }
                assert_eq!(next, u32::from(m));
            }
        }
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Persisted format: a change here moves keys to other key groups in old checkpoints.
        let forty_two = [0, 0, 0, 0, 0, 0, 0, 42];
        assert_eq!(key_hash(&forty_two), 0x2e4f_e982_b689_10ac);
        assert_eq!(key_group(&forty_two, 128), 44);
        assert_eq!(key_hash(&[0; 8]), 0xc77b_3abb_6f87_acd9);
        assert_eq!(key_hash(&[0xff; 8]), 0x5111_c7e4_7d78_4413);
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
    }

    #[test]
    fn every_key_length_gets_the_group_of_its_hash() {
        // 8-byte keys take their own path in `key_group`; every length must land where the
        // definition (hash modulo maximum parallelism) puts it. The hash values themselves are
        // pinned by `hash_is_stable_across_builds`.
        let mut bytes = Vec::new();
        for len in 0..=40u8 {
            for seed in 0..64u8 {
                bytes.clear();
                bytes.extend((0..len).map(|i| i.wrapping_mul(31) ^ seed.wrapping_mul(97)));
                let h = key_hash(&bytes);
                for m in [1u16, 7, 128, 1000, MAX_PARALLELISM_LIMIT] {
                    assert_eq!(
                        u64::from(key_group(&bytes, m)),
                        h % u64::from(m),
                        "{bytes:?} at max parallelism {m}"
                    );
                }
            }
        }
    }

    #[test]
    fn contains_is_exactly_the_inclusive_range() {
        for (first, last) in [
            (0, 0),
            (0, 127),
            (5, 9),
            (100, u16::MAX),
            (u16::MAX, u16::MAX),
        ] {
            let r = KeyGroupRange::new(first, last).unwrap();
            for kg in 0..=u16::MAX {
                assert_eq!(
                    r.contains(kg),
                    (first..=last).contains(&kg),
                    "{kg} in {r:?}"
                );
            }
        }
    }

    #[test]
    fn bad_instance_arguments_give_none() {
        assert!(KeyGroupRange::for_instance(128, 0, 0).is_none());
        assert!(KeyGroupRange::for_instance(128, 2, 2).is_none());
        assert!(KeyGroupRange::for_instance(4, 5, 0).is_none());
    }
}
