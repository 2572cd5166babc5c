//! The core of statewright: everything about typed, keyed state that does not depend on a
//! storage engine.
//!
//! Users depend on the `statewright` crate, which re-exports this one; backend authors
//! implement [`StateBackend`] and run the `conformance` suite (feature `conformance`).
//!
//! The crate is built in four layers, each importing only from the ones below it (CI checks
//! this): **model** (errors, keys, key groups, the codec, descriptors, state types, schemas) →
//! **data** (the byte-level [`StateBackend`], the capabilities a backend opts into:
//! [`Snapshots`] and [`ExpiryHooks`], and time-to-live) → **access** (views, operator state,
//! [`StatefulOperator`], [`Bound`]) → **persist** (capture, the snapshot format, restore,
//! checkpoint storage, the checkpointer). The public modules below are re-exports of those
//! layers' modules:
//!
//! | module | layer | what it holds |
//! |---|---|---|
//! | [`key`] | model | canonical, order-preserving key encoding ([`StateKey`]) |
//! | [`keygroup`] | model | key groups and instance ranges (Flink's scheme, a stable hash) |
//! | [`codec`] | model | the one place values are encoded and decoded (rkyv, `unaligned`) |
//! | [`descriptor`] | model | what a derive declares: operators, states, TTL, migrations |
//! | [`schema`] | model | compile-time schemas and fingerprints of keys and values, and their diff |
//! | [`state`] | model | the state types declared as operator fields |
//! | [`backend`] | data | the byte-level [`StateBackend`] trait and its capabilities |
//! | [`ttl`] | data | time-to-live: stamps, clocks and [`TtlBackend`] |
//! | [`view`] | access | typed, key-scoped access to state |
//! | [`operator_state`] | access | operator (non-keyed) state |
//! | [`snapshot`] | persist | snapshot format v1 |
//! | [`checkpoint`] | persist | checkpoint directories with a manifest, retention and restore |
//! | [`store`] | persist | where checkpoint files live: the object-storage-shaped [`CheckpointStore`](store::CheckpointStore) trait and a local directory |
//! | [`checkpointer`] | persist | periodic, asynchronous, incremental and native checkpoints |
//!
//! | feature | enables |
//! |---|---|
//! | `conformance` | the backend conformance suite, for backend crates' tests |

#![warn(missing_docs)]

mod access;
mod data;
mod model;
mod persist;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use access::namespaces;
pub use access::operator_state;
pub use access::timers;
pub use access::view;
pub use access::windows as window;
pub use data::backend;
pub use data::ttl;
pub use model::codec;
pub use model::descriptor;
pub use model::key;
pub use model::keygroup;
pub use model::schema;
pub use model::state;
pub use persist::checkpoint;
pub use persist::checkpointer;
pub use persist::snapshot;
pub use persist::store;

pub use access::operator::{Bound, StatefulOperator};
pub use access::timers::{TimeDomain, Timer, TimerView};
pub use backend::{
    AnyBackend, EntryHint, ExpiryHooks, MigrationProgress, Snapshots, StateBackend, StateId,
};
pub use checkpoint::{CheckpointId, CheckpointInfo, CheckpointStorage, RestorePoint};
pub use codec::StateValue;
pub use descriptor::{
    Migration, OperatorDescriptor, OperatorManifest, StateDescriptor, StateKind, TtlConfig,
    TtlTime, TtlUpdate, TtlVisibility,
};
pub use key::{EncodeKey, StateKey};
pub use model::error::{CodecError, Corruption, Error, KeyError, Result};
pub use operator_state::{BroadcastState, OperatorListState, UnionListState};
pub use persist::bound::RestoreOperator;
pub use schema::StateSchema;
pub use state::{
    Aggregate, AggregatingState, ListState, MapState, ReducingState, TimerService, ValueState,
};
pub use ttl::{ManualClock, TtlBackend};

/// Paths used by generated code; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__impl_state_value;
    pub use crate::access::namespaces::{
        AggregateMerge, ListMerge, NamespacesView, NoMerge, ReduceMerge,
    };
    pub use crate::access::operator_state::OperatorStateData;
    pub use crate::access::timers::{TimerView, validate_no_value, validate_timer};
    pub use crate::access::view::{
        AggregatingView, KeyContext, ListView, MapView, ReducingView, Slot, ValueView,
    };
    pub use crate::model::codec::{decode, encode_into, raw, validate, validate_frames};
    pub use crate::model::descriptor::no_user_key;
    pub use crate::model::key::validate_key;
    pub use crate::model::state::reduce;
    pub use rkyv;
    pub use rkyv::bytecheck;

    /// Stands for the aggregate of an `AggregatingState` declared without
    /// `#[state(aggregate = ...)]`, in the stub that `#[derive(StatefulOperator)]` emits with
    /// that error, so that uses of the state report nothing more. No program that compiles
    /// uses it.
    pub struct MissingAggregate<In, Out>(core::marker::PhantomData<fn(&In) -> Out>);

    impl<In, Out> crate::Aggregate for MissingAggregate<In, Out> {
        type In = In;
        type Acc = ();
        type Out = Out;

        fn create() {}

        fn add(_: &mut (), _: &In) {}

        fn result(_: &()) -> Out {
            unreachable!("`MissingAggregate` is only named by code that does not compile")
        }

        fn merge(_: &mut (), (): ()) {}
    }

    /// Registers every state of an operator, in declaration order.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn register_all<B: crate::StateBackend + ?Sized, const N: usize>(
        backend: &mut B,
        operator: &crate::OperatorDescriptor,
    ) -> crate::Result<[crate::StateId; N]> {
        let mut out = [crate::StateId(0); N];
        if operator.states.len() != N {
            return Err(crate::Error::Backend {
                backend: backend.name(),
                message: format!(
                    "operator `{}` declares {} states, {N} expected",
                    operator.name,
                    operator.states.len()
                ),
            });
        }
        for (slot, state) in out.iter_mut().zip(operator.states) {
            *slot = backend.register(operator, state)?;
        }
        Ok(out)
    }
}
