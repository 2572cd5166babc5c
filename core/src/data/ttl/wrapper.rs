//! [`TtlBackend`]: TTL enforced over any backend with [`ExpiryHooks`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
use std::time::{SystemTime, UNIX_EPOCH};

use crate::data::backend::{
    ChangeVisitor, DetachedState, EntryHint, EntryIter, EntryVisitor, NativeFiles, NativeRestore,
    StateBackend, StateId, ValueReader,
};
use crate::data::backend::{ExpiryHooks, QueuedTimer, Snapshots};
use crate::model::codec::Frames;
use crate::model::descriptor::{
    OperatorDescriptor, StateDescriptor, StateKind, TtlTime, TtlUpdate, TtlVisibility,
};
use crate::model::error::{CodecError, Error, Result};

use super::NO_WATERMARK;
use super::clock::{Clock, SystemClock, Time, cached_now};
use super::stamp::*;

/// Expired values (or list elements) removed from one state, by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TtlStats {
    /// `operator.state`.
    pub state: String,
    /// Removed when a read found them expired.
    pub on_access: u64,
    /// Removed by incremental cleanup.
    pub by_cleanup: u64,
    /// Dropped by the backend's expiry filter (RocksDB compactions).
    pub in_compaction: u64,
    /// Left out when restoring a snapshot.
    pub at_restore: u64,
}

impl TtlStats {
    /// All causes together.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.on_access + self.by_cleanup + self.in_compaction + self.at_restore
    }
}

#[derive(Debug)]
struct StateTtl {
    name: String,
    list: bool,
    ttl_ms: i64,
    update_on_read: bool,
    return_expired: bool,
    mode: TtlTime,
    cursor: u64,
    steps: bool,
    on_access: u64,
    by_cleanup: u64,
    at_restore: u64,
    in_compaction: Arc<AtomicU64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Access,
    Cleanup,
}

/// A change a read found necessary, applied at the next mutable call: remove expired data,
/// refresh stamps read under `update = "on_read_and_write"`.
#[derive(Debug)]
struct Fix {
    state: StateId,
    key: Box<[u8]>,
    user_key: Box<[u8]>,
    touch: Option<i64>,
    cause: Cause,
}

/// Entries incremental cleanup checks each time it runs, by default (Flink's default).
pub const DEFAULT_CLEANUP_ENTRIES: usize = 5;
/// Key changes between two runs of incremental cleanup, by default.
pub const DEFAULT_CLEANUP_EVERY: u32 = 8;

/// Enforces the time-to-live of every state that declares one, over any backend.
///
/// States without a TTL pass through untouched. Processing time comes from a [`Clock`] (the
/// system clock by default, a [`ManualClock`](super::ManualClock) in tests); event time is the watermark the
/// runtime advances with [`set_watermark`](Self::set_watermark).
///
/// Processing time is read from the clock once per key change and once after every write, not
/// on every access: a record's reads and writes share one time (reading the system clock costs
/// more than a heap read).
///
/// Reads take `&self`, so what a read finds to change (expired data to remove, stamps to
/// refresh) is applied at the next key change or write, re-checked against the stored bytes
/// then; a write never loses to an older read.
pub struct TtlBackend<B> {
    inner: B,
    time: Time,
    states: Vec<Option<StateTtl>>,
    cleanup_entries: usize,
    cleanup_every: u32,
    key_changes: u32,
    cleanup_next: usize,
    pending: RefCell<Vec<Fix>>,
    /// Processing time as read once for the current key (see [`Self::now`]).
    processing: Cell<Option<i64>>,
    reads: bumpalo::Bump,
    buf: Vec<u8>,
    fixed: Vec<u8>,
}

impl<B: fmt::Debug> fmt::Debug for TtlBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TtlBackend")
            .field("inner", &self.inner)
            .field("clock", &self.time.clock)
            .field("watermark", &self.time.watermark.load(Ordering::Relaxed))
            .field("cleanup_entries", &self.cleanup_entries)
            .field("cleanup_every", &self.cleanup_every)
            .finish_non_exhaustive()
    }
}

