//! Operators: the trait `#[derive(StatefulOperator)]` implements, and [`Bound`], an operator
//! bound to a backend.

use std::borrow::Borrow;

use crate::access::operator_state::OperatorStateData;
use crate::access::timers::{NO_TIME, TimeDomain, Timer, Timers};
use crate::access::view::{KeyContext, Scratch};
use crate::data::backend::{StateBackend, StateId};
use crate::model::descriptor::{OperatorDescriptor, OperatorManifest, StateKind};
use crate::model::error::{Error, Result};
use crate::model::key::{EncodeKey, StateKey};
use crate::model::keygroup::{KeyGroupRange, key_group};

/// An operator with keyed state; implemented by `#[derive(StatefulOperator)]`.
///
/// # Examples
///
/// ```
/// use statewright::prelude::*;
///
/// #[derive(StatefulOperator, Default)]
/// #[operator(name = "counter", key = String)]
/// struct Counter {
///     count: ValueState<u64>,
/// }
///
/// let mut op = Counter::default().bind(HeapBackend::new())?;
/// for word in ["a", "b", "a"] {
///     let mut st = op.key(word)?;
///     st.count().update(|c| c.unwrap_or(0) + 1)?;
/// }
/// assert_eq!(op.key("a")?.count().get_owned()?, Some(2));
/// # Ok::<(), statewright::Error>(())
/// ```
pub trait StatefulOperator: Sized {
    /// The type of the key state is scoped to (`#[operator(key = ...)]`).
    type Key: StateKey;
    /// The namespace type of the operator's [`TimerService`](crate::TimerService) (`()` when
    /// it declares none, or declares one without a namespace).
    type TimerNamespace: StateKey;
    #[doc(hidden)]
    type Columns: AsRef<[StateId]>;
    /// The generated key-scoped view, with one accessor method per state.
    type Keyed<'a, B: StateBackend + ?Sized + 'a>
    where
        Self: 'a;

    /// Name, key type, maximum parallelism and states of the operator.
    const DESCRIPTOR: OperatorDescriptor;

    #[doc(hidden)]
    fn __register<B: StateBackend + ?Sized>(backend: &mut B) -> Result<Self::Columns>;

    #[doc(hidden)]
    fn __operator_states(&self) -> Vec<&dyn OperatorStateData> {
        Vec::new()
    }

    #[doc(hidden)]
    fn __operator_states_mut(&mut self) -> Vec<&mut dyn OperatorStateData> {
        Vec::new()
    }

    #[doc(hidden)]
    fn __keyed<'a, B: StateBackend + ?Sized>(
        op: &'a Self,
        columns: &'a Self::Columns,
        ctx: KeyContext<'a, B>,
    ) -> Self::Keyed<'a, B>;

    /// Every state of the operator (name, kind, key and value types with their schemas and
    /// fingerprints, version and migrations, TTL) without a backend; serialisable to JSON.
    ///
    /// ```
    /// use statewright::prelude::*;
    ///
    /// #[derive(StatefulOperator, Default)]
    /// #[operator(name = "sessions", key = u64)]
    /// struct Sessions {
    ///     #[state(ttl = "30m", time = "event")]
    ///     pages: ListState<u32>,
    /// }
    ///
    /// let m = Sessions::manifest();
    /// assert_eq!(m.states[0].kind, "ListState");
    /// assert!(m.to_json().contains(r#""time": "event""#));
    /// ```
    #[must_use]
    fn manifest() -> OperatorManifest {
        OperatorManifest::of(&Self::DESCRIPTOR)
    }

    /// Registers the operator's states with `backend`.
    ///
    /// # Errors
    ///
    /// When the backend cannot register a state.
    fn bind<B: StateBackend>(self, backend: B) -> Result<Bound<Self, B>> {
        Bound::new(self, backend)
    }
}

/// An operator bound to a backend: the entry point for state access, snapshots and
/// checkpoints.
pub struct Bound<Op: StatefulOperator, B> {
    pub(crate) op: Op,
    pub(crate) backend: B,
    pub(crate) columns: Op::Columns,
    pub(crate) key_groups: KeyGroupRange,
    key: Vec<u8>,
    scratch: Scratch,
    /// Whether the backend tracks changes since this instance's last full capture.
    pub(crate) tracking: bool,
    /// The highest watermark set through [`Bound::set_watermark`] or restored
    /// ([`NO_WATERMARK`] before one): kept here as well for backends that keep none.
    pub(crate) watermark: i64,
    /// The time-ordered index of the operator's timers, the watermark and processing time.
    pub(crate) timers: Timers,
}

