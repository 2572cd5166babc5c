//! Namespaces of a keyed state: `#[state(namespace = N)]` gives a state one value (list, map,
//! accumulator, ...) per key and namespace, as Flink addresses keyed state by (key group, key,
//! namespace). Windows are namespaces.
//!
//! The accessor of a namespaced state takes the namespace (`st.sum(&window).add(&x)`); the
//! state's `_namespaces` accessor lists a key's namespaces, clears one, and (list, reducing and
//! aggregating states) merges namespaces into one, as session windows do.

use std::marker::PhantomData;

use crate::access::view::{KeyContext, Slot, clear_namespace};
use crate::data::backend::StateBackend;
use crate::model::codec::{self, StateValue};
use crate::model::error::{CodecError, Error, Result};
use crate::model::key::StateKey;
use crate::model::state::Aggregate;

/// How the values of two namespaces combine into one: implemented for list, reducing and
/// aggregating states, the kinds whose namespaces merge.
#[diagnostic::on_unimplemented(
    message = "the namespaces of this state cannot be merged",
    label = "only list, reducing and aggregating states merge namespaces",
    note = "merging combines values: lists append, reducing states reduce, aggregating states merge accumulators; a value or map state has no such rule"
)]
pub trait MergeNamespaces {
    /// Whether a source is appended to the target without reading it (lists).
    #[doc(hidden)]
    const APPENDS: bool = false;

    /// Combines the stored `source` into `target` (`None` when the target namespace holds
    /// nothing yet), writing the result to `out`.
    ///
    /// # Errors
    ///
    /// Stored bytes that do not decode.
    #[doc(hidden)]
    fn merge(
        &self,
        target: Option<&[u8]>,
        source: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), CodecError>;
}

/// The namespaces of a value or map state: listed and cleared, not merged.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMerge;

/// The namespaces of a list state merge by appending.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListMerge;

impl MergeNamespaces for ListMerge {
    const APPENDS: bool = true;

    fn merge(
        &self,
        target: Option<&[u8]>,
        source: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), CodecError> {
        out.clear();
        out.extend_from_slice(target.unwrap_or_default());
        out.extend_from_slice(source);
        Ok(())
    }
}

/// The namespaces of a reducing state merge with its reduce function.
#[derive(Debug, Clone, Copy)]
pub struct ReduceMerge<T>(pub fn(&T, &T) -> T);

impl<T: StateValue> MergeNamespaces for ReduceMerge<T> {
    fn merge(
        &self,
        target: Option<&[u8]>,
        source: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), CodecError> {
        let source = codec::decode::<T>(source)?;
        let merged = match target {
            Some(t) => (self.0)(&codec::decode::<T>(t)?, &source),
            None => source,
        };
        codec::encode_into(&merged, out)
    }
}

/// The namespaces of an aggregating state merge with [`Aggregate::merge`].
pub struct AggregateMerge<A>(PhantomData<fn() -> A>);

impl<A> AggregateMerge<A> {
    /// The merger.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<A> Default for AggregateMerge<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Aggregate> MergeNamespaces for AggregateMerge<A> {
    fn merge(
        &self,
        target: Option<&[u8]>,
        source: &[u8],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), CodecError> {
        let source = codec::decode::<A::Acc>(source)?;
        let merged = match target {
            Some(t) => {
                let mut acc = codec::decode::<A::Acc>(t)?;
                A::merge(&mut acc, source);
                acc
            }
            None => source,
        };
        codec::encode_into(&merged, out)
    }
}

/// The namespaces of one namespaced state for the current key: what a namespaced state's
/// `<field>_namespaces()` accessor returns.
pub struct NamespacesView<'a, N, B: ?Sized, M = NoMerge> {
    ctx: KeyContext<'a, B>,
    slot: Slot,
    /// Map states: the namespace is the prefix of each user key.
    prefixed: bool,
    merger: M,
    _n: PhantomData<fn() -> N>,
}

