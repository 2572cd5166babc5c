//! The table of a timer state: per time domain, the timers of each key group in sorted runs
//! ([`Group`]), and a tournament tree over the groups' earliest timers (the part Flink's
//! `KeyGroupPartitionedPriorityQueue` plays over its per-group `HeapPriorityQueueSet`s).
//!
//! A timer is stored once. Registering it is one insertion into its key group's runs, which
//! gives the set semantics (the same timer twice is one timer); firing pops the first timer of
//! the group at the tree's root and replays that group's path to the root. The order is
//! Flink's: timestamp, then the canonical key bytes, then the canonical namespace bytes.
//! Listing or deleting all timers of one key (`TimerView::list` and `clear`, rare next to
//! registering and firing) walks the timers of its key group, as Flink's RocksDB timers do.
//!
//! As a state, the table is what every other column is: `(key, user key)` entries with empty
//! values, the user key being the domain tag, the timestamp and the namespace, so checkpoints,
//! change tracking and restores see the timers as they see any map state's entries.

use std::cmp::Ordering;
use std::collections::VecDeque;

use smallvec::SmallVec;
use statewright_core::{Error, Result, StateKey};

/// The domain tag and the timestamp at the front of a timer's user key.
const USER_KEY_HEAD: usize = 9;

/// The tree's mark of a subtree without timers.
const NONE: u16 = u16::MAX;

/// The length at which a run of a key group's timers splits in two. Small in this crate's
/// tests, so that they split and refill all the time.
const RUN_MAX: usize = if cfg!(test) { 4 } else { 32 };

/// One timer: its canonical key, then its user key (domain tag, timestamp, namespace), with the
/// timestamp decoded for comparisons. A `u64` key without a namespace (17 bytes) sits in the
/// set's node itself.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    timestamp: i64,
    key_len: u32,
    bytes: SmallVec<[u8; 24]>,
}

impl Row {
    /// The row of `(key, user key)` with the user key's timestamp.
    fn new(key: &[u8], user_key: &[u8], timestamp: i64) -> Result<Self> {
        let key_len = u32::try_from(key.len()).map_err(|_| Error::Backend {
            backend: "heap",
            message: format!("a timer's key of {} bytes is too long", key.len()),
        })?;
        let mut bytes = SmallVec::with_capacity(key.len() + user_key.len());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(user_key);
        Ok(Self {
            timestamp,
            key_len,
            bytes,
        })
    }

    /// The canonical key (without the key group).
    #[inline]
    pub(crate) fn key(&self) -> &[u8] {
        self.bytes.get(..self.key_len as usize).unwrap_or_default()
    }

    /// The stored user key: domain tag, timestamp, namespace.
    #[inline]
    pub(crate) fn user_key(&self) -> &[u8] {
        self.bytes.get(self.key_len as usize..).unwrap_or_default()
    }

    /// The canonical namespace.
    #[inline]
    pub(crate) fn namespace(&self) -> &[u8] {
        self.bytes
            .get(self.key_len as usize + USER_KEY_HEAD..)
            .unwrap_or_default()
    }

    #[inline]
    pub(crate) fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

impl Ord for Row {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        // Canonical keys are prefix-free, so (key, namespace) is the order of their bytes
        // one after the other.
        self.timestamp
            .cmp(&other.timestamp)
            .then_with(|| self.key().cmp(other.key()))
            .then_with(|| self.namespace().cmp(other.namespace()))
    }
}

impl PartialOrd for Row {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Row {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Row {}

/// The timers of one key group and domain, in firing order, as sorted runs of at most
/// [`RUN_MAX`] timers ([`Run`]): the first run, which firing consumes from a cursor, and the
/// others in a queue, with the timestamp of each one's first timer in an array of their own (a
/// lookup's binary search reads 8 bytes a run, contiguous). A timer goes into the last run
/// whose first timer is at or before it; a full run splits in two; when the first run is
/// consumed, the next one takes its place whole. Firing moves no timer and frees one run per
/// run's worth of timers, where popping an ordered set's first element moves the rest of
/// its leaf and rebalances the tree.
///
/// Every timer of the first run (from the cursor on) comes before every other, and there is
/// none only when the group is empty; the other runs are non-empty, sorted, and each one's
/// timers come before the next's.
#[derive(Debug, Default)]
struct Group {
    front: Run,
    /// The first run's positions before this one were fired (their timers stay in their
    /// slots until the run is dropped or split).
    head: usize,
    runs: VecDeque<Run>,
    /// The timestamp of each run's first timer.
    firsts: VecDeque<i64>,
}

impl Group {
    #[inline]
    fn first(&self) -> Option<&Row> {
        self.front.get(self.head)
    }

