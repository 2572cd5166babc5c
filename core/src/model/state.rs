//! The state types a user declares as fields of an operator struct.
//!
//! These are markers: they carry the state's types, and `#[derive(StatefulOperator)]` reads
//! them to generate descriptors and typed accessors. The data lives in a
//! [`StateBackend`](crate::StateBackend); it is reached through the key-scoped view that
//! [`Bound::key`](crate::Bound::key) returns.

use std::fmt;
use std::marker::PhantomData;

use crate::model::codec::StateValue;

macro_rules! marker {
    ($(#[$doc:meta])* $name:ident<$($p:ident),+>) => {
        $(#[$doc])*
        pub struct $name<$($p),+>(PhantomData<fn() -> ($($p,)+)>);

        impl<$($p),+> $name<$($p),+> {
            /// The marker (state fields need no other initialisation).
            #[must_use]
            pub const fn new() -> Self {
                Self(PhantomData)
            }
        }
        impl<$($p),+> Default for $name<$($p),+> {
            fn default() -> Self {
                Self::new()
            }
        }
        impl<$($p),+> Clone for $name<$($p),+> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<$($p),+> Copy for $name<$($p),+> {}
        impl<$($p),+> fmt::Debug for $name<$($p),+> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}

marker!(
    /// One value per key. Read it zero-copy with
    /// [`ValueView::get`](crate::access::view::ValueView::get).
    ValueState<T>
);
marker!(
    /// An appendable list per key; appends never rewrite the stored list.
    ListState<T>
);
marker!(
    /// A map per key, iterated in key order; every entry is stored on its own.
    MapState<K, V>
);
marker!(
    /// One value per key, combined with each added value by the function named in
    /// `#[state(reduce = ...)]`: `max`, `min`, `sum` or a path to `fn(&T, &T) -> T`.
    ReducingState<T>
);
marker!(
    /// One accumulator per key, driven by the [`Aggregate`] named in
    /// `#[state(aggregate = ...)]`; `IN` is what is added, `OUT` what is read.
    AggregatingState<IN, OUT>
);

/// The operator's timers: event-time and processing-time timers of `(key, namespace,
/// timestamp)`, stored as state (checkpointed, restored and rescaled with their keys). `N` is
/// the namespace type (`()` for none; a window type for windowed operators). At most one per
/// operator. Register timers through the field's accessor on the key-scoped view
/// ([`TimerView`](crate::access::timers::TimerView)); they fire from
/// [`Bound::advance_watermark`](crate::Bound::advance_watermark) and
/// [`Bound::advance_processing_time`](crate::Bound::advance_processing_time).
pub struct TimerService<N = ()>(PhantomData<fn() -> N>);

impl<N> TimerService<N> {
    /// The marker (the field needs no other initialisation).
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<N> Default for TimerService<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<N> Clone for TimerService<N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<N> Copy for TimerService<N> {}

impl<N> fmt::Debug for TimerService<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TimerService")
    }
}

/// An aggregation for [`AggregatingState`]: create an accumulator, add inputs, read a result,
/// merge two accumulators.
///
/// # Examples
///
/// ```
/// use statewright::prelude::*;
///
/// /// Mean of the amounts seen.
/// pub struct Mean;
///
/// impl Aggregate for Mean {
///     type In = i64;
///     type Acc = (i64, u64);
///     type Out = f64;
///     fn create() -> (i64, u64) { (0, 0) }
///     fn add(acc: &mut (i64, u64), v: &i64) { acc.0 += v; acc.1 += 1; }
///     fn result(acc: &(i64, u64)) -> f64 { acc.0 as f64 / acc.1.max(1) as f64 }
///     fn merge(acc: &mut (i64, u64), other: (i64, u64)) { acc.0 += other.0; acc.1 += other.1; }
/// }
/// ```
pub trait Aggregate {
    /// What is added.
    type In;
    /// The stored accumulator.
    type Acc: StateValue;
    /// What is read.
    type Out;
    /// A new, empty accumulator.
    fn create() -> Self::Acc;
    /// Adds one input to the accumulator.
    fn add(acc: &mut Self::Acc, value: &Self::In);
    /// The result of the accumulator.
    fn result(acc: &Self::Acc) -> Self::Out;
    /// Merges `other` into `acc` (used when state of several keys or instances is combined).
    fn merge(acc: &mut Self::Acc, other: Self::Acc);
}

/// The built-in reduce functions of `#[state(reduce = max | min | sum)]`.
pub mod reduce {
    /// The larger of the two values.
    #[must_use]
    pub fn max<T: Ord + Clone>(a: &T, b: &T) -> T {
        if b > a { b.clone() } else { a.clone() }
    }

    /// The smaller of the two values.
    #[must_use]
    pub fn min<T: Ord + Clone>(a: &T, b: &T) -> T {
        if b < a { b.clone() } else { a.clone() }
    }

    /// The sum, wrapping on overflow for integers (as Flink's `ReduceFunction`s on Java longs).
    #[must_use]
    pub fn sum<T: WrappingSum>(a: &T, b: &T) -> T {
        a.wrapping_sum(b)
    }

    /// Addition as `reduce = sum` does it: wrapping for integers, IEEE for floats.
    pub trait WrappingSum {
        /// `self + other`.
        #[must_use]
        fn wrapping_sum(&self, other: &Self) -> Self;
    }

    macro_rules! int {
        ($($t:ty),*) => {$(
            impl WrappingSum for $t {
                fn wrapping_sum(&self, other: &Self) -> Self { self.wrapping_add(*other) }
            }
        )*};
    }
    int!(
        u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize
    );
    impl WrappingSum for f32 {
        fn wrapping_sum(&self, other: &Self) -> Self {
            self + other
        }
    }
    impl WrappingSum for f64 {
        fn wrapping_sum(&self, other: &Self) -> Self {
            self + other
        }
    }
}