impl<'a, N, B: ?Sized, M> NamespacesView<'a, N, B, M> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot, prefixed: bool, merger: M) -> Self {
        Self {
            ctx,
            slot,
            prefixed,
            merger,
            _n: PhantomData,
        }
    }
}

impl<N: StateKey, B: StateBackend + ?Sized, M> NamespacesView<'_, N, B, M> {
    /// The namespaces the current key holds state in, in namespace order.
    ///
    /// # Errors
    ///
    /// A backend failure, or stored bytes that are not a namespace.
    pub fn list(&self) -> Result<Vec<N>> {
        let wrap = |e: Error| self.ctx.wrap(self.slot.name, e);
        let entries = self
            .ctx
            .backend_ref()
            .scan(self.slot.id, self.ctx.key())
            .map_err(wrap)?;
        let mut out: Vec<N> = Vec::new();
        let mut last: Vec<u8> = Vec::new();
        for entry in entries {
            let (user_key, _) = entry.map_err(wrap)?;
            let mut rest = user_key;
            let ns = if self.prefixed {
                N::decode_key(&mut rest).map_err(|e| wrap(e.into()))?
            } else {
                rest = &[];
                N::from_key_bytes(user_key).map_err(|e| wrap(e.into()))?
            };
            let bytes = user_key
                .get(..user_key.len() - rest.len())
                .unwrap_or_default();
            if out.is_empty() || bytes != last.as_slice() {
                last.clear();
                last.extend_from_slice(bytes);
                out.push(ns);
            }
        }
        Ok(out)
    }

    /// Removes the current key's state in `namespace`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn clear(&mut self, namespace: &N) -> Result<()> {
        let mut ns = Vec::new();
        namespace.encode_key(&mut ns);
        // An empty encoding (a zero-sized namespace type) is all of the key's state.
        let (backend, key) = self.ctx.backend_and_key();
        let r = clear_namespace(backend, self.slot.id, key, &ns, self.prefixed);
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Merges the current key's state in each of `sources` into `target` and removes the
    /// sources, as Flink's `mergeNamespaces(target, sources)`: list elements are appended in
    /// the order of `sources`, reducing states reduce, aggregating states merge their
    /// accumulators. A source equal to the target, or one that holds nothing, is skipped.
    ///
    /// The sources are merged one at a time, each removed once it is in the target: after an
    /// error, the sources before the failing one are merged and gone, the others untouched.
    /// A merge changes the target's time-to-live stamps as a write does (the merged values are
    /// stamped now).
    ///
    /// # Errors
    ///
    /// A backend failure, or stored bytes that do not decode.
    pub fn merge(&mut self, target: &N, sources: &[N]) -> Result<()>
    where
        M: MergeNamespaces,
    {
        let mut target_ns = Vec::new();
        target.encode_key(&mut target_ns);
        let id = self.slot.id;
        let name = self.slot.name;
        let (backend, key) = self.ctx.backend_and_key();
        let mut source_ns = Vec::new();
        let mut out = Vec::new();
        let mut r: Result<()> = Ok(());
        for source in sources {
            source_ns.clear();
            source.encode_key(&mut source_ns);
            if source_ns == target_ns {
                continue;
            }
            let mut value = None;
            r = backend.read(id, key, &source_ns, &mut |b| {
                value = b.map(<[u8]>::to_vec);
                Ok(())
            });
            if r.is_err() {
                break;
            }
            let Some(value) = value else { continue };
            r = if M::APPENDS {
                backend.merge(id, key, &target_ns, &value)
            } else {
                let mut target_value = None;
                backend
                    .read(id, key, &target_ns, &mut |b| {
                        target_value = b.map(<[u8]>::to_vec);
                        Ok(())
                    })
                    .and_then(|()| {
                        self.merger
                            .merge(target_value.as_deref(), &value, &mut out)
                            .map_err(Into::into)
                    })
                    .and_then(|()| backend.put(id, key, &target_ns, &out))
            };
            if r.is_err() {
                break;
            }
            r = backend.delete(id, key, &source_ns);
            if r.is_err() {
                break;
            }
        }
        r.map_err(|e| self.ctx.wrap(name, e))
    }
}
