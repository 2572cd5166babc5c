//! Timers: event-time and processing-time timers of `(key, namespace, timestamp)`, declared as a
//! [`TimerService`](crate::TimerService) field of an operator.
//!
//! Timers are state. Each one is an entry of the operator's timer state, stored by the backend
//! like every other keyed state under its key (so in its key group), with the user key
//! `(domain, timestamp, namespace)` in canonical encoding and an empty value. Every checkpoint
//! kind (full, incremental, native) therefore holds them, a rescaled restore moves them with
//! their key groups, a heap checkpoint restores them into RocksDB and back, and `statewright
//! inspect` and `dump` show them as the state of the field that declares them.
//!
//! Firing needs them in time order across keys, ordered by timestamp, then key bytes, then
//! namespace bytes (Flink's order). A backend that keeps them as a queue in that order over
//! all its key groups ([`StateBackend::queued_timers`]: the heap) is asked for the earliest
//! and pops it: nothing is kept beside it. A backend that keeps each key group's timers in that
//! order ([`StateBackend::ordered_timers`]: RocksDB) is asked for them: [`Bound`](crate::Bound) holds
//! only the first [`CACHED_PER_GROUP`] timers of each key group and domain in memory, with an
//! ordered set of each group's earliest, and reads a group's next timers from the backend when
//! its cached ones are gone (Flink's `RocksDBCachingPriorityQueueSet` with its
//! `KeyGroupPartitionedPriorityQueue`): memory does not grow with the number of timers. For
//! any other backend (RocksDB with every timer in memory, a backend of one's own) it keeps an
//! index of every timer, one ordered set per time domain. Either is rebuilt from the backend
//! whenever the backend's contents are replaced (binding, a restore, a new key-group range).

use std::collections::{BTreeSet, VecDeque};
use std::marker::PhantomData;

use smallvec::SmallVec;

use crate::access::view::{KeyContext, Slot};
use crate::data::backend::{StateBackend, StateId};
use crate::model::error::{CodecError, Error, KeyError, Result};
use crate::model::key::{EncodeKey, StateKey};
use crate::model::keygroup::KeyGroupRange;

/// Which clock a timer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimeDomain {
    /// Event time: fires when the watermark reaches the timer
    /// ([`Bound::advance_watermark`](crate::Bound::advance_watermark)).
    EventTime,
    /// Processing time: fires when the application's clock reaches the timer
    /// ([`Bound::advance_processing_time`](crate::Bound::advance_processing_time)).
    ProcessingTime,
}

impl TimeDomain {
    /// The domain's tag, the first byte of a stored timer.
    #[must_use]
    pub const fn tag(self) -> u8 {
        match self {
            TimeDomain::EventTime => 0,
            TimeDomain::ProcessingTime => 1,
        }
    }

    /// The domain of a stored tag.
    #[must_use]
    pub const fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(TimeDomain::EventTime),
            1 => Some(TimeDomain::ProcessingTime),
            _ => None,
        }
    }
}

/// A timer that fired: the key and namespace it was registered for, its time and its domain.
/// The callback that gets it also gets the view of that key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer<K, N> {
    /// The key whose state the callback sees.
    pub key: K,
    /// The namespace the timer was registered in (`()` for a `TimerService` without one).
    pub namespace: N,
    /// The timer's time (milliseconds).
    pub timestamp: i64,
    /// Its clock.
    pub domain: TimeDomain,
}

/// Validates the user key of a stored timer: a domain tag, a timestamp and one namespace.
///
/// # Errors
///
/// [`KeyError`] when the bytes are not such an encoding.
#[doc(hidden)]
pub fn validate_timer<N: StateKey>(bytes: &[u8]) -> std::result::Result<(), KeyError> {
    let (&tag, rest) = bytes.split_first().ok_or(KeyError::Truncated {
        type_name: "TimeDomain",
    })?;
    if TimeDomain::from_tag(tag).is_none() {
        return Err(KeyError::InvalidTag {
            type_name: "TimeDomain",
            tag: u32::from(tag),
        });
    }
    <(i64, N)>::from_key_bytes(rest).map(drop)
}