impl<B: ExpiryHooks> TtlBackend<B> {
    /// Wraps `inner`, with the system clock for processing time.
    pub fn new(inner: B) -> Self {
        Self::with_clock(inner, SystemClock)
    }

    /// Wraps `inner`, with `clock` for processing time.
    pub fn with_clock(inner: B, clock: impl Clock + 'static) -> Self {
        Self {
            inner,
            time: Time {
                clock: Arc::new(clock),
                watermark: Arc::new(AtomicI64::new(NO_WATERMARK)),
            },
            states: Vec::new(),
            cleanup_entries: DEFAULT_CLEANUP_ENTRIES,
            cleanup_every: DEFAULT_CLEANUP_EVERY,
            key_changes: 0,
            cleanup_next: 0,
            pending: RefCell::default(),
            processing: Cell::new(None),
            reads: bumpalo::Bump::new(),
            buf: Vec::new(),
            fixed: Vec::new(),
        }
    }

    /// Incremental cleanup checks `entries` entries of one TTL state (round robin over the
    /// states) every `every` key changes; by default 5 entries every 8 key changes. `entries`
    /// 0 turns it off. Used on backends that can walk their entries in steps (the heap
    /// backend); RocksDB cleans up in compactions instead.
    #[must_use]
    pub fn with_incremental_cleanup(mut self, entries: usize, every: u32) -> Self {
        self.cleanup_entries = entries;
        self.cleanup_every = every.max(1);
        self
    }

    /// Advances event time. Watermarks never go back: a lower value is ignored.
    pub fn set_watermark(&self, millis: i64) {
        self.time.watermark.fetch_max(millis, Ordering::Relaxed);
    }

    /// The current watermark, once one was set.
    #[must_use]
    pub fn watermark(&self) -> Option<i64> {
        let w = self.time.watermark.load(Ordering::Relaxed);
        (w != NO_WATERMARK).then_some(w)
    }