    /// Whether `row` belongs in the first run (the group is empty, or `row` is at or before
    /// the first run's last timer).
    #[inline]
    fn in_front(&self, row: &Row) -> bool {
        self.front.len() <= self.head
            || self
                .front
                .get(self.front.len() - 1)
                .is_none_or(|last| row <= last)
    }

    /// The number of runs (after the first) whose first timer is at or before `row`.
    #[inline]
    fn runs_before(&self, row: &Row) -> usize {
        let (mut lo, mut hi) = (0, self.runs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let first = self.firsts.get(mid).copied().unwrap_or(i64::MAX);
            let before = match first.cmp(&row.timestamp) {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => self
                    .runs
                    .get(mid)
                    .and_then(Run::first)
                    .is_some_and(|f| f <= row),
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Drops the fired timers of the first run when it is full, and splits it when it still
    /// is: its later half becomes the second run.
    fn split_front(&mut self) {
        if self.front.len() >= RUN_MAX {
            self.front.forget_before(self.head);
            self.head = 0;
            if self.front.len() >= RUN_MAX {
                let later = self.front.split_off(RUN_MAX / 2);
                self.add_run(0, later);
            }
        }
    }

    /// Puts a sorted, non-empty run at position `at` of the runs after the first.
    fn add_run(&mut self, at: usize, run: Run) {
        if let Some(&first) = run.stamps.first() {
            self.firsts.insert(at, first);
            self.runs.insert(at, run);
        }
    }

    fn insert(&mut self, row: Row) -> bool {
        if self.in_front(&row) {
            let Err(at) = self.front.search(self.head, &row) else {
                return false;
            };
            self.front.insert(at, row);
            self.split_front();
            return true;
        }
        let before = self.runs_before(&row);
        let Some(run) = before.checked_sub(1).and_then(|i| self.runs.get_mut(i)) else {
            // After the first run, before every other: the first run's new last timer.
            let at = self.front.len();
            self.front.insert(at, row);
            self.split_front();
            return true;
        };
        // The run's first timer is at or before `row`: `row` goes after it (or is it). The
        // insertion writes the timer after the run's last one to come: that line's load starts
        // now, beside the search's.
        prefetch(run.next_slot());
        let Err(at) = run.search(0, &row) else {
            return false;
        };
        run.insert(at, row);
        if run.len() >= RUN_MAX {
            let later = run.split_off(RUN_MAX / 2);
            self.add_run(before, later);
        }
        true
    }

    fn contains(&self, row: &Row) -> bool {
        if self.in_front(row) {
            return self.front.search(self.head, row).is_ok();
        }
        let before = self.runs_before(row);
        before
            .checked_sub(1)
            .and_then(|i| self.runs.get(i))
            .is_some_and(|run| run.search(0, row).is_ok())
    }

    fn remove(&mut self, row: &Row) -> bool {
        if self.in_front(row) {
            let Ok(at) = self.front.search(self.head, row) else {
                return false;
            };
            self.front.remove(at);
            self.refill();
            return true;
        }
        let Some(i) = self.runs_before(row).checked_sub(1) else {
            return false;
        };
        let Some(run) = self.runs.get_mut(i) else {
            return false;
        };
        let Ok(at) = run.search(0, row) else {
            return false;
        };
        run.remove(at);
        match run.stamps.first() {
            None => {
                self.runs.remove(i);
                self.firsts.remove(i);
            }
            Some(&first) if at == 0 => {
                if let Some(slot) = self.firsts.get_mut(i) {
                    *slot = first;
                }
            }
            Some(_) => {}
        }
        true
    }

    /// Fires the first timer: `fired` sees it, then it is gone.
    #[inline]
    fn pop_first(&mut self, fired: impl FnOnce(&Row)) -> bool {
        let Some(row) = self.front.get(self.head) else {
            return false;
        };
        fired(row);
        // The row stays in its slot until its run is dropped: nothing moves.
        self.head += 1;
        self.refill();
        // The group's next turn comes after the other groups' (the tree interleaves them), by
        // then the timer after the new first, which becomes the first, is in the cache.
        prefetch(self.front.get(self.head + 1));
        true
    }

    /// The next run becomes the first when the first was consumed.
    #[inline]
    fn refill(&mut self) {
        if self.front.len() <= self.head {
            self.head = 0;
            match self.runs.pop_front() {
                Some(run) => {
                    self.firsts.pop_front();
                    self.front = run;
                    // Its timers fire in an order of their own, not that of their slots: all
                    // of them are fetched now, together, for the turns to come.
                    for row in &self.front.rows {
                        prefetch(Some(row));
                    }
                }
                None => self.front.clear(),
            }
        }
    }

    /// The group's timers in firing order.
    fn iter(&self) -> impl Iterator<Item = &Row> {
        (self.head..self.front.len())
            .filter_map(|i| self.front.get(i))
            .chain(self.runs.iter().flat_map(Run::iter))
    }
}

/// A run of timers: their timestamps in order, and the timers themselves in the order they
/// came, with each position's slot among them. A search reads the timestamps (four cache lines
/// for a full run) and at most the timers at the same time; an insertion shifts timestamps and
/// one-byte slots and writes its timer after the others, where keeping the timers themselves
/// in order moved half a run of them (48 bytes each) on every insertion.
#[derive(Debug, Default)]
struct Run {
    stamps: Vec<i64>,
    /// `order[i]` is the slot in `rows` of the run's `i`-th timer; kept in the run itself, so
    /// that a run is two allocations (firing frees them, one run in [`RUN_MAX`] timers or so).
    order: SmallVec<[u8; RUN_MAX]>,
    rows: Vec<Row>,
}

// A slot is one byte.
const _: () = assert!(RUN_MAX <= 256);

impl Run {
    /// An empty run with room for [`RUN_MAX`] timers (a run fills before it splits).
    fn with_room() -> Self {
        Self {
            stamps: Vec::with_capacity(RUN_MAX),
            order: SmallVec::new(),
            rows: Vec::with_capacity(RUN_MAX),
        }
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn clear(&mut self) {
        self.stamps.clear();
        self.order.clear();
        self.rows.clear();
    }

    /// The `i`-th timer.
    #[inline]
    fn get(&self, i: usize) -> Option<&Row> {
        self.rows.get(usize::from(*self.order.get(i)?))
    }

    #[inline]
    fn first(&self) -> Option<&Row> {
        self.get(0)
    }

    /// Where the next timer to come goes.
    #[inline]
    fn next_slot(&mut self) -> Option<&std::mem::MaybeUninit<Row>> {
        self.rows
            .spare_capacity_mut()
            .first()
            .map(|slot| slot as &_)
    }

    /// The timers in order.
    fn iter(&self) -> impl Iterator<Item = &Row> {
        self.order
            .iter()
            .filter_map(|&slot| self.rows.get(usize::from(slot)))
    }

    /// Where `row` is, or would go, among the positions from `from` on.
    #[inline]
    fn search(&self, from: usize, row: &Row) -> std::result::Result<usize, usize> {
        let stamps = self.stamps.get(from..).unwrap_or_default();
        // The timestamps are sorted, so those before `row`'s are counted: a scan of at most
        // four cache lines whose loads do not wait for each other, where a binary search's
        // loads each wait for the one before (a registration at a random time misses the
        // cache on them).
        let before = stamps.iter().filter(|&&t| t < row.timestamp).count();
        let same = stamps
            .get(before..)
            .map_or(0, |rest| rest.partition_point(|&t| t == row.timestamp));
        // Among the timers at the same time, by key and namespace.
        let (mut lo, mut hi) = (from + before, from + before + same);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).map_or(Ordering::Greater, |r| r.cmp(row)) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Puts `row` at position `at` (from [`search`](Self::search)).
    #[inline]
    fn insert(&mut self, at: usize, row: Row) {
        self.stamps.insert(at, row.timestamp);
        self.order.insert(at, self.rows.len() as u8);
        self.rows.push(row);
    }

    /// Removes the timer at position `at`: the last slot's timer moves into its slot.
    fn remove(&mut self, at: usize) {
        if at >= self.order.len() {
            return;
        }
        let slot = self.order.remove(at);
        self.stamps.remove(at);
        let moved = self.rows.len().saturating_sub(1) as u8;
        self.rows.swap_remove(usize::from(slot));
        if slot != moved
            && let Some(o) = self.order.iter_mut().find(|o| **o == moved)
        {
            *o = slot;
        }
    }

    /// Puts the timers in order where they are (each cycle of the order followed with swaps,
    /// without an allocation); the order becomes the identity.
    fn sort_rows(&mut self) {
        let Self { order, rows, .. } = self;
        for i in 0..order.len() {
            // Position `i` wants the timer in slot `order[i]`; each slot visited is marked
            // with its own position.
            let mut j = i;
            while let Some(slot) = order.get_mut(j) {
                let k = usize::from(*slot);
                *slot = j as u8;
                // `k == j`: a slot already visited (an order that is no permutation ends here
                // too instead of going round).
                if k == i || k == j || k >= rows.len() {
                    break;
                }
                rows.swap(j, k);
                j = k;
            }
        }
    }

    /// Drops the positions before `at` (fired timers).
    fn forget_before(&mut self, at: usize) {
        if at > 0 {
            self.sort_rows();
            let at = at.min(self.rows.len());
            self.rows.drain(..at);
            self.stamps.drain(..at);
            self.order.truncate(self.rows.len());
        }
    }

    /// Splits off the timers from position `at` on as a run of their own.
    fn split_off(&mut self, at: usize) -> Run {
        self.sort_rows();
        let at = at.min(self.rows.len());
        let mut later = Run::with_room();
        later.rows.extend(self.rows.drain(at..));
        later.stamps.extend(self.stamps.drain(at..));
        later
            .order
            .extend((0..later.rows.len()).map(|slot| slot as u8));
        self.order.truncate(at);
        later
    }
}

/// Asks the processor to bring `row` into the cache without waiting for it.
#[inline(always)]
fn prefetch<T>(row: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(row) = row {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = std::ptr::from_ref(row).cast::<i8>();
        let end = start.wrapping_add(size_of::<T>().saturating_sub(1));
        #[allow(unsafe_code)]
        // SAFETY: a prefetch reads nothing the program sees and cannot fault; SSE, which it
        // needs, is part of every x86-64 processor.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(start);
            _mm_prefetch::<_MM_HINT_T0>(end);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// A node of the tournament: the group whose first timer wins below it, with that timer's
/// timestamp, so that most matches compare two integers side by side.
#[derive(Debug, Clone, Copy)]
struct Node {
    timestamp: i64,
    group: u16,
}

/// A subtree without timers.
const EMPTY: Node = Node {
    timestamp: i64::MAX,
    group: NONE,
};

/// The timers of one domain.
#[derive(Debug, Default)]
struct Queue {
    /// Per key group, its timers in firing order.
    groups: Vec<Group>,
    /// The tournament: `tree[1]` names the group with the earliest timer, node `n`'s children
    /// are `2n` and `2n + 1`, group `g` is the leaf `leaves + g`.
    tree: Vec<Node>,
    leaves: usize,
    len: usize,
}

impl Queue {
    /// Sizes the queue for `groups` key groups (on its first timer).
    fn init(&mut self, groups: usize) {
        if self.leaves == 0 {
            self.leaves = groups.max(1).next_power_of_two();
            self.groups = (0..groups).map(|_| Group::default()).collect();
            self.tree = vec![EMPTY; 2 * self.leaves];
        }
    }

    fn group(&self, g: u16) -> Option<&Group> {
        self.groups.get(usize::from(g))
    }

    /// The node of `a` and `b` whose timer fires first.
    #[inline(always)]
    fn earlier(&self, a: Node, b: Node) -> Node {
        if a.timestamp != b.timestamp {
            // A select, not a branch: which of two groups fires first is a coin toss the
            // processor cannot predict.
            let a_first = a.timestamp < b.timestamp;
            return Node {
                timestamp: if a_first { a.timestamp } else { b.timestamp },
                group: if a_first { a.group } else { b.group },
            };
        }
        self.tie(a, b)
    }

    /// [`earlier`](Self::earlier) of two nodes at the same time: by key and namespace.
    #[cold]
    #[inline(never)]
    fn tie(&self, a: Node, b: Node) -> Node {
        if b.group == NONE {
            return a;
        }
        if a.group == NONE {
            return b;
        }
        let first = |g: u16| self.group(g).and_then(Group::first);
        match (first(a.group), first(b.group)) {
            (Some(x), Some(y)) if y < x => b,
            _ => a,
        }
    }

    /// Replays the tree from group `g`'s leaf after its first timer changed.
    fn replay(&mut self, g: u16) {
        let mut winner = match self.group(g).and_then(Group::first) {
            Some(row) => Node {
                timestamp: row.timestamp,
                group: g,
            },
            None => EMPTY,
        };
        let mut node = self.leaves + usize::from(g);
        if let Some(leaf) = self.tree.get_mut(node) {
            *leaf = winner;
        }
        while node > 1 {
            let sibling = self.tree.get(node ^ 1).copied().unwrap_or(EMPTY);
            winner = self.earlier(winner, sibling);
            node /= 2;
            if let Some(slot) = self.tree.get_mut(node) {
                *slot = winner;
            }
        }
    }

    fn insert(&mut self, g: u16, row: Row) -> bool {
        let Some(set) = self.groups.get_mut(usize::from(g)) else {
            return false;
        };
        let new_first = set.first().is_none_or(|f| row < *f);
        if !set.insert(row) {
            return false;
        }
        self.len += 1;
        if new_first {
            self.replay(g);
        }
        true
    }

    fn remove(&mut self, g: u16, row: &Row) -> bool {
        let Some(set) = self.groups.get_mut(usize::from(g)) else {
            return false;
        };
        let was_first = set.first() == Some(row);
        if !set.remove(row) {
            return false;
        }
        self.len -= 1;
        if was_first {
            self.replay(g);
        }
        true
    }

    fn winner(&self) -> Option<u16> {
        self.tree.get(1).map(|n| n.group).filter(|&g| g != NONE)
    }

    fn earliest(&self) -> Option<(u16, &Row)> {
        let g = self.winner()?;
        Some((g, self.group(g)?.first()?))
    }

    fn pop_earliest(&mut self, fired: impl FnOnce(u16, &Row)) -> bool {
        let Some(g) = self.winner() else {
            return false;
        };
        let popped = self
            .groups
            .get_mut(usize::from(g))
            .is_some_and(|group| group.pop_first(|row| fired(g, row)));
        if popped {
            self.len -= 1;
            self.replay(g);
        }
        popped
    }
}

/// A timer state's table: a [`Queue`] per time domain (by tag).
#[derive(Debug)]
pub(crate) struct TimerTable {
    max_parallelism: u16,
    queues: [Queue; 2],
}

/// A timer's user key: its domain's tag and timestamp.
fn parse_user_key(user_key: &[u8]) -> Option<(usize, i64)> {
    let (&tag, mut rest) = user_key.split_first()?;
    let ts = i64::decode_key(&mut rest).ok()?;
    (tag < 2).then_some((usize::from(tag), ts))
}

#[cold]
fn not_a_timer(user_key: &[u8]) -> Error {
    Error::Backend {
        backend: "heap",
        message: format!(
            "a timer state's user key is a domain tag (0 or 1) and a timestamp, not {} byte(s) \
             starting {:02x?}",
            user_key.len(),
            user_key
                .get(..USER_KEY_HEAD.min(user_key.len()))
                .unwrap_or_default()
        ),
    }
}

impl TimerTable {
    pub(crate) fn new(max_parallelism: u16) -> Self {
        Self {
            max_parallelism,
            queues: [Queue::default(), Queue::default()],
        }
    }

    pub(crate) fn max_parallelism(&self) -> u16 {
        self.max_parallelism
    }

    /// The key group and canonical bytes of a key, checked against the key's hash.
    pub(crate) fn checked<'k>(&self, key: &'k [u8]) -> Result<(u16, &'k [u8])> {
        crate::flat::checked_key(key, self.max_parallelism)
    }

    /// Checks a write of `(key, user_key, value)` before it is made (and recorded).
    pub(crate) fn check(&self, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        self.parts(key, user_key, value).map(drop)
    }

    /// The key group, canonical key, domain and timestamp of a write, checked.
    #[inline]
    fn parts<'k>(
        &self,
        key: &'k [u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<(u16, &'k [u8], usize, i64)> {
        let (g, canonical) = self.checked(key)?;
        let Some((domain, ts)) = parse_user_key(user_key) else {
            return Err(not_a_timer(user_key));
        };
        if !value.is_empty() {
            return Err(Error::Backend {
                backend: "heap",
                message: format!("a timer stores no value, not {} byte(s)", value.len()),
            });
        }
        Ok((g, canonical, domain, ts))
    }

    /// The key group, canonical key and user key's parts of a lookup; `None` for a user key
    /// that is no timer's (nothing is stored there).
    fn locate<'k>(&self, key: &'k [u8], user_key: &[u8]) -> Option<(u16, &'k [u8], usize, i64)> {
        let prefix = key.first_chunk::<2>()?;
        let g = u16::from_be_bytes(*prefix);
        let (domain, ts) = parse_user_key(user_key)?;
        Some((g, key.get(2..)?, domain, ts))
    }

    /// Stores a timer; returns whether it is new.
    pub(crate) fn insert(&mut self, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<bool> {
        let (g, canonical, domain, ts) = self.parts(key, user_key, value)?;
        let row = Row::new(canonical, user_key, ts)?;
        let groups = usize::from(self.max_parallelism);
        let Some(queue) = self.queues.get_mut(domain) else {
            return Err(not_a_timer(user_key));
        };
        queue.init(groups);
        Ok(queue.insert(g, row))
    }

    /// The domain, key group and row a lookup of `(key, user_key)` searches for; `None` for a
    /// user key that is no timer's (nothing is stored there).
    fn probe(&self, key: &[u8], user_key: &[u8]) -> Result<Option<(usize, u16, Row)>> {
        let Some((g, canonical, domain, ts)) = self.locate(key, user_key) else {
            return Ok(None);
        };
        Ok(Some((domain, g, Row::new(canonical, user_key, ts)?)))
    }

    /// Whether the timer is stored.
    pub(crate) fn contains(&self, key: &[u8], user_key: &[u8]) -> Result<bool> {
        let Some((domain, g, row)) = self.probe(key, user_key)? else {
            return Ok(false);
        };
        Ok(self
            .queues
            .get(domain)
            .and_then(|q| q.group(g))
            .is_some_and(|set| set.contains(&row)))
    }

    /// Removes a timer; returns whether it was stored.
    pub(crate) fn remove(&mut self, key: &[u8], user_key: &[u8]) -> Result<bool> {
        let Some((domain, g, row)) = self.probe(key, user_key)? else {
            return Ok(false);
        };
        Ok(self
            .queues
            .get_mut(domain)
            .is_some_and(|q| q.remove(g, &row)))
    }

    /// The user keys of `key`'s timers, in user-key order (domain, timestamp, namespace).
    pub(crate) fn scan<'a>(&'a self, key: &[u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let g = key
            .first_chunk::<2>()
            .map_or(NONE, |p| u16::from_be_bytes(*p));
        let canonical: SmallVec<[u8; 24]> = SmallVec::from_slice(key.get(2..).unwrap_or_default());
        self.queues
            .iter()
            .flat_map(move |q| q.group(g).into_iter().flat_map(Group::iter))
            .filter(move |r| r.key() == canonical.as_slice())
            .map(Row::user_key)
    }

    /// Removes every timer of `key`.
    pub(crate) fn remove_key(&mut self, key: &[u8]) {
        let doomed: Vec<Vec<u8>> = self.scan(key).map(<[u8]>::to_vec).collect();
        for user_key in doomed {
            // Every user key came out of the table: it is a timer's.
            let _ = self.remove(key, &user_key);
        }
    }

    /// Visits every timer as `(key with its key group, user key)`: domain by domain, key
    /// group by key group, in firing order.
    pub(crate) fn for_each(&self, mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        let mut key = Vec::new();
        for q in &self.queues {
            for (g, group) in q.groups.iter().enumerate() {
                for row in group.iter() {
                    key.clear();
                    key.extend_from_slice(&(g as u16).to_be_bytes());
                    key.extend_from_slice(row.key());
                    visit(&key, row.user_key())?;
                }
            }
        }
        Ok(())
    }

    /// Visits the timers of whole key groups, from `*cursor` (domain and key group) on, until
    /// at least `limit` were visited or every group was; wraps the cursor to 0 after the last.
    pub(crate) fn visit_some(
        &self,
        cursor: &mut u64,
        limit: usize,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        let groups = usize::from(self.max_parallelism);
        let total = 2 * groups;
        let mut at = usize::try_from(*cursor).unwrap_or(0);
        let mut visited = 0;
        let mut steps = 0;
        let mut key = Vec::new();
        while visited < limit && steps < total {
            if at >= total {
                at = 0;
            }
            let set = self
                .queues
                .get(at / groups.max(1))
                .and_then(|q| q.groups.get(at % groups.max(1)));
            for row in set.into_iter().flat_map(Group::iter) {
                key.clear();
                key.extend_from_slice(&((at % groups.max(1)) as u16).to_be_bytes());
                key.extend_from_slice(row.key());
                visit(&key, row.user_key())?;
                visited += 1;
            }
            at += 1;
            steps += 1;
        }
        *cursor = if at >= total { 0 } else { at as u64 };
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.queues.iter().map(|q| q.len).sum()
    }

    /// The number of timers of a domain.
    pub(crate) fn len_of(&self, domain: u8) -> usize {
        self.queues.get(usize::from(domain)).map_or(0, |q| q.len)
    }

    pub(crate) fn clear(&mut self) {
        self.queues = [Queue::default(), Queue::default()];
    }

    /// The earliest timer of a domain, with its key group.
    pub(crate) fn earliest(&self, domain: u8) -> Option<(u16, &Row)> {
        self.queues.get(usize::from(domain))?.earliest()
    }

    /// Removes the earliest timer of a domain.
    pub(crate) fn pop_earliest(&mut self, domain: u8, fired: impl FnOnce(u16, &Row)) -> bool {
        self.queues
            .get_mut(usize::from(domain))
            .is_some_and(|q| q.pop_earliest(fired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use statewright_core::EncodeKey;
    use statewright_core::keygroup::key_group;
    use std::collections::BTreeSet;

    impl TimerTable {
        /// Whether every run is within [`RUN_MAX`] timers, its order a permutation of its
        /// slots and its timestamps those of its timers in order.
        fn runs_hold(&self) -> bool {
            let run_holds = |run: &Run| {
                let mut slots: Vec<u8> = run.order.to_vec();
                slots.sort_unstable();
                run.len() < RUN_MAX
                    && slots.iter().copied().eq(0..run.rows.len() as u8)
                    && run
                        .stamps
                        .iter()
                        .copied()
                        .eq(run.iter().map(Row::timestamp))
            };
            self.queues.iter().flat_map(|q| &q.groups).all(|g| {
                run_holds(&g.front)
                    && g.head <= g.front.len()
                    && g.runs.iter().all(|r| run_holds(r) && r.len() > 0)
            })
        }

        /// The earliest timer of a domain, fired, with its key group.
        fn pop(&mut self, domain: u8) -> Option<(u16, Row)> {
            let mut popped = None;
            self.pop_earliest(domain, |g, row| popped = Some((g, row.clone())));
            popped
        }
    }

    const MAX: u16 = 8;

    fn key(k: u64) -> Vec<u8> {
        let canonical = k.to_be_bytes();
        let mut key = key_group(&canonical, MAX).to_be_bytes().to_vec();
        key.extend_from_slice(&canonical);
        key
    }

    fn user_key(domain: u8, ts: i64, ns: &[u8]) -> Vec<u8> {
        let mut u = vec![domain];
        ts.encode_key(&mut u);
        u.extend_from_slice(ns);
        u
    }

    #[test]
    fn timers_are_a_set_per_key_and_fire_in_time_then_key_then_namespace_order() {
        let mut t = TimerTable::new(MAX);
        assert!(t.insert(&key(3), &user_key(0, 10, &[2]), &[]).unwrap());
        assert!(!t.insert(&key(3), &user_key(0, 10, &[2]), &[]).unwrap());
        assert!(t.insert(&key(3), &user_key(0, 10, &[1]), &[]).unwrap());
        assert!(t.insert(&key(1), &user_key(0, 10, &[9]), &[]).unwrap());
        assert!(t.insert(&key(2), &user_key(0, -5, &[]), &[]).unwrap());
        assert!(t.insert(&key(2), &user_key(1, -7, &[]), &[]).unwrap());
        assert_eq!((t.len(), t.len_of(0), t.len_of(1)), (5, 4, 1));
        assert!(t.contains(&key(3), &user_key(0, 10, &[1])).unwrap());
        assert!(!t.contains(&key(3), &user_key(1, 10, &[1])).unwrap());
        let listed: Vec<_> = t.scan(&key(3)).map(<[u8]>::to_vec).collect();
        assert_eq!(listed, vec![user_key(0, 10, &[1]), user_key(0, 10, &[2])]);
        let mut fired = Vec::new();
        while let Some((g, row)) = t.pop(0) {
            assert_eq!(g, key_group(row.key(), MAX));
            fired.push((
                row.timestamp(),
                row.key().to_vec(),
                row.namespace().to_vec(),
            ));
        }
        let k = |k: u64| k.to_be_bytes().to_vec();
        assert_eq!(
            fired,
            vec![
                (-5, k(2), vec![]),
                (10, k(1), vec![9]),
                (10, k(3), vec![1]),
                (10, k(3), vec![2]),
            ]
        );
        assert_eq!(t.earliest(1).map(|(_, r)| r.timestamp()), Some(-7));
    }

    #[test]
    fn a_write_that_is_no_timer_is_refused() {
        let mut t = TimerTable::new(MAX);
        let mut wrong_group = key(3);
        wrong_group[1] ^= 1;
        assert!(t.insert(&wrong_group, &user_key(0, 1, &[]), &[]).is_err());
        assert!(t.insert(&[0], &user_key(0, 1, &[]), &[]).is_err());
        assert!(
            t.insert(&key(3), &[2, 0, 0, 0, 0, 0, 0, 0, 0], &[])
                .is_err()
        );
        assert!(t.insert(&key(3), &[0, 1], &[]).is_err());
        assert!(t.insert(&key(3), &user_key(0, 1, &[]), &[1]).is_err());
        assert_eq!(t.len(), 0);
        assert!(!t.contains(&key(3), &[7]).unwrap());
        assert!(!t.remove(&key(3), &[7]).unwrap());
    }

    proptest! {
        /// The table against a `BTreeSet` of `(domain, timestamp, key, namespace)`: inserts,
        /// removes, key deletions and pops in any mix, over few timestamps (ties) and keys.
        #[test]
        fn the_table_behaves_as_an_ordered_set(
            ops in proptest::collection::vec((0u8..5, 0u8..2, -3i64..4, 0u64..12, 0u8..3), 1..300)
        ) {
            let mut t = TimerTable::new(MAX);
            let mut model = BTreeSet::new();
            for (op, domain, ts, k, ns) in ops {
                let ns_bytes = vec![ns; usize::from(ns)];
                let u = user_key(domain, ts, &ns_bytes);
                let item = (domain, ts, k.to_be_bytes(), ns_bytes.clone());
                match op {
                    0 | 1 => prop_assert_eq!(t.insert(&key(k), &u, &[]).unwrap(), model.insert(item)),
                    2 => prop_assert_eq!(t.remove(&key(k), &u).unwrap(), model.remove(&item)),
                    3 => {
                        let first = model.iter().find(|i| i.0 == domain).cloned();
                        let popped = t.pop(domain).map(|(_, r)| {
                            (domain, r.timestamp(), r.key().try_into().unwrap(), r.namespace().to_vec())
                        });
                        if let Some(f) = &first {
                            model.remove(f);
                        }
                        prop_assert_eq!(popped, first);
                    }
                    _ => {
                        t.remove_key(&key(k));
                        model.retain(|i| i.2 != k.to_be_bytes());
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                prop_assert!(t.runs_hold());
                for d in 0..2 {
                    let first = model.iter().find(|i| i.0 == d).map(|i| (i.1, i.2.to_vec(), i.3.clone()));
                    let earliest = t.earliest(d).map(|(_, r)| (r.timestamp(), r.key().to_vec(), r.namespace().to_vec()));
                    prop_assert_eq!(earliest, first);
                }
                let listed: Vec<_> = t.scan(&key(k)).map(<[u8]>::to_vec).collect();
                let expected: Vec<_> = model
                    .iter()
                    .filter(|i| i.2 == k.to_be_bytes())
                    .map(|i| user_key(i.0, i.1, &i.3))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                prop_assert_eq!(listed, expected);
            }
        }
    }
}
