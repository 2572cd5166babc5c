//! Operator state: state of an operator instance as a whole, not of one key.
//!
//! As in Flink, operator state is small (offsets of a source, the rules of a broadcast stream,
//! a sink's pending transactions) and lives in the operator, on the heap, whatever backend
//! holds its keyed state. Each is a field of the operator struct; read it anywhere through the
//! operator (`op.operator()`, or the key-scoped view, which derefs to the operator), change it
//! through [`Bound::operator_mut`](crate::Bound::operator_mut). Values are stored encoded, and
//! read zero-copy like keyed state. Checkpoints hold operator states whole, with the keyed
//! state; how a restore at another parallelism distributes them depends on the kind:
//!
//! | type | on restore at another parallelism |
//! |---|---|
//! | [`BroadcastState<K, V>`] | every instance gets a copy (it is the same on every instance) |
//! | [`OperatorListState<T>`] | the elements are split: each instance's elements are spread evenly over its key groups, and a new instance receives those of its key groups (at the same parallelism, its own) |
//! | [`UnionListState<T>`] | every instance receives every instance's elements |
//!
//! ```
//! use statewright::prelude::*;
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "rules", key = u64)]
//! struct Rules {
//!     limits: BroadcastState<String, i64>,
//!     offsets: OperatorListState<u64>,
//!     seen: ValueState<i64>,
//! }
//!
//! let mut op = Rules::default().bind(HeapBackend::new())?;
//! op.operator_mut().limits.put("card", &500)?;
//! op.operator_mut().offsets.add(&42)?;
//! let st = op.key(&7)?;
//! assert_eq!(st.limits.get("card")?.map(|v| v.to_native()), Some(500));
//! # Ok::<(), statewright::Error>(())
//! ```

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use crate::model::codec::{self, StateValue};
use crate::model::error::Result;
use crate::model::key::{EncodeKey, StateKey};

/// A visitor of operator state entries: `(user key, value)`.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// The entries of one operator state, `(user key, value)`, in order.
pub type OperatorEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// The entries of one operator state as bytes: what snapshots write and restores load.
/// Implemented by the operator state types; generated code hands them to the snapshot code.
pub trait OperatorStateData {
    /// Visits every entry (`user key`, `value`): a broadcast state's encoded keys, a list's
    /// element indices (big-endian `u32`), in order.
    ///
    /// # Errors
    ///
    /// What `f` returns.
    fn for_each_entry(&self, f: &mut EntryVisitor<'_>) -> Result<()>;

    /// Replaces the whole state with `entries` (validated by the caller), in order.
    fn load(&mut self, entries: OperatorEntries);
}

/// An operator-wide map, the same on every instance (Flink's broadcast state): rules,
/// thresholds, a lookup table fed by a broadcast stream. On restore at any parallelism every
/// instance gets a copy. Iterated in key order.
pub struct BroadcastState<K, V> {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Default for BroadcastState<K, V> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            _types: PhantomData,
        }
    }
}

impl<K, V> fmt::Debug for BroadcastState<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastState")
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn key_bytes<Q: EncodeKey + ?Sized>(key: &Q) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_key(&mut out);
    out
}