    /// The wrapped backend.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The wrapped backend, mutably (for backend-specific calls).
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The wrapped backend; changes found by reads and not yet applied are dropped (expired
    /// data stays expired by its stamp).
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Expired data removed so far, per state with a TTL, in registration order.
    #[must_use]
    pub fn ttl_stats(&self) -> Vec<TtlStats> {
        self.states
            .iter()
            .flatten()
            .map(|t| TtlStats {
                state: t.name.clone(),
                on_access: t.on_access,
                by_cleanup: t.by_cleanup,
                in_compaction: t.in_compaction.load(Ordering::Relaxed),
                at_restore: t.at_restore,
            })
            .collect()
    }

    /// Publishes [`ttl_stats`](Self::ttl_stats) through the `metrics` facade as the counter
    /// `statewright_ttl_expired_total` with labels `state` and `cause` (`access`, `cleanup`,
    /// `compaction`, `restore`).
    pub fn publish_metrics(&self) {
        for s in self.ttl_stats() {
            for (cause, n) in [
                ("access", s.on_access),
                ("cleanup", s.by_cleanup),
                ("compaction", s.in_compaction),
                ("restore", s.at_restore),
            ] {
                metrics::counter!("statewright_ttl_expired_total", "state" => s.state.clone(), "cause" => cause)
                    .absolute(n);
            }
        }
    }

    /// Applies the changes reads found necessary. Called before every write; a change that
    /// fails stays queued, so it is retried.
    ///
    /// # Errors
    ///
    /// A backend failure.
    #[inline]
    pub fn apply_pending(&mut self) -> Result<()> {
        // Called on every write and key change, and nearly always with nothing to do.
        if self.pending.get_mut().is_empty() {
            return Ok(());
        }
        self.apply_queued()
    }

    /// [`apply_pending`](Self::apply_pending) when there is something to apply, out of line.
    #[inline(never)]
    fn apply_queued(&mut self) -> Result<()> {
        let fixes = std::mem::take(self.pending.get_mut());
        let mut fixes = fixes.into_iter();
        while let Some(fix) = fixes.next() {
            if let Err(e) = self.apply(&fix) {
                let rest = self.pending.get_mut();
                rest.push(fix);
                rest.extend(fixes);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The state's current time: the watermark, or the processing time cached until the next
    /// key change or write.
    fn now(&self, mode: TtlTime) -> i64 {
        cached_now(&self.time, &self.processing, mode)
    }

    fn ttl(&self, state: StateId) -> Option<&StateTtl> {
        self.states.get(state.0 as usize).and_then(Option::as_ref)
    }

    /// Whether an earlier read queued a fix of this entry, which removes its expired data.
    fn removal_queued(&self, state: StateId, key: &[u8], user_key: &[u8]) -> bool {
        self.pending.try_borrow().is_ok_and(|p| {
            p.iter().any(|f| {
                matches!(f.cause, Cause::Access)
                    && f.state == state
                    && *f.key == *key
                    && *f.user_key == *user_key
            })
        })
    }

    fn defer(&self, state: StateId, key: &[u8], user_key: &[u8], touch: Option<i64>, cause: Cause) {
        self.pending.borrow_mut().push(Fix {
            state,
            key: key.into(),
            user_key: user_key.into(),
            touch,
            cause,
        });
    }

    fn apply(&mut self, fix: &Fix) -> Result<()> {
        let Some(t) = self
            .states
            .get_mut(fix.state.0 as usize)
            .and_then(Option::as_mut)
        else {
            return Ok(());
        };
        self.buf.clear();
        match self.inner.get(fix.state, &fix.key, &fix.user_key)? {
            Some(raw) => self.buf.extend_from_slice(raw),
            None => return Ok(()),
        }
        // A refresh happens as of the read that asked for it: what was alive then lives on.
        let now = match fix.touch {
            Some(t) => t,
            None => cached_now(&self.time, &self.processing, t.mode),
        };
        self.fixed.clear();
        let r = retain_live(t.list, &self.buf, t.ttl_ms, now, fix.touch, &mut self.fixed)?;
        match fix.cause {
            Cause::Access => t.on_access += r.dropped,
            Cause::Cleanup => t.by_cleanup += r.dropped,
        }
        if r.kept == 0 {
            self.inner.delete(fix.state, &fix.key, &fix.user_key)
        } else if r.dropped > 0 || (fix.touch.is_some() && self.fixed != self.buf) {
            self.inner
                .put(fix.state, &fix.key, &fix.user_key, &self.fixed)
        } else {
            Ok(())
        }
    }

    /// Checks the next few entries of one TTL state (round robin over states).
    fn cleanup_step(&mut self) {
        if self.cleanup_entries == 0 || self.states.is_empty() {
            return;
        }
        self.key_changes = self.key_changes.wrapping_add(1);
        if !self.key_changes.is_multiple_of(self.cleanup_every) {
            return;
        }
        let n = self.states.len();
        for _ in 0..n {
            let i = self.cleanup_next % n;
            self.cleanup_next = (i + 1) % n;
            let Some(t) = self.states.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if !t.steps {
                continue;
            }
            let state = StateId(u32::try_from(i).unwrap_or(u32::MAX));
            let now = cached_now(&self.time, &self.processing, t.mode);
            let (list, ttl_ms) = (t.list, t.ttl_ms);
            let pending = &self.pending;
            let mut visit = |key: &[u8], user_key: &[u8], raw: &[u8]| {
                if count_expired(list, raw, ttl_ms, now).0 > 0 {
                    pending.borrow_mut().push(Fix {
                        state,
                        key: key.into(),
                        user_key: user_key.into(),
                        touch: None,
                        cause: Cause::Cleanup,
                    });
                }
                Ok(())
            };
            match self
                .inner
                .visit_some(state, &mut t.cursor, self.cleanup_entries, &mut visit)
            {
                Ok(true) => return,
                // No stepwise walk on this backend (or it failed): its own filter, if any,
                // does the cleanup.
                Ok(false) | Err(_) => t.steps = false,
            }
        }
    }

    fn stamp_now(&self, t: &StateTtl) -> Result<i64> {
        let now = self.now(t.mode);
        if t.mode == TtlTime::Event && now == NO_WATERMARK {
            return Err(Error::NoWatermark {
                state: t.name.clone(),
            });
        }
        Ok(now)
    }

    fn stamped<'a>(
        &'a self,
        t: &StateTtl,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        raw: &'a [u8],
        now: i64,
    ) -> Result<Option<&'a [u8]>> {
        if !t.list {
            let (stamp, value) = split_stamp(raw, 0)?;
            if is_expired(stamp, t.ttl_ms, now) {
                // Returned once, as Flink does: the read that finds it expired cleans it up,
                // and every later read sees it gone.
                let first = !self.removal_queued(state, key, user_key);
                if first {
                    self.defer(state, key, user_key, None, Cause::Access);
                }
                return Ok((t.return_expired && first).then_some(value));
            }
            if t.update_on_read {
                self.defer(state, key, user_key, Some(now), Cause::Access);
            }
            return Ok(Some(value));
        }
        let mut out = bumpalo::collections::Vec::with_capacity_in(raw.len(), &self.reads);
        let mut expired = false;
        // Expired elements are returned by the first read only (see the value case above).
        let mut return_expired = None;
        for (i, frame) in Frames::new(raw).enumerate() {
            let (stamp, element) = split_stamp(frame?, i)?;
            if is_expired(stamp, t.ttl_ms, now) {
                expired = true;
                let returned = *return_expired.get_or_insert_with(|| {
                    t.return_expired && !self.removal_queued(state, key, user_key)
                });
                if !returned {
                    continue;
                }
            }
            let len =
                u32::try_from(element.len()).map_err(|_| CodecError::Framing { offset: i })?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(element);
        }
        if expired || t.update_on_read {
            let touch = t.update_on_read.then_some(now);
            self.defer(state, key, user_key, touch, Cause::Access);
        }
        Ok((!out.is_empty()).then(|| out.into_bump_slice()))
    }
}

impl<B: ExpiryHooks> StateBackend for TtlBackend<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn register(
        &mut self,
        operator: &OperatorDescriptor,
        state: &StateDescriptor,
    ) -> Result<StateId> {
        let id = self.inner.register(operator, state)?;
        let Some(ttl) = state.ttl else {
            return Ok(id);
        };
        let i = id.0 as usize;
        if self.states.len() <= i {
            self.states.resize_with(i + 1, || None);
        }
        if self.states[i].is_none() {
            let list = state.kind == StateKind::List;
            let t = StateTtl {
                name: format!("{}.{}", operator.name, state.name),
                list,
                ttl_ms: ttl.ttl_millis(),
                update_on_read: ttl.update == TtlUpdate::OnReadAndWrite,
                return_expired: ttl.visibility == TtlVisibility::ReturnExpiredIfNotCleanedUp,
                mode: ttl.time,
                cursor: 0,
                steps: true,
                on_access: 0,
                by_cleanup: 0,
                at_restore: 0,
                in_compaction: Arc::new(AtomicU64::new(0)),
            };
            let filter = ExpiryFilter {
                list,
                ttl_ms: t.ttl_ms,
                mode: t.mode,
                time: self.time.clone(),
                dropped: Arc::clone(&t.in_compaction),
            };
            self.inner.install_expiry_filter(id, filter)?;
            self.states[i] = Some(t);
        }
        Ok(id)
    }

    fn get(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<&[u8]>> {
        let mut unused = EntryHint::NONE;
        self.get_hinted(state, key, user_key, &mut unused)
    }

    /// Leaves the wrapped backend's hint: the stamped value is in the entry that the write which
    /// follows replaces. An expired entry the read found is removed before that write (a
    /// deferred fix), and the wrapped backend checks every hint, so a removed entry costs the
    /// write its lookup and nothing else.
    fn get_hinted(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        hint: &mut EntryHint,
    ) -> Result<Option<&[u8]>> {
        let Some(t) = self.ttl(state) else {
            return self.inner.get_hinted(state, key, user_key, hint);
        };
        match self.inner.get_hinted(state, key, user_key, hint)? {
            None => Ok(None),
            Some(raw) => {
                let now = self.now(t.mode);
                self.stamped(t, state, key, user_key, raw, now)
            }
        }
    }

    fn put(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        self.put_hinted(state, key, user_key, value, EntryHint::NONE)
    }

    fn put_hinted(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
        hint: EntryHint,
    ) -> Result<()> {
        self.apply_pending()?;
        let Some(t) = self.ttl(state) else {
            return self.inner.put_hinted(state, key, user_key, value, hint);
        };
        let (list, now) = (t.list, self.stamp_now(t)?);
        self.buf.clear();
        add_stamps(list, value, now, &mut self.buf)?;
        self.processing.set(None);
        if list && self.buf.is_empty() {
            return self.inner.delete(state, key, user_key);
        }
        self.inner.put_hinted(state, key, user_key, &self.buf, hint)
    }

    fn merge(&mut self, state: StateId, key: &[u8], user_key: &[u8], operand: &[u8]) -> Result<()> {
        self.apply_pending()?;
        let Some(t) = self.ttl(state) else {
            return self.inner.merge(state, key, user_key, operand);
        };
        if !t.list {
            return Err(Error::Backend {
                backend: self.inner.name(),
                message: format!(
                    "state `{}` has a ttl; only list elements can be appended to a stamped state",
                    t.name
                ),
            });
        }
        let now = self.stamp_now(t)?;
        self.buf.clear();
        add_stamps(true, operand, now, &mut self.buf)?;
        self.processing.set(None);
        self.inner.merge(state, key, user_key, &self.buf)
    }

    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        self.apply_pending()?;
        self.inner.delete(state, key, user_key)
    }

    fn scan<'a>(&'a self, state: StateId, key: &[u8]) -> Result<EntryIter<'a>> {
        let Some(t) = self.ttl(state) else {
            return self.inner.scan(state, key);
        };
        let now = self.now(t.mode);
        if t.list {
            // One list per user key (one for a list state, one per namespace of a namespaced
            // one), each read as `get` reads it: live elements only.
            let mut lists = Vec::new();
            for entry in self.inner.scan(state, key)? {
                let (user_key, _) = entry?;
                // A list whose elements all expired is no list.
                if let Some(list) = self.get(state, key, user_key)?
                    && !list.is_empty()
                {
                    lists.push(Ok((user_key, list)));
                }
            }
            return Ok(Box::new(lists.into_iter()));
        }
        let key: Box<[u8]> = key.into();
        let it = self.inner.scan(state, &key)?;
        Ok(Box::new(it.filter_map(move |entry| {
            let (user_key, raw) = match entry {
                Ok(entry) => entry,
                Err(e) => return Some(Err(e)),
            };
            // A damaged stamp is passed on whole: the reader's validation reports it.
            match self.stamped(t, state, &key, user_key, raw, now) {
                Ok(v) => v.map(|v| Ok((user_key, v))),
                Err(_) => Some(Ok((user_key, raw))),
            }
        })))
    }

    fn read(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        reader: &mut ValueReader<'_>,
    ) -> Result<()> {
        let Some(t) = self.ttl(state) else {
            return self.inner.read(state, key, user_key, reader);
        };
        let now = self.now(t.mode);
        self.inner.read(state, key, user_key, &mut |raw| match raw {
            None => reader(None),
            Some(raw) => reader(self.stamped(t, state, key, user_key, raw, now)?),
        })
    }

    fn count(&self, state: StateId, key: &[u8]) -> Result<usize> {
        if self.ttl(state).is_none() {
            return self.inner.count(state, key);
        }
        crate::data::backend::count_scanned(self.scan(state, key)?)
    }

    fn delete_key(&mut self, state: StateId, key: &[u8]) -> Result<()> {
        self.apply_pending()?;
        self.inner.delete_key(state, key)
    }

    fn for_each_entry(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let Some(t) = self.ttl(state) else {
            return self.inner.for_each_entry(state, visit);
        };
        let now = self.now(t.mode);
        let mut plain = Vec::new();
        self.inner.for_each_entry(state, &mut |key, user_key, raw| {
            if !t.list {
                let (stamp, value) = split_stamp(raw, 0)?;
                if is_expired(stamp, t.ttl_ms, now) {
                    return Ok(());
                }
                return visit(key, user_key, value);
            }
            plain.clear();
            for (i, frame) in Frames::new(raw).enumerate() {
                let (stamp, element) = split_stamp(frame?, i)?;
                if !is_expired(stamp, t.ttl_ms, now) {
                    push_frame(&mut plain, None, element)?;
                }
            }
            if plain.is_empty() {
                return Ok(());
            }
            visit(key, user_key, &plain)
        })
    }

    fn release_reads(&mut self) {
        self.inner.release_reads();
        self.reads.reset();
        self.processing.set(None);
        // A change that fails here stays queued and is reported by the next write.
        let _ = self.apply_pending();
        self.cleanup_step();
        let _ = self.apply_pending();
    }

    fn clear_state(&mut self, state: StateId) -> Result<()> {
        self.apply_pending()?;
        self.inner.clear_state(state)
    }

    fn stamps_ttl(&self, state: StateId) -> bool {
        self.ttl(state).is_some()
    }

    fn watermark(&self) -> Option<i64> {
        let w = self.time.watermark.load(Ordering::Relaxed);
        (w != NO_WATERMARK).then_some(w)
    }

    fn set_watermark(&mut self, millis: i64) {
        self.time.watermark.fetch_max(millis, Ordering::Relaxed);
        self.inner.set_watermark(millis);
    }

    fn ordered_timers(
        &self,
        state: StateId,
        key_group: u16,
        domain: u8,
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        // Timers carry no TTL: they are stored as the inner backend stores them.
        self.inner
            .ordered_timers(state, key_group, domain, after, limit, visit)
    }

    fn queued_timers(&self, state: StateId, domain: u8) -> Result<Option<usize>> {
        self.inner.queued_timers(state, domain)
    }

    fn earliest_timer(&self, state: StateId, domain: u8) -> Result<Option<QueuedTimer<'_>>> {
        self.inner.earliest_timer(state, domain)
    }

    fn pop_earliest_timer(&mut self, state: StateId, domain: u8) -> Result<bool> {
        self.inner.pop_earliest_timer(state, domain)
    }
}

