//! Operators: the trait `#[derive(StatefulOperator)]` implements, and [`Bound`], an operator
//! bound to a backend.

use std::borrow::Borrow;

use crate::access::operator_state::OperatorStateData;
use crate::access::view::{KeyContext, Scratch};
use crate::data::backend::{StateBackend, StateId};
use crate::model::descriptor::{OperatorDescriptor, OperatorManifest};
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
        Ok(Self {
            op,
            backend,
            columns,
            key_groups: KeyGroupRange::all(Op::DESCRIPTOR.max_parallelism),
            key: Vec::with_capacity(32),
            scratch: Scratch::default(),
            tracking: false,
            watermark: NO_WATERMARK,
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
        let ctx = KeyContext::new(
            &mut self.backend,
            &self.key,
            kg,
            Op::DESCRIPTOR.name,
            &mut self.scratch,
        );
        Ok(Op::__keyed(&self.op, &self.columns, ctx))
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