/// The length of the key `K` at the front of `bytes`.
fn key_len<K: StateKey>(bytes: &[u8]) -> Option<usize> {
    let mut input = bytes;
    K::decode_key(&mut input).ok()?;
    Some(bytes.len() - input.len())
}

/// The watermark of an instance that has none yet.
pub(crate) const NO_WATERMARK: i64 = i64::MIN;

impl<Op: StatefulOperator, B: StateBackend> Bound<Op, B> {
    /// Binds `op` to `backend`, registering its states; this instance owns every key group.
    ///
    /// # Errors
    ///
    /// When the backend cannot register a state; [`Error::TtlNotEnforced`] when a state
    /// declares a TTL and the backend does not enforce it (wrap it in
    /// [`TtlBackend`](crate::data::ttl::TtlBackend)).
    pub fn new(op: Op, mut backend: B) -> Result<Self> {
        let columns = Op::__register(&mut backend)?;
        for (state, &column) in Op::DESCRIPTOR.states.iter().zip(columns.as_ref()) {
            if state.ttl.is_some() && !backend.stamps_ttl(column) {
                return Err(Error::TtlNotEnforced {
                    operator: Op::DESCRIPTOR.name,
                    state: state.name,
                    backend: backend.name(),
                });
            }
        }
        let timer_column = Op::DESCRIPTOR
            .states
            .iter()
            .zip(columns.as_ref())
            .find(|(s, _)| s.kind == StateKind::Timers)
            .map(|(_, &c)| c);
        let key_groups = KeyGroupRange::all(Op::DESCRIPTOR.max_parallelism);
        let mut timers = Timers::new(timer_column, key_len::<Op::Key>);
        // A backend that opened existing data (a reopened database) holds timers already.
        timers.rebuild(&backend, key_groups)?;
        Ok(Self {
            op,
            backend,
            columns,
            key_groups,
            key: Vec::with_capacity(32),
            scratch: Scratch::default(),
            tracking: false,
            watermark: NO_WATERMARK,
            timers,
        })
    }