/// Snapshots of a TTL backend hold values with their stamps, without what has expired, with
/// the refreshes that reads queued applied: the state as the next read would see it.
impl<B: ExpiryHooks + Snapshots> Snapshots for TtlBackend<B> {
    /// Stamp refreshes that reads queued (`update = "on_read_and_write"`) and no write has
    /// applied yet are in what this visits: a snapshot holds the state as the next read would
    /// see it, whichever way it is taken.
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let Some(t) = self.ttl(state) else {
            return self.inner.for_each_stored(state, visit);
        };
        let now = self.time.now(t.mode);
        let refreshes = self.queued_refreshes(state);
        visit_live(t.list, t.ttl_ms, now, &refreshes, visit, |v| {
            self.inner.for_each_stored(state, v)
        })
    }

    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.apply_pending()?;
        let Some(t) = self
            .states
            .get_mut(state.0 as usize)
            .and_then(Option::as_mut)
        else {
            return self.inner.put_stored(state, key, user_key, value);
        };
        let now = self.time.now(t.mode);
        self.buf.clear();
        let r = retain_live(t.list, value, t.ttl_ms, now, None, &mut self.buf)?;
        t.at_restore += r.dropped;
        if r.kept == 0 {
            return Ok(());
        }
        self.inner.put_stored(state, key, user_key, &self.buf)
    }

    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        let Some(inner) = self.inner.detach()? else {
            return Ok(None);
        };
        // Expiry as of now, the moment of the view, and the refreshes queued by then.
        let ttls = self
            .states
            .iter()
            .zip(0u32..)
            .map(|(s, i)| {
                s.as_ref().map(|t| DetachedTtl {
                    list: t.list,
                    ttl_ms: t.ttl_ms,
                    now: self.time.now(t.mode),
                    refreshes: self.queued_refreshes(StateId(i)),
                })
            })
            .collect();
        Ok(Some(Box::new(TtlDetached { inner, ttls })))
    }

    /// The inner backend's files, after the queued removals and stamp refreshes: expired
    /// entries in them stay expired after a restore (reads and compactions filter them).
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        self.apply_pending()?;
        self.inner.native_checkpoint()
    }

    /// The wrapped backend opens the files; what reads had queued applied to the state that
    /// the restore replaced, so it is dropped.
    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        self.pending.get_mut().clear();
        self.processing.set(None);
        self.inner.restore_native(restore)
    }

    fn track_changes(&mut self, on: bool) -> bool {
        self.inner.track_changes(on)
    }

    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        // Queued removals and stamp refreshes are changes too.
        self.apply_pending()?;
        self.inner.drain_changes(state, visit)
    }
}