impl<K: StateKey, V: StateValue> BroadcastState<K, V> {
    /// An empty state.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`, zero-copy.
    ///
    /// # Errors
    ///
    /// [`CodecError`](crate::CodecError) when the stored bytes are damaged.
    pub fn get<Q>(&self, key: &Q) -> Result<Option<&V::Archived>>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        match self.entries.get(&key_bytes(key)) {
            Some(bytes) => Ok(Some(codec::access::<V>(bytes)?)),
            None => Ok(None),
        }
    }

    /// The value of `key`, owned.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_owned<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        match self.entries.get(&key_bytes(key)) {
            Some(bytes) => Ok(Some(codec::decode::<V>(bytes)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` has a value.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.entries.contains_key(&key_bytes(key))
    }

    /// Sets the value of `key`.
    ///
    /// # Errors
    ///
    /// [`CodecError::Encode`](crate::CodecError) when the value cannot be encoded.
    pub fn put<Q>(&mut self, key: &Q, value: &V) -> Result<()>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        let mut bytes = Vec::new();
        codec::encode_into(value, &mut bytes)?;
        self.entries.insert(key_bytes(key), bytes);
        Ok(())
    }

    /// Removes `key`; whether it had a value.
    pub fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.entries.remove(&key_bytes(key)).is_some()
    }

    /// The entries in key order, keys decoded, values zero-copy.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, &V::Archived)>> + '_ {
        self.entries.iter().map(|(k, v)| {
            let key = K::from_key_bytes(k)?;
            Ok((key, codec::access::<V>(v)?))
        })
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

impl<K, V> OperatorStateData for BroadcastState<K, V> {
    fn for_each_entry(&self, f: &mut EntryVisitor<'_>) -> Result<()> {
        for (k, v) in &self.entries {
            f(k, v)?;
        }
        Ok(())
    }

    fn load(&mut self, entries: OperatorEntries) {
        self.entries = entries.into_iter().collect();
    }
}

macro_rules! list_state {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<T> {
            elements: Vec<Vec<u8>>,
            _type: PhantomData<fn() -> T>,
        }

        impl<T> Default for $name<T> {
            fn default() -> Self {
                Self {
                    elements: Vec::new(),
                    _type: PhantomData,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("elements", &self.elements.len())
                    .finish()
            }
        }

        impl<T: StateValue> $name<T> {
            /// An empty list.
            #[must_use]
            pub fn new() -> Self {
                Self::default()
            }

            /// Appends an element.
            ///
            /// # Errors
            ///
            /// [`CodecError::Encode`](crate::CodecError) when it cannot be encoded.
            pub fn add(&mut self, value: &T) -> Result<()> {
                let mut bytes = Vec::new();
                codec::encode_into(value, &mut bytes)?;
                self.elements.push(bytes);
                Ok(())
            }

            /// Replaces every element with `values`.
            ///
            /// # Errors
            ///
            /// As [`add`](Self::add); the list is unchanged on error.
            pub fn update<'v>(&mut self, values: impl IntoIterator<Item = &'v T>) -> Result<()>
            where
                T: 'v,
            {
                let mut elements = Vec::new();
                for v in values {
                    let mut bytes = Vec::new();
                    codec::encode_into(v, &mut bytes)?;
                    elements.push(bytes);
                }
                self.elements = elements;
                Ok(())
            }

            /// The element at `index`, zero-copy.
            ///
            /// # Errors
            ///
            /// [`CodecError`](crate::CodecError) when the stored bytes are damaged.
            pub fn get(&self, index: usize) -> Result<Option<&T::Archived>> {
                match self.elements.get(index) {
                    Some(bytes) => Ok(Some(codec::access::<T>(bytes)?)),
                    None => Ok(None),
                }
            }

            /// The elements in order, zero-copy.
            pub fn iter(&self) -> impl Iterator<Item = Result<&T::Archived>> + '_ {
                self.elements
                    .iter()
                    .map(|b| codec::access::<T>(b).map_err(Into::into))
            }

            /// The elements in order, owned.
            ///
            /// # Errors
            ///
            /// As [`get`](Self::get).
            pub fn to_vec(&self) -> Result<Vec<T>> {
                self.elements
                    .iter()
                    .map(|b| codec::decode::<T>(b).map_err(Into::into))
                    .collect()
            }

            /// Number of elements.
            #[must_use]
            pub fn len(&self) -> usize {
                self.elements.len()
            }

            /// Whether the list is empty.
            #[must_use]
            pub fn is_empty(&self) -> bool {
                self.elements.is_empty()
            }

            /// Removes every element.
            pub fn clear(&mut self) {
                self.elements.clear();
            }
        }

        impl<T> OperatorStateData for $name<T> {
            fn for_each_entry(&self, f: &mut EntryVisitor<'_>) -> Result<()> {
                for (i, v) in self.elements.iter().enumerate() {
                    let index = u32::try_from(i).map_err(|_| crate::model::error::Error::Backend {
                        backend: "operator state",
                        message: "a list of more than 2^32 elements cannot be snapshotted".into(),
                    })?;
                    f(&index.to_be_bytes(), v)?;
                }
                Ok(())
            }

            fn load(&mut self, entries: OperatorEntries) {
                self.elements = entries.into_iter().map(|(_, v)| v).collect();
            }
        }
    };
}

list_state!(
    /// A list per operator instance (Flink's operator `ListState`), for sources and sinks:
    /// partition offsets, pending files. On restore at another parallelism the elements are
    /// split over the new instances: each old instance's elements are spread evenly over its
    /// key groups, and a new instance receives those of the key groups it owns (at the same
    /// parallelism, exactly its own elements).
    OperatorListState
);
list_state!(
    /// A list per operator instance whose restore gives every instance the elements of all
    /// instances (Flink's union list state): each instance picks what it needs, for example
    /// the offsets of the partitions it is assigned now.
    UnionListState
);