    /// Restricts this instance to a range of key groups (one instance of a parallel operator).
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroupNotOwned`] when the range exceeds the operator's key groups.
    pub fn with_key_groups(mut self, range: KeyGroupRange) -> Result<Self> {
        let max = Op::DESCRIPTOR.max_parallelism;
        if range.last() >= max {
            return Err(Error::KeyGroupNotOwned {
                key_group: range.last(),
                first: 0,
                last: max - 1,
            });
        }
        self.key_groups = range;
        self.timers.rebuild(&self.backend, range)?;
        Ok(self)
    }

    /// Sets how many timers of each key group and time domain this instance holds in memory
    /// when its backend keeps timers in time order (RocksDB; Flink's
    /// `state.backend.rocksdb.timer-service.cache-size`); the default is
    /// [`CACHED_PER_GROUP`](crate::timers::CACHED_PER_GROUP). A larger cache reads the backend
    /// less often while many timers fire; memory holds at most this many timers per key group
    /// and domain. Without effect on the heap, which holds every timer in memory anyway.
    ///
    /// # Errors
    ///
    /// A backend failure while the first timers are read again.
    pub fn with_timer_cache_size(mut self, timers_per_key_group: usize) -> Result<Self> {
        self.timers.set_cache_size(timers_per_key_group);
        self.timers.rebuild(&self.backend, self.key_groups)?;
        Ok(self)
    }

    /// The key groups this instance owns.
    #[must_use]
    pub fn key_groups(&self) -> KeyGroupRange {
        self.key_groups
    }

    /// Makes `key` the current key: encodes it once and returns the key-scoped view of every
    /// state. The view borrows `self`, so it cannot outlive this call's key.
    ///
    /// # Errors
    ///
    /// [`Error::KeyGroupNotOwned`] when the key belongs to another instance's key groups.
    #[inline(always)]
    pub fn key<Q>(&mut self, key: &Q) -> Result<Op::Keyed<'_, B>>
    where
        Op::Key: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.key.clear();
        self.key.extend_from_slice(&[0, 0]);
        key.encode_key(&mut self.key);
        let kg = key_group(&self.key[2..], Op::DESCRIPTOR.max_parallelism);
        if !self.key_groups.contains(kg) {
            return Err(Error::KeyGroupNotOwned {
                key_group: kg,
                first: self.key_groups.first(),
                last: self.key_groups.last(),
            });
        }
        self.key[..2].copy_from_slice(&kg.to_be_bytes());
        // The previous key's view is gone (we hold `&mut self`), so are its reads.
        self.backend.release_reads();
        Ok(self.keyed(kg))
    }

    /// The view of the state of the key in `self.key`, whose key group is `kg`.
    #[inline(always)]
    fn keyed(&mut self, kg: u16) -> Op::Keyed<'_, B> {
        let ctx = KeyContext::new(
            &mut self.backend,
            &self.key,
            kg,
            Op::DESCRIPTOR.name,
            &mut self.scratch,
            &mut self.timers,
        );
        Op::__keyed(&self.op, &self.columns, ctx)
    }

    /// The current watermark (event time, in milliseconds), once one was set or restored.
    #[must_use]
    pub fn watermark(&self) -> Option<i64> {
        let own = (self.watermark != NO_WATERMARK).then_some(self.watermark);
        own.max(self.backend.watermark())
    }

    /// Advances event time to `millis` for this instance and its backend (event-time TTL);
    /// watermarks never go back, so a lower value is ignored. Checkpoints record it, and a
    /// restore sets it again.
    pub fn set_watermark(&mut self, millis: i64) {
        self.watermark = self.watermark.max(millis);
        self.backend.set_watermark(millis);
        // Timers fire against what `watermark()` says, the backend's included.
        self.timers.watermark = self.watermark().unwrap_or(NO_TIME);
    }

    /// Advances event time to `millis` (as [`set_watermark`](Self::set_watermark)) and fires
    /// every event-time timer at or before it, in timestamp order (ties by key bytes, then
    /// namespace bytes). Each timer is removed, then `on_timer` gets it with the view of its
    /// key's state, where it may read and write that key's state and register timers; those
    /// at or before `millis` fire in the same call. Returns the number of timers fired.
    ///
    /// # Errors
    ///
    /// A backend failure or a stored key that does not decode (the timer stays registered),
    /// or the first error `on_timer` returns (the timers after it stay registered; the one it
    /// failed on is gone: restore from the last checkpoint to run it again). A callback that
    /// registers a timer at or before `millis` for every timer it gets never returns, as in
    /// Flink.
    pub fn advance_watermark<F>(&mut self, millis: i64, on_timer: F) -> Result<usize>
    where
        F: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>) -> Result<()>,
    {
        self.set_watermark(millis);
        self.fire(TimeDomain::EventTime, self.timers.watermark, on_timer)
    }

    /// Advances processing time to `millis` (it never goes back) and fires every
    /// processing-time timer at or before it, as [`advance_watermark`](Self::advance_watermark)
    /// does for event time. Processing-time timers that became due while the job was down
    /// (restored from a checkpoint) fire at the first call.
    ///
    /// # Errors
    ///
    /// As [`advance_watermark`](Self::advance_watermark).
    pub fn advance_processing_time<F>(&mut self, millis: i64, on_timer: F) -> Result<usize>
    where
        F: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>) -> Result<()>,
    {
        self.timers.processing_time = self.timers.processing_time.max(millis);
        self.fire(
            TimeDomain::ProcessingTime,
            self.timers.processing_time,
            on_timer,
        )
    }

    /// The processing time this instance was last advanced to.
    #[must_use]
    pub fn processing_time(&self) -> Option<i64> {
        (self.timers.processing_time != NO_TIME).then_some(self.timers.processing_time)
    }

    /// The time of the earliest timer of a domain: when the next one is due.
    #[must_use]
    pub fn next_timer(&self, domain: TimeDomain) -> Option<i64> {
        self.timers.next(&self.backend, domain)
    }

    /// The number of timers of a domain this instance holds. On a backend that keeps timers in
    /// time order (RocksDB), memory holds only the first ones of each key group, and this
    /// counts them by reading the backend's: a call for tests, metrics and the end of a job,
    /// not for every record.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn timer_count(&self, domain: TimeDomain) -> Result<usize> {
        self.timers.len(&self.backend, domain)
    }

    /// The number of timers of a domain this instance holds in memory: all of them on the
    /// heap; on a backend that keeps timers in time order, at most
    /// [`CACHED_PER_GROUP`](crate::timers::CACHED_PER_GROUP) per key group.
    #[must_use]
    pub fn timers_in_memory(&self, domain: TimeDomain) -> usize {
        self.timers.in_memory(&self.backend, domain)
    }

    fn fire<F>(&mut self, domain: TimeDomain, time: i64, mut on_timer: F) -> Result<usize>
    where
        F: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>) -> Result<()>,
    {
        if self.timers.column().is_none() {
            return Ok(0);
        }
        if let Some(column) = self.timers.queue(domain) {
            return self.fire_queued(column, domain, time, on_timer);
        }
        let max = Op::DESCRIPTOR.max_parallelism;
        let mut fired = 0;
        while let Some(due) = self.timers.first_due(domain, time) {
            let timestamp = due.timestamp;
            let key_bytes = due.key();
            let key = Op::Key::from_key_bytes(key_bytes)?;
            let namespace = Op::TimerNamespace::from_key_bytes(due.namespace())?;
            let kg = key_group(key_bytes, max);
            self.key.clear();
            self.key.extend_from_slice(&kg.to_be_bytes());
            self.key.extend_from_slice(key_bytes);
            self.backend.release_reads();
            // Out of the index only once it is out of the backend: a timer whose key does not
            // decode or whose deletion fails stays registered in both.
            self.timers
                .take(&mut self.backend, domain, &due, &self.key)?;
            let timer = Timer {
                key,
                namespace,
                timestamp,
                domain,
            };
            self.call(kg, timer, &mut on_timer)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// [`fire`](Self::fire) from a backend that queues the timers itself: each timer is read
    /// at the queue's front and popped, with nothing to keep in step beside it.
    fn fire_queued<F>(
        &mut self,
        column: StateId,
        domain: TimeDomain,
        time: i64,
        mut on_timer: F,
    ) -> Result<usize>
    where
        F: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>) -> Result<()>,
    {
        let tag = domain.tag();
        let mut fired = 0;
        loop {
            let Some(t) = self.backend.earliest_timer(column, tag)? else {
                break;
            };
            if t.timestamp > time {
                break;
            }
            // A timer whose key or namespace does not decode stays registered.
            let key = Op::Key::from_key_bytes(t.key)?;
            let namespace = Op::TimerNamespace::from_key_bytes(t.namespace)?;
            let (timestamp, kg) = (t.timestamp, t.key_group);
            self.key.clear();
            self.key.extend_from_slice(&kg.to_be_bytes());
            self.key.extend_from_slice(t.key);
            self.backend.release_reads();
            self.backend.pop_earliest_timer(column, tag)?;
            let timer = Timer {
                key,
                namespace,
                timestamp,
                domain,
            };
            self.call(kg, timer, &mut on_timer)?;
            fired += 1;
        }
        Ok(fired)
    }

    /// Calls `on_timer` with a fired timer and the view of its key's state (the key, with its
    /// key group `kg`, is in `self.key`).
    fn call<F>(
        &mut self,
        kg: u16,
        timer: Timer<Op::Key, Op::TimerNamespace>,
        on_timer: &mut F,
    ) -> Result<()>
    where
        F: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>) -> Result<()>,
    {
        on_timer(timer, self.keyed(kg))
    }

    /// The operator (its plain fields).
    #[must_use]
    pub fn operator(&self) -> &Op {
        &self.op
    }

    /// The operator, mutably (its plain fields).
    pub fn operator_mut(&mut self) -> &mut Op {
        &mut self.op
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably (for backend-specific calls; state access goes through
    /// [`key`](Self::key)).
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The operator and the backend.
    pub fn into_parts(self) -> (Op, B) {
        (self.op, self.backend)
    }
}

impl<Op: StatefulOperator, B: StateBackend> std::fmt::Debug for Bound<Op, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("operator", &Op::DESCRIPTOR.name)
            .field("backend", &self.backend.name())
            .field("key_groups", &self.key_groups)
            .finish_non_exhaustive()
    }
}