/// A stamp refresh a read queued and no write applied yet: `(key, user key, time of the read)`.
type Refresh = (Box<[u8]>, Box<[u8]>, i64);

impl<B> TtlBackend<B> {
    /// The refreshes queued for entries of `state` (a handful: the queue empties at every key
    /// change and write).
    fn queued_refreshes(&self, state: StateId) -> Vec<Refresh> {
        let Ok(pending) = self.pending.try_borrow() else {
            return Vec::new();
        };
        pending
            .iter()
            .filter(|f| f.state == state)
            .filter_map(|f| Some((f.key.clone(), f.user_key.clone(), f.touch?)))
            .collect()
    }
}

/// Runs `walk` (a visit of stored, stamped entries) and passes on what is live at `now`: whole
/// values and entries, lists without their expired elements, each entry with the refreshes
/// queued for it applied first (as [`TtlBackend::apply_pending`] would).
fn visit_live(
    list: bool,
    ttl_ms: i64,
    now: i64,
    refreshes: &[Refresh],
    visit: &mut EntryVisitor<'_>,
    walk: impl FnOnce(&mut EntryVisitor<'_>) -> Result<()>,
) -> Result<()> {
    let (mut live, mut refreshed, mut touched) = (Vec::new(), Vec::new(), Vec::new());
    walk(&mut |key, user_key, raw| {
        let mut any = false;
        for (_, _, at) in refreshes
            .iter()
            .filter(|(k, u, _)| **k == *key && **u == *user_key)
        {
            // A refresh happens as of the read that asked for it: what was alive then lives on.
            touched.clear();
            let from: &[u8] = if any { &refreshed } else { raw };
            let r = retain_live(list, from, ttl_ms, *at, Some(*at), &mut touched)?;
            if r.kept == 0 {
                return Ok(());
            }
            std::mem::swap(&mut refreshed, &mut touched);
            any = true;
        }
        let raw: &[u8] = if any { &refreshed } else { raw };
        live.clear();
        let r = retain_live(list, raw, ttl_ms, now, None, &mut live)?;
        if r.kept == 0 {
            return Ok(());
        }
        visit(key, user_key, if r.dropped == 0 { raw } else { &live })
    })
}

/// One TTL state of a [`TtlDetached`] view.
struct DetachedTtl {
    list: bool,
    ttl_ms: i64,
    /// The time of the view.
    now: i64,
    refreshes: Vec<Refresh>,
}

/// A detached view of a TTL backend: the inner view, without what had expired when it was
/// taken, with the refreshes queued then.
struct TtlDetached {
    inner: Box<dyn DetachedState>,
    ttls: Vec<Option<DetachedTtl>>,
}

impl DetachedState for TtlDetached {
    fn in_canonical_order(&self) -> bool {
        // Expired entries are left out and refreshed stamps replace values in place: the
        // order is the wrapped view's.
        self.inner.in_canonical_order()
    }

    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let Some(Some(t)) = self.ttls.get(state.0 as usize) else {
            return self.inner.for_each_stored(state, visit);
        };
        visit_live(t.list, t.ttl_ms, t.now, &t.refreshes, visit, |v| {
            self.inner.for_each_stored(state, v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use super::super::STAMP_LEN;
    use crate::data::ttl::ManualClock;

    #[test]
    fn stamps_roundtrip_for_values_and_lists() {
        let mut frames = Vec::new();
        push_frame(&mut frames, None, b"ab").unwrap();
        push_frame(&mut frames, None, b"").unwrap();
        let mut stamped = Vec::new();
        add_stamps(true, &frames, 42, &mut stamped).unwrap();
        assert_eq!(stamped.len(), frames.len() + 2 * STAMP_LEN);
        let mut back = Vec::new();
        strip_stamps(true, &stamped, &mut back).unwrap();
        assert_eq!(back, frames);

        let mut v = Vec::new();
        add_stamps(false, b"xyz", -7, &mut v).unwrap();
        assert_eq!(split_stamp(&v, 0).unwrap(), (-7, &b"xyz"[..]));
    }

    #[test]
    fn damaged_stamps_are_errors() {
        let mut out = Vec::new();
        assert!(strip_stamps(false, b"short", &mut out).is_err());
        // A frame too short to hold a stamp.
        let mut frames = Vec::new();
        push_frame(&mut frames, None, b"abc").unwrap();
        assert!(strip_stamps(true, &frames, &mut out).is_err());
        assert!(retain_live(true, &frames, 10, 0, None, &mut out).is_err());
    }

    #[test]
    fn retain_keeps_live_elements_and_restamps_forward_only() {
        let mut stamped = Vec::new();
        for (stamp, e) in [(0i64, &b"old"[..]), (50, b"new")] {
            push_frame(&mut stamped, Some(stamp), e).unwrap();
        }
        let mut out = Vec::new();
        let r = retain_live(true, &stamped, 100, 120, Some(10), &mut out).unwrap();
        assert_eq!(
            r,
            Retained {
                kept: 1,
                dropped: 1
            }
        );
        let mut expect = Vec::new();
        push_frame(&mut expect, Some(50), b"new").unwrap(); // max(50, 10)
        assert_eq!(out, expect);
    }

    #[test]
    fn expiry_is_inclusive_and_saturating() {
        assert!(!is_expired(0, 10, 9));
        assert!(is_expired(0, 10, 10));
        assert!(!is_expired(i64::MAX - 1, 10, i64::MAX - 1));
        assert!(!is_expired(5, 10, NO_WATERMARK));
    }

    #[test]
    fn manual_clock_is_shared_by_clones() {
        let c = ManualClock::new(5);
        let d = c.clone();
        d.advance(Duration::from_millis(10));
        assert_eq!(c.now_millis(), 15);
        c.set(i64::MAX);
        c.advance(Duration::from_secs(1));
        assert_eq!(d.now_millis(), i64::MAX);
    }
}