/// Validates the value of a stored timer: timers carry none.
///
/// # Errors
///
/// [`CodecError::Invalid`] for any non-empty value.
#[doc(hidden)]
pub fn validate_no_value(bytes: &[u8]) -> std::result::Result<(), CodecError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(CodecError::Invalid {
            type_name: "timer",
            message: format!("a timer stores no value, found {} bytes", bytes.len()),
        })
    }
}

/// One timer in the index: its timestamp, then the canonical key bytes followed by the
/// canonical namespace bytes. Canonical encodings are prefix-free, so the order of the bytes is
/// the order (key, namespace), and the derived order is Flink's (timestamp, key, namespace).
/// The timestamp and up to 24 bytes of key and namespace (a `u64` key and a `TimeWindow`) sit
/// in the index's node itself: comparisons of timers at different times never leave it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    timestamp: i64,
    rest: SmallVec<[u8; 24]>,
}

impl Entry {
    fn new(timestamp: i64, key: &[u8], namespace: &[u8]) -> Self {
        let mut rest = SmallVec::with_capacity(key.len() + namespace.len());
        rest.extend_from_slice(key);
        rest.extend_from_slice(namespace);
        Self { timestamp, rest }
    }
}

/// A timer taken out of the index: its time, and its key bytes followed by its namespace bytes.
pub(crate) struct Due {
    pub(crate) timestamp: i64,
    pub(crate) rest: SmallVec<[u8; 24]>,
    pub(crate) key_len: usize,
}

impl Due {
    pub(crate) fn key(&self) -> &[u8] {
        self.rest.get(..self.key_len).unwrap_or_default()
    }

    pub(crate) fn namespace(&self) -> &[u8] {
        self.rest.get(self.key_len..).unwrap_or_default()
    }
}

/// How many timers of each key group and domain an instance holds in memory when its backend
/// keeps the timers in time order (Flink keeps 128 as well).
pub const CACHED_PER_GROUP: usize = 128;

/// The first timers of one key group and domain, when the backend holds them all in order.
#[derive(Debug, Default)]
struct GroupCache {
    entries: Sorted,
    /// `None` when `entries` holds every timer of the group. `Some(bound)` when it holds every
    /// timer up to `bound` and the backend may hold more after it: a registration after the
    /// bound goes to the backend only, and when the cache empties, it is refilled from the
    /// backend's timers after the bound (past the deletions of the fired ones).
    limit: Option<Entry>,
}

/// A key group's cached timers, in order, without duplicates: at most the cache size, fired
/// from the front, refilled at the back, so a double-ended queue moves less than a tree.
#[derive(Debug, Default)]
struct Sorted(VecDeque<Entry>);

impl Sorted {
    fn first(&self) -> Option<&Entry> {
        self.0.front()
    }

    fn last(&self) -> Option<&Entry> {
        self.0.back()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `entry` unless it is there; a refill's entries come in order and go to the back.
    fn insert(&mut self, entry: Entry) {
        if self.0.back().is_none_or(|last| *last < entry) {
            self.0.push_back(entry);
        } else if let Err(at) = self.0.binary_search(&entry) {
            self.0.insert(at, entry);
        }
    }

    /// Removes `entry` when it is there; a fired timer is the first.
    fn remove(&mut self, entry: &Entry) -> bool {
        if self.0.front() == Some(entry) {
            self.0.pop_front();
            return true;
        }
        match self.0.binary_search(entry) {
            Ok(at) => self.0.remove(at).is_some(),
            Err(_) => false,
        }
    }

    fn pop_last(&mut self) -> Option<Entry> {
        self.0.pop_back()
    }
}

/// The timers of one domain, in time order.
#[derive(Debug)]
enum Index {
    /// Every timer, in memory.
    Full(BTreeSet<Entry>),
    /// The backend keeps them in order; memory holds the first ones of each key group.
    Cached(Groups),
    /// The backend keeps them as a queue in firing order
    /// ([`StateBackend::queued_timers`]): nothing here.
    Queued,
}

impl Index {
    fn new() -> Self {
        Index::Full(BTreeSet::new())
    }

    fn first(&self) -> Option<&Entry> {
        match self {
            Index::Full(set) => set.first(),
            Index::Cached(groups) => groups.first().map(|(e, _)| e),
            Index::Queued => None,
        }
    }
}

/// The cached first timers of each key group of the instance, and a tournament tree over
/// the groups' earliest timers that names the group to fire from (Flink's
/// `KeyGroupPartitionedPriorityQueue`): a change to one group replays its path to the root,
/// without allocating or cloning a timer.
#[derive(Debug)]
struct Groups {
    /// The first key group: group `i` is key group `first + i`.
    first: u16,
    groups: Vec<GroupCache>,
    /// Node `j`'s winner (a group index) for `j` in `1..leaves`; the leaves are
    /// `leaves..2 * leaves`, leaf `leaves + i` being group `i` (a group index past the groups
    /// is a leaf that never wins).
    tree: Vec<u32>,
    leaves: usize,
}

impl Groups {
    fn new(range: KeyGroupRange) -> Self {
        let n = usize::from(range.last().saturating_sub(range.first())) + 1;
        let leaves = n.next_power_of_two();
        let mut groups = Self {
            first: range.first(),
            groups: (0..n).map(|_| GroupCache::default()).collect(),
            tree: vec![0; 2 * leaves],
            leaves,
        };
        for (i, leaf) in groups.tree.iter_mut().skip(leaves).enumerate() {
            *leaf = u32::try_from(i).unwrap_or(u32::MAX);
        }
        groups.play_all();
        groups
    }

    /// Plays every node, from the leaves up (after the groups were filled).
    fn play_all(&mut self) {
        for j in (1..self.leaves).rev() {
            self.play(j);
        }
    }

    fn head(&self, group: u32) -> Option<&Entry> {
        self.groups.get(group as usize)?.entries.first()
    }

    /// Sets node `j`'s winner from its two children: the group with the earlier first timer
    /// (an empty group never wins).
    fn play(&mut self, j: usize) {
        let (Some(&a), Some(&b)) = (self.tree.get(2 * j), self.tree.get(2 * j + 1)) else {
            return;
        };
        let winner = match (self.head(a), self.head(b)) {
            (Some(x), Some(y)) if y < x => b,
            (None, Some(_)) => b,
            _ => a,
        };
        if let Some(node) = self.tree.get_mut(j) {
            *node = winner;
        }
    }

    /// Replays the path of group `i` after its first timer changed.
    fn replay(&mut self, i: usize) {
        let mut j = (self.leaves + i) / 2;
        while j >= 1 {
            self.play(j);
            j /= 2;
        }
    }

    /// The earliest cached timer and its key group.
    fn first(&self) -> Option<(&Entry, u16)> {
        let winner = *self.tree.get(1)?;
        let entry = self.head(winner)?;
        let kg = self.first.wrapping_add(u16::try_from(winner).ok()?);
        Some((entry, kg))
    }

    /// The index of key group `kg`, when it is one of the instance's.
    fn index(&self, kg: u16) -> Option<usize> {
        let i = usize::from(kg.checked_sub(self.first)?);
        (i < self.groups.len()).then_some(i)
    }

    fn len(&self) -> usize {
        self.groups.iter().map(|g| g.entries.len()).sum()
    }
}

/// Reads up to `size` timers of a group from the backend, after its limit when
/// it has one; the group holds every timer when fewer came.
fn refill<B: StateBackend + ?Sized>(
    backend: &B,
    column: StateId,
    (kg, domain): (u16, TimeDomain),
    size: usize,
    group: &mut GroupCache,
) -> Result<()> {
    let mut after = Vec::new();
    if let Some(limit) = &group.limit {
        limit.timestamp.encode_key(&mut after);
        after.extend_from_slice(&limit.rest);
    }
    let mut read = 0usize;
    let mut malformed = false;
    backend.ordered_timers(
        column,
        kg,
        domain.tag(),
        group.limit.as_ref().map(|_| after.as_slice()),
        size + 1,
        &mut |bytes| {
            read += 1;
            let mut rest = bytes;
            match i64::decode_key(&mut rest) {
                Ok(ts) if read <= size => {
                    group.entries.insert(Entry {
                        timestamp: ts,
                        rest: SmallVec::from_slice(rest),
                    });
                }
                Ok(_) => {}
                Err(_) => malformed = true,
            }
            Ok(())
        },
    )?;
    if malformed {
        return Err(Error::Backend {
            backend: backend.name(),
            message: format!("a timer of key group {kg} in time order is not a timestamp"),
        });
    }
    group.limit = if read > size {
        group.entries.last().cloned()
    } else {
        None
    };
    Ok(())
}

/// The timers of a bound operator: the time-ordered index of what its timer state holds (all
/// of it, or the first timers of each key group), the watermark and the processing time. Part
/// of every key-scoped view.
#[derive(Debug)]
pub struct Timers {
    /// The timer state's column, when the operator declares a timer service.
    column: Option<StateId>,
    event: Index,
    processing: Index,
    /// The key groups of the instance (what a cached index covers).
    range: KeyGroupRange,
    /// How many timers of each key group and domain a cached index holds.
    cache_size: usize,
    /// Key lengths are not stored in the index: the key of an entry is found by decoding
    /// with this function (the operator's key validator's decoder).
    key_len: fn(&[u8]) -> Option<usize>,
    pub(crate) watermark: i64,
    pub(crate) processing_time: i64,
    buf: Vec<u8>,
}

/// The processing time of an instance that has not been told one.
pub(crate) const NO_TIME: i64 = i64::MIN;

impl Timers {
    pub(crate) fn new(column: Option<StateId>, key_len: fn(&[u8]) -> Option<usize>) -> Self {
        Self {
            column,
            event: Index::new(),
            processing: Index::new(),
            range: KeyGroupRange::all(1),
            cache_size: CACHED_PER_GROUP,
            key_len,
            watermark: NO_TIME,
            processing_time: NO_TIME,
            buf: Vec::new(),
        }
    }

    pub(crate) fn column(&self) -> Option<StateId> {
        self.column
    }

    /// Sets how many timers of each key group and domain a cached index holds (at least 1);
    /// takes effect at the next [`rebuild`](Self::rebuild).
    pub(crate) fn set_cache_size(&mut self, size: usize) {
        self.cache_size = size.max(1);
    }

    fn index(&mut self, domain: TimeDomain) -> &mut Index {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    fn index_ref(&self, domain: TimeDomain) -> &Index {
        match domain {
            TimeDomain::EventTime => &self.event,
            TimeDomain::ProcessingTime => &self.processing,
        }
    }

    /// The timers of `domain` held in memory (all of them, or the cached first ones; all of
    /// them for a backend that queues them, which holds them in memory).
    pub(crate) fn in_memory<B: StateBackend + ?Sized>(
        &self,
        backend: &B,
        domain: TimeDomain,
    ) -> usize {
        match self.index_ref(domain) {
            Index::Full(set) => set.len(),
            Index::Cached(groups) => groups.len(),
            Index::Queued => self.queued(backend, domain).ok().flatten().unwrap_or(0),
        }
    }

    /// How many timers of `domain` the backend's queue holds.
    fn queued<B: StateBackend + ?Sized>(
        &self,
        backend: &B,
        domain: TimeDomain,
    ) -> Result<Option<usize>> {
        match self.column {
            Some(column) => backend.queued_timers(column, domain.tag()),
            None => Ok(None),
        }
    }

    /// The number of timers of a domain: from memory, or, when memory holds only the first
    /// timers of each group, by reading the backend's.
    pub(crate) fn len<B: StateBackend + ?Sized>(
        &self,
        backend: &B,
        domain: TimeDomain,
    ) -> Result<usize> {
        if let Index::Queued = self.index_ref(domain) {
            return Ok(self.queued(backend, domain)?.unwrap_or(0));
        }
        let (Index::Cached(_), Some(column)) = (self.index_ref(domain), self.column) else {
            return Ok(self.in_memory(backend, domain));
        };
        let mut n = 0usize;
        for kg in self.range.first()..=self.range.last() {
            backend.ordered_timers(column, kg, domain.tag(), None, usize::MAX, &mut |_| {
                n += 1;
                Ok(())
            })?;
        }
        Ok(n)
    }

    /// The earliest timer's time in a domain (`None` as well when a backend that queues the
    /// timers fails to say).
    pub(crate) fn next<B: StateBackend + ?Sized>(
        &self,
        backend: &B,
        domain: TimeDomain,
    ) -> Option<i64> {
        match (self.index_ref(domain), self.column) {
            (Index::Queued, Some(column)) => backend
                .earliest_timer(column, domain.tag())
                .ok()
                .flatten()
                .map(|t| t.timestamp),
            (index, _) => index.first().map(|e| e.timestamp),
        }
    }

    /// The timer state's column when the backend queues the timers of `domain` itself
    /// ([`StateBackend::queued_timers`]): then they fire from the backend's queue
    /// ([`StateBackend::earliest_timer`], [`StateBackend::pop_earliest_timer`]), not from
    /// [`first_due`](Self::first_due) and [`take`](Self::take).
    pub(crate) fn queue(&self, domain: TimeDomain) -> Option<StateId> {
        match self.index_ref(domain) {
            Index::Queued => self.column,
            _ => None,
        }
    }

    /// The earliest timer of `domain` in the index if it is due at `time`; it stays
    /// registered until [`take`](Self::take).
    pub(crate) fn first_due(&self, domain: TimeDomain, time: i64) -> Option<Due> {
        let entry = self.index_ref(domain).first()?;
        if entry.timestamp > time {
            return None;
        }
        Some(Due {
            timestamp: entry.timestamp,
            rest: entry.rest.clone(),
            key_len: (self.key_len)(&entry.rest).unwrap_or(0),
        })
    }

    /// Takes the timer [`first_due`](Self::first_due) returned out of the backend (its key
    /// with the key group is `key`), then out of the index: a timer whose deletion fails stays
    /// registered in both.
    pub(crate) fn take<B: StateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        domain: TimeDomain,
        due: &Due,
        key: &[u8],
    ) -> Result<()> {
        let Some(column) = self.column else {
            return Ok(());
        };
        let mut user_key = std::mem::take(&mut self.buf);
        Self::user_key(domain, due, &mut user_key);
        let r = backend.delete(column, key, &user_key);
        self.buf = user_key;
        r?;
        let first = match self.index(domain) {
            Index::Full(set) => {
                set.pop_first();
                return Ok(());
            }
            Index::Cached(groups) => groups.first().map(|(e, kg)| (e.clone(), kg)),
            Index::Queued => None,
        };
        if let Some((entry, kg)) = first {
            self.remove_cached(&*backend, domain, kg, &entry)?;
        }
        Ok(())
    }

    /// Takes `entry` out of the cache of group `kg` (when there), refills the group when that
    /// emptied it and the backend holds more, and keeps the group's head current.
    fn remove_cached<B: StateBackend + ?Sized>(
        &mut self,
        backend: &B,
        domain: TimeDomain,
        kg: u16,
        entry: &Entry,
    ) -> Result<()> {
        let (column, size) = (self.column, self.cache_size);
        let Index::Cached(groups) = self.index(domain) else {
            return Ok(());
        };
        let Some(i) = groups.index(kg) else {
            return Ok(());
        };
        let Some(group) = groups.groups.get_mut(i) else {
            return Ok(());
        };
        if !group.entries.remove(entry) {
            return Ok(());
        }
        let r = match column {
            Some(column) if group.entries.is_empty() && group.limit.is_some() => {
                refill(backend, column, (kg, domain), size, group)
            }
            _ => Ok(()),
        };
        groups.replay(i);
        r
    }

    /// Adds `entry` to the cache of group `kg` when it belongs there (not after the group's
    /// limit), keeping at most the cache size: past that, the last leaves the cache
    /// (it stays in the backend) and the limit moves before it.
    fn add_cached(&mut self, domain: TimeDomain, kg: u16, entry: Entry) {
        let size = self.cache_size;
        let Index::Cached(groups) = self.index(domain) else {
            return;
        };
        // A key of another instance's key group is refused before its timers change.
        let Some(i) = groups.index(kg) else {
            return;
        };
        let Some(group) = groups.groups.get_mut(i) else {
            return;
        };
        if group.limit.as_ref().is_some_and(|limit| &entry > limit) {
            return;
        }
        let was_first = group.entries.first().is_none_or(|first| &entry < first);
        group.entries.insert(entry);
        if group.entries.len() > size {
            group.entries.pop_last();
            group.limit = group.entries.last().cloned();
        }
        if was_first {
            groups.replay(i);
        }
    }

    /// Replaces the index with the timers the backend holds for the key groups of `range`.
    pub(crate) fn rebuild<B: StateBackend + ?Sized>(
        &mut self,
        backend: &B,
        range: KeyGroupRange,
    ) -> Result<()> {
        self.range = range;
        let Some(column) = self.column else {
            self.event = Index::new();
            self.processing = Index::new();
            return Ok(());
        };
        if backend.queued_timers(column, 0)?.is_some() {
            self.event = Index::Queued;
            self.processing = Index::Queued;
            return Ok(());
        }
        let cached = backend.ordered_timers(column, range.first(), 0, None, 0, &mut |_| Ok(()))?;
        self.event = Index::new();
        self.processing = Index::new();
        if cached {
            for domain in [TimeDomain::EventTime, TimeDomain::ProcessingTime] {
                let mut groups = Groups::new(range);
                for (kg, group) in (range.first()..=range.last()).zip(groups.groups.iter_mut()) {
                    refill(backend, column, (kg, domain), self.cache_size, group)?;
                }
                groups.play_all();
                *self.index(domain) = Index::Cached(groups);
            }
            return Ok(());
        }
        let mut event = Vec::new();
        let mut processing = Vec::new();
        backend.for_each_entry(column, &mut |key, user_key, _| {
            let owned = key
                .first_chunk::<2>()
                .is_some_and(|kg| range.contains(u16::from_be_bytes(*kg)));
            let (Some((&tag, rest)), true) = (user_key.split_first(), owned) else {
                return Ok(());
            };
            let mut ns = rest;
            let (Ok(ts), Some(k)) = (i64::decode_key(&mut ns), key.get(2..)) else {
                return Ok(());
            };
            match TimeDomain::from_tag(tag) {
                Some(TimeDomain::EventTime) => event.push(Entry::new(ts, k, ns)),
                Some(TimeDomain::ProcessingTime) => processing.push(Entry::new(ts, k, ns)),
                None => {}
            }
            Ok(())
        })?;
        self.event = Index::Full(event.into_iter().collect());
        self.processing = Index::Full(processing.into_iter().collect());
        Ok(())
    }

    /// The stored user key of a timer: domain tag, timestamp, namespace bytes.
    pub(crate) fn user_key(domain: TimeDomain, due: &Due, out: &mut Vec<u8>) {
        out.clear();
        out.push(domain.tag());
        due.timestamp.encode_key(out);
        out.extend_from_slice(due.namespace());
    }

    /// Adds (`add`) or removes a timer of the current key in the backend and the index.
    fn change<B: StateBackend + ?Sized>(
        &mut self,
        backend: &mut B,
        key: &[u8],
        domain: TimeDomain,
        timestamp: i64,
        namespace: &[u8],
        add: bool,
    ) -> Result<()> {
        let Some(column) = self.column else {
            return Ok(());
        };
        let kg = key
            .first_chunk::<2>()
            .map_or(0, |kg| u16::from_be_bytes(*kg));
        let k = key.get(2..).unwrap_or_default();
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.push(domain.tag());
        timestamp.encode_key(&mut buf);
        buf.extend_from_slice(namespace);
        let r = if add {
            backend.put(column, key, &buf, &[])
        } else {
            backend.delete(column, key, &buf)
        };
        self.buf = buf;
        r?;
        if let Index::Queued = self.index_ref(domain) {
            return Ok(());
        }
        let entry = Entry::new(timestamp, k, namespace);
        match (self.index(domain), add) {
            (Index::Full(set), true) => {
                set.insert(entry);
            }
            (Index::Full(set), false) => {
                set.remove(&entry);
            }
            (Index::Cached(_), true) => self.add_cached(domain, kg, entry),
            (Index::Cached(_), false) => self.remove_cached(&*backend, domain, kg, &entry)?,
            (Index::Queued, _) => {}
        }
        Ok(())
    }
}

/// The timer service of the current key: what a
/// [`TimerService<N>`](crate::TimerService) field's accessor returns.
///
/// Registering a timer that exists already leaves one timer (timers are a set of
/// `(domain, timestamp, namespace)` per key); deleting one that does not exist does nothing.
pub struct TimerView<'a, N, B: ?Sized> {
    ctx: KeyContext<'a, B>,
    slot: Slot,
    _n: PhantomData<fn() -> N>,
}

impl<'a, N, B: ?Sized> TimerView<'a, N, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot) -> Self {
        Self {
            ctx,
            slot,
            _n: PhantomData,
        }
    }
}

impl<N: StateKey, B: StateBackend + ?Sized> TimerView<'_, N, B> {
    fn change(
        &mut self,
        domain: TimeDomain,
        namespace: &N,
        timestamp: i64,
        add: bool,
    ) -> Result<()> {
        let (backend, key, scratch, timers) = self.ctx.timer_parts();
        let ns = &mut scratch.user_key;
        ns.clear();
        namespace.encode_key(ns);
        let r = timers.change(backend, key, domain, timestamp, ns, add);
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Registers an event-time timer of the current key in `namespace`: it fires when the
    /// watermark reaches `timestamp`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register_event_time_in(&mut self, namespace: &N, timestamp: i64) -> Result<()> {
        self.change(TimeDomain::EventTime, namespace, timestamp, true)
    }

    /// Deletes an event-time timer of the current key in `namespace`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn delete_event_time_in(&mut self, namespace: &N, timestamp: i64) -> Result<()> {
        self.change(TimeDomain::EventTime, namespace, timestamp, false)
    }

    /// Registers a processing-time timer of the current key in `namespace`: it fires when
    /// the processing time reaches `timestamp`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register_processing_time_in(&mut self, namespace: &N, timestamp: i64) -> Result<()> {
        self.change(TimeDomain::ProcessingTime, namespace, timestamp, true)
    }

    /// Deletes a processing-time timer of the current key in `namespace`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn delete_processing_time_in(&mut self, namespace: &N, timestamp: i64) -> Result<()> {
        self.change(TimeDomain::ProcessingTime, namespace, timestamp, false)
    }

    /// The current watermark, once one was set (or restored).
    #[must_use]
    pub fn current_watermark(&self) -> Option<i64> {
        let w = self.ctx.timers_ref().watermark;
        (w != NO_TIME).then_some(w)
    }

    /// The processing time the instance was last advanced to, once it was.
    #[must_use]
    pub fn current_processing_time(&self) -> Option<i64> {
        let t = self.ctx.timers_ref().processing_time;
        (t != NO_TIME).then_some(t)
    }

    /// The current key's timers: `(domain, timestamp, namespace)`, event time first, each
    /// domain in time order.
    ///
    /// # Errors
    ///
    /// A backend failure, or stored bytes that are not a timer.
    pub fn list(&self) -> Result<Vec<(TimeDomain, i64, N)>> {
        let Some(column) = self.ctx.timers_ref().column else {
            return Ok(Vec::new());
        };
        let wrap = |e| self.ctx.wrap(self.slot.name, e);
        let mut out = Vec::new();
        let entries = self
            .ctx
            .backend_ref()
            .scan(column, self.ctx.key())
            .map_err(wrap)?;
        for entry in entries {
            let (user_key, _) = entry.map_err(wrap)?;
            validate_timer::<N>(user_key).map_err(|e| wrap(e.into()))?;
            let decoded = (|| {
                let (&tag, mut rest) = user_key.split_first()?;
                let domain = TimeDomain::from_tag(tag)?;
                let (ts, ns) = <(i64, N)>::decode_key(&mut rest).ok()?;
                Some((domain, ts, ns))
            })();
            // Validated above: the decode gives what the validation checked.
            if let Some(t) = decoded {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Removes every timer of the current key.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn clear(&mut self) -> Result<()> {
        for (domain, ts, ns) in self.list()? {
            self.change(domain, &ns, ts, false)?;
        }
        Ok(())
    }
}

impl<B: StateBackend + ?Sized> TimerView<'_, (), B> {
    /// Registers an event-time timer of the current key: it fires when the watermark reaches
    /// `timestamp`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register_event_time(&mut self, timestamp: i64) -> Result<()> {
        self.register_event_time_in(&(), timestamp)
    }

    /// Deletes an event-time timer of the current key.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn delete_event_time(&mut self, timestamp: i64) -> Result<()> {
        self.delete_event_time_in(&(), timestamp)
    }

    /// Registers a processing-time timer of the current key.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register_processing_time(&mut self, timestamp: i64) -> Result<()> {
        self.register_processing_time_in(&(), timestamp)
    }

    /// Deletes a processing-time timer of the current key.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn delete_processing_time(&mut self, timestamp: i64) -> Result<()> {
        self.delete_processing_time_in(&(), timestamp)
    }
}

/// The system clock's time, in milliseconds since the Unix epoch (what processing-time timers
/// are usually registered against).
#[must_use]
pub fn system_time_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Waits, on tokio's timer, until the system clock reaches `next` (the earliest
/// processing-time timer, [`Bound::next_timer`](crate::Bound::next_timer)), and returns the
/// system time then: the time to pass to
/// [`Bound::advance_processing_time`](crate::Bound::advance_processing_time). With no timer
/// (`None`) it never completes, so it can sit in a `tokio::select!` next to the input.
///
/// ```
/// use statewright::prelude::*;
/// use statewright::timers::{processing_time_reached, system_time_millis};
///
/// #[derive(StatefulOperator, Default)]
/// #[operator(name = "idle", key = u64)]
/// struct Idle {
///     timers: TimerService,
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let mut op = Idle::default().bind(HeapBackend::new())?;
/// let due = system_time_millis() + 20;
/// op.key(&7)?.timers().register_processing_time(due)?;
/// let mut fired = Vec::new();
/// while op.timer_count(TimeDomain::ProcessingTime)? > 0 {
///     // A job would also `select!` on its input here.
///     let now = processing_time_reached(op.next_timer(TimeDomain::ProcessingTime)).await;
///     op.advance_processing_time(now, |t, _| {
///         fired.push((t.key, t.timestamp));
///         Ok(())
///     })?;
/// }
/// assert_eq!(fired, vec![(7, due)]);
/// # Ok::<(), statewright::Error>(())
/// # }).unwrap();
/// ```
pub async fn processing_time_reached(next: Option<i64>) -> i64 {
    let Some(next) = next else {
        return std::future::pending().await;
    };
    loop {
        let now = system_time_millis();
        if now >= next {
            return now;
        }
        let wait = u64::try_from(next - now).unwrap_or(0);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
}
