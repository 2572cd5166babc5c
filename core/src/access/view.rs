//! Key-scoped views: typed access to one state for the current key.
//!
//! [`Bound::key`](crate::Bound::key) encodes the key once and returns the operator's generated
//! key-scoped view; its accessor methods (one per state field) return the views below. Every
//! view borrows the backend mutably through the key-scoped view, so the borrow checker ensures a
//! view never outlives its key and a zero-copy read is never held across a write.

use std::borrow::Borrow;
use std::marker::PhantomData;

use crate::access::timers::Timers;
use crate::data::backend::{EntryHint, EntryIter, StateBackend, StateId, ValueUpdate};
use crate::model::codec::{self, Frames, StateValue};
use crate::model::error::{Error, Result};
use crate::model::key::{EncodeKey, StateKey};
use crate::model::state::Aggregate;

/// Reusable buffers of a bound operator, so that state access does not allocate.
#[derive(Debug, Default)]
pub struct Scratch {
    value: Vec<u8>,
    pub(crate) user_key: Vec<u8>,
    /// The canonical bytes of the namespace the current view addresses (empty for a state
    /// without namespaces): the user key of value, list, reducing and aggregating states, the
    /// prefix of every user key of a map state.
    pub(crate) namespace: Vec<u8>,
    /// Where the backend found the last value read, for a write of it that follows.
    hint: EntryHint,
}

/// The current key, a mutable borrow of the backend and scratch buffers: what every view holds.
pub struct KeyContext<'a, B: ?Sized> {
    backend: &'a mut B,
    key: &'a [u8],
    key_group: u16,
    operator: &'static str,
    scratch: &'a mut Scratch,
    timers: &'a mut Timers,
}

impl<'a, B: ?Sized> KeyContext<'a, B> {
    pub(crate) fn new(
        backend: &'a mut B,
        key: &'a [u8],
        key_group: u16,
        operator: &'static str,
        scratch: &'a mut Scratch,
        timers: &'a mut Timers,
    ) -> Self {
        Self {
            backend,
            key,
            key_group,
            operator,
            scratch,
            timers,
        }
    }

    /// Addresses `namespace` in the views made from this context (generated accessors of
    /// namespaced states).
    #[doc(hidden)]
    #[inline]
    #[must_use]
    pub fn in_namespace<N: EncodeKey + ?Sized>(self, namespace: &N) -> Self {
        self.scratch.namespace.clear();
        namespace.encode_key(&mut self.scratch.namespace);
        self
    }

    /// Addresses no namespace (generated accessors of states without namespaces).
    #[doc(hidden)]
    #[inline(always)]
    #[must_use]
    pub fn no_namespace(self) -> Self {
        self.scratch.namespace.clear();
        self
    }

    /// What a timer view changes: the backend, the key, scratch buffers and the timers.
    pub(crate) fn timer_parts(&mut self) -> (&mut B, &[u8], &mut Scratch, &mut Timers) {
        (
            &mut *self.backend,
            self.key,
            &mut *self.scratch,
            &mut *self.timers,
        )
    }

    pub(crate) fn timers_ref(&self) -> &Timers {
        self.timers
    }

    pub(crate) fn backend_ref(&self) -> &B {
        self.backend
    }

    pub(crate) fn backend_and_key(&mut self) -> (&mut B, &[u8]) {
        (&mut *self.backend, self.key)
    }

    /// The current key with its key-group prefix, as backends address it.
    pub(crate) fn key(&self) -> &[u8] {
        self.key
    }

    /// A shorter-lived copy of this context (used by generated accessors).
    pub fn reborrow(&mut self) -> KeyContext<'_, B> {
        KeyContext {
            backend: &mut *self.backend,
            key: self.key,
            key_group: self.key_group,
            operator: self.operator,
            scratch: &mut *self.scratch,
            timers: &mut *self.timers,
        }
    }

    /// The key group of the current key.
    #[must_use]
    pub fn key_group(&self) -> u16 {
        self.key_group
    }

    /// The canonical bytes of the current key (without the key-group prefix).
    #[must_use]
    pub fn key_bytes(&self) -> &[u8] {
        self.key.get(2..).unwrap_or_default()
    }

    fn loc(&self, state: &'static str) -> StateLoc {
        StateLoc {
            operator: self.operator,
            state,
            key_group: self.key_group,
        }
    }

    #[cold]
    pub(crate) fn wrap(&self, state: &'static str, error: impl Into<Error>) -> Error {
        self.loc(state).wrap(error)
    }
}

/// Which state a view addresses.
#[derive(Debug, Clone, Copy)]
#[doc(hidden)]
pub struct Slot {
    pub id: StateId,
    pub name: &'static str,
}

macro_rules! common {
    () => {
        /// Removes this key's state (in the view's namespace, for a namespaced state).
        ///
        /// # Errors
        ///
        /// A backend failure, with the operator, state and key group.
        pub fn clear(&mut self) -> Result<()> {
            let r = clear_namespace(
                &mut *self.ctx.backend,
                self.slot.id,
                self.ctx.key,
                &self.ctx.scratch.namespace,
                Self::PREFIXED,
            );
            r.map_err(|e| self.ctx.wrap(self.slot.name, e))
        }
    };
}

/// Removes what a key holds in one namespace: every entry when the namespace is empty (a state
/// without namespaces), otherwise the entry at the namespace or, for maps (`prefixed`), every
/// entry whose user key starts with it.
pub(crate) fn clear_namespace<B: StateBackend + ?Sized>(
    backend: &mut B,
    state: StateId,
    key: &[u8],
    namespace: &[u8],
    prefixed: bool,
) -> Result<()> {
    if namespace.is_empty() {
        return backend.delete_key(state, key);
    }
    if !prefixed {
        return backend.delete(state, key, namespace);
    }
    let mut doomed = Vec::new();
    for entry in backend.scan(state, key)? {
        let (user_key, _) = entry?;
        if user_key.starts_with(namespace) {
            doomed.push(user_key.to_vec());
        }
    }
    for user_key in doomed {
        backend.delete(state, key, &user_key)?;
    }
    Ok(())
}

/// [`ValueState`](crate::ValueState) for the current key.
pub struct ValueView<'a, T, B: ?Sized> {
    ctx: KeyContext<'a, B>,
    slot: Slot,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T, B: ?Sized> ValueView<'a, T, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot) -> Self {
        Self {
            ctx,
            slot,
            _t: PhantomData,
        }
    }
}

impl<'a, T: StateValue, B: StateBackend + ?Sized> ValueView<'a, T, B> {
    /// The stored value, read in place: a validated view of the archived bytes, no copy.
    ///
    /// # Errors
    ///
    /// A backend failure, or stored bytes that are not a valid archive of `T`.
    #[inline(always)]
    pub fn get(self) -> Result<Option<&'a T::Archived>> {
        let Self { ctx, slot, .. } = self;
        let KeyContext {
            backend,
            key,
            key_group,
            operator,
            scratch,
            ..
        } = ctx;
        // The location is built only for an error, not on every read.
        let err = move || StateLoc {
            operator,
            state: slot.name,
            key_group,
        };
        let backend: &'a B = backend;
        match backend.get_hinted(slot.id, key, &scratch.namespace, &mut scratch.hint) {
            Ok(None) => Ok(None),
            Ok(Some(b)) => match codec::access::<T>(b) {
                Ok(v) => Ok(Some(v)),
                Err(e) => Err(err().wrap(e)),
            },
            Err(e) => Err(err().wrap(e)),
        }
    }

    /// The stored value, deserialised into an owned `T`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_owned(&self) -> Result<Option<T>> {
        let mut out = None;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &mut |b| {
                out = b.map(codec::decode::<T>).transpose()?;
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(out)
    }

    /// Whether a value is stored.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn exists(&self) -> Result<bool> {
        let mut found = false;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &mut |b| {
                found = b.is_some();
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(found)
    }

    /// Stores `value`.
    ///
    /// # Errors
    ///
    /// An encoding or backend failure.
    #[inline(always)]
    pub fn set(&mut self, value: &T) -> Result<()> {
        codec::encode_into(value, &mut self.ctx.scratch.value)
            .map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        // A value read just before (a read-modify-write) left where it is.
        let r = self.ctx.backend.put_hinted(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &self.ctx.scratch.value,
            self.ctx.scratch.hint,
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Stores `f(old)`, where `old` is the current value (if any): one backend call
    /// ([`StateBackend::read_modify_write`]), which finds the entry once on the heap, a new
    /// key's included.
    ///
    /// # Errors
    ///
    /// As [`get_owned`](Self::get_owned) and [`set`](Self::set).
    pub fn update(&mut self, f: impl FnOnce(Option<T>) -> T) -> Result<()> {
        let mut f = Some(f);
        self.modify(&mut |old, out| {
            let old = match old {
                None => None,
                Some(b) => Some(codec::decode::<T>(b)?),
            };
            // `read_modify_write` calls its update once; a backend that called it again would
            // get an error here, not a second application of `f`.
            let f = f.take().ok_or_else(|| Error::Backend {
                backend: "statewright",
                message: "a backend called a read-modify-write's update twice".into(),
            })?;
            codec::encode_into(&f(old), out)?;
            Ok(())
        })
    }

    /// Stores what `update` encodes from the stored bytes (`None` when there are none), with
    /// one backend call ([`StateBackend::read_modify_write`]): one lookup on the heap, where a
    /// read and then a write looked a new entry up twice.
    #[inline(always)]
    fn modify(&mut self, update: ValueUpdate<'_>) -> Result<()> {
        let ctx = &mut self.ctx;
        let r = ctx.backend.read_modify_write(
            self.slot.id,
            ctx.key,
            &ctx.scratch.namespace,
            &mut ctx.scratch.value,
            update,
        );
        r.map_err(|e| ctx.wrap(self.slot.name, e))
    }

    const PREFIXED: bool = false;

    common!();
}

/// [`ListState`](crate::ListState) for the current key.
pub struct ListView<'a, T, B: ?Sized> {
    ctx: KeyContext<'a, B>,
    slot: Slot,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T, B: ?Sized> ListView<'a, T, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot) -> Self {
        Self {
            ctx,
            slot,
            _t: PhantomData,
        }
    }
}

impl<'a, T: StateValue, B: StateBackend + ?Sized> ListView<'a, T, B> {
    /// Appends one element, without reading or rewriting the stored list.
    ///
    /// # Errors
    ///
    /// An encoding or backend failure.
    pub fn add(&mut self, value: &T) -> Result<()> {
        self.add_all(std::iter::once(value))
    }

    /// Appends every element of `values` with one backend write.
    ///
    /// # Errors
    ///
    /// An encoding or backend failure.
    pub fn add_all<'v>(&mut self, values: impl IntoIterator<Item = &'v T>) -> Result<()> {
        let loc = self.ctx.loc(self.slot.name);
        let buf = &mut self.ctx.scratch.value;
        buf.clear();
        for v in values {
            codec::encode_frame_into(v, buf).map_err(|e| loc.wrap(e))?;
        }
        if self.ctx.scratch.value.is_empty() {
            return Ok(());
        }
        let r = self.ctx.backend.merge(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &self.ctx.scratch.value,
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Replaces the list with `values` (an empty slice clears it).
    ///
    /// # Errors
    ///
    /// An encoding or backend failure.
    pub fn update(&mut self, values: &[T]) -> Result<()> {
        let loc = self.ctx.loc(self.slot.name);
        let buf = &mut self.ctx.scratch.value;
        buf.clear();
        for v in values {
            codec::encode_frame_into(v, buf).map_err(|e| loc.wrap(e))?;
        }
        let r = if values.is_empty() {
            self.ctx
                .backend
                .delete(self.slot.id, self.ctx.key, &self.ctx.scratch.namespace)
        } else {
            self.ctx.backend.put(
                self.slot.id,
                self.ctx.key,
                &self.ctx.scratch.namespace,
                &self.ctx.scratch.value,
            )
        };
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// The elements in insertion order, each a validated view of its archived bytes.
    ///
    /// # Errors
    ///
    /// A backend failure; each element is validated as the iterator reaches it.
    pub fn iter(self) -> Result<ListIter<'a, T>> {
        let Self { ctx, slot, .. } = self;
        let err = ctx.loc(slot.name);
        let bytes = ctx
            .backend
            .get(slot.id, ctx.key, &ctx.scratch.namespace)
            .map_err(|e| err.wrap(e))?;
        Ok(ListIter {
            frames: Frames::new(bytes.unwrap_or_default()),
            err,
            _t: PhantomData,
        })
    }

    /// The elements as owned values.
    ///
    /// # Errors
    ///
    /// A backend failure or an invalid element.
    pub fn get_owned(&self) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &mut |b| {
                for f in Frames::new(b.unwrap_or_default()) {
                    out.push(codec::decode::<T>(f?)?);
                }
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(out)
    }

    /// Number of elements (counts frames; decodes nothing).
    ///
    /// # Errors
    ///
    /// A backend failure or damaged framing.
    pub fn len(&self) -> Result<usize> {
        let mut n = 0;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &mut |b| {
                for f in Frames::new(b.unwrap_or_default()) {
                    f?;
                    n += 1;
                }
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(n)
    }

    /// Whether the list has no elements.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn is_empty(&self) -> Result<bool> {
        let mut empty = true;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.namespace,
            &mut |b| {
                empty = b.is_none_or(<[u8]>::is_empty);
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(empty)
    }

    const PREFIXED: bool = false;

    common!();
}

/// Operator, state and key group: the context every state error carries.
#[derive(Clone, Copy)]
struct StateLoc {
    operator: &'static str,
    state: &'static str,
    key_group: u16,
}

impl StateLoc {
    #[cold]
    #[inline(never)]
    fn wrap(self, e: impl Into<Error>) -> Error {
        Error::State {
            operator: self.operator,
            state: self.state,
            key_group: self.key_group,
            source: Box::new(e.into()),
        }
    }
}

/// Iterator over a list's elements, each validated as it is reached.
pub struct ListIter<'a, T> {
    frames: Frames<'a>,
    err: StateLoc,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T: StateValue> Iterator for ListIter<'a, T> {
    type Item = Result<&'a T::Archived>;

    fn next(&mut self) -> Option<Self::Item> {
        let frame = self.frames.next()?;
        Some(
            frame
                .and_then(codec::access::<T>)
                .map_err(|e| self.err.wrap(e)),
        )
    }
}

/// [`MapState`](crate::MapState) for the current key.
pub struct MapView<'a, K, V, B: ?Sized> {
    ctx: KeyContext<'a, B>,
    slot: Slot,
    _t: PhantomData<fn() -> (K, V)>,
}

impl<'a, K, V, B: ?Sized> MapView<'a, K, V, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot) -> Self {
        Self {
            ctx,
            slot,
            _t: PhantomData,
        }
    }
}

impl<'a, K: StateKey, V: StateValue, B: StateBackend + ?Sized> MapView<'a, K, V, B> {
    fn encode_user_key<Q: EncodeKey + ?Sized>(&mut self, key: &Q) {
        let scratch = &mut *self.ctx.scratch;
        scratch.user_key.clear();
        scratch.user_key.extend_from_slice(&scratch.namespace);
        key.encode_key(&mut scratch.user_key);
    }

    /// The entries of the current key in the view's namespace, with the namespace taken off
    /// their user keys.
    fn scan_namespace(self) -> Result<(StateLoc, EntryIter<'a>)> {
        let err = self.ctx.loc(self.slot.name);
        let KeyContext {
            backend,
            key,
            scratch,
            ..
        } = self.ctx;
        let backend: &'a B = backend;
        let scratch: &'a Scratch = scratch;
        let namespace: &'a [u8] = &scratch.namespace;
        let it = backend.scan(self.slot.id, key).map_err(|e| err.wrap(e))?;
        if namespace.is_empty() {
            return Ok((err, it));
        }
        Ok((
            err,
            Box::new(it.filter_map(move |entry| match entry {
                Ok((k, v)) => k.strip_prefix(namespace).map(|k| Ok((k, v))),
                Err(e) => Some(Err(e)),
            })),
        ))
    }

    /// The value at `key`, read in place.
    ///
    /// # Errors
    ///
    /// A backend failure or an invalid stored value.
    pub fn get<Q>(mut self, key: &Q) -> Result<Option<&'a V::Archived>>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.encode_user_key(key);
        let Self { ctx, slot, .. } = self;
        let err = ctx.loc(slot.name);
        let backend: &'a B = ctx.backend;
        match backend
            .get(slot.id, ctx.key, &ctx.scratch.user_key)
            .map_err(|e| err.wrap(e))?
        {
            None => Ok(None),
            Some(b) => codec::access::<V>(b).map(Some).map_err(|e| err.wrap(e)),
        }
    }

    /// The value at `key`, deserialised.
    ///
    /// # Errors
    ///
    /// A backend failure or an invalid stored value.
    pub fn get_owned<Q>(&mut self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.encode_user_key(key);
        let mut out = None;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.user_key,
            &mut |b| {
                out = b.map(codec::decode::<V>).transpose()?;
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(out)
    }

    /// Whether an entry exists at `key`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn contains<Q>(&mut self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.encode_user_key(key);
        let mut found = false;
        let r = self.ctx.backend.read(
            self.slot.id,
            self.ctx.key,
            &self.ctx.scratch.user_key,
            &mut |b| {
                found = b.is_some();
                Ok(())
            },
        );
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        Ok(found)
    }

    /// Stores `value` at `key`; only this entry is written.
    ///
    /// # Errors
    ///
    /// An encoding or backend failure.
    pub fn put<Q>(&mut self, key: &Q, value: &V) -> Result<()>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.encode_user_key(key);
        codec::encode_into(value, &mut self.ctx.scratch.value)
            .map_err(|e| self.ctx.wrap(self.slot.name, e))?;
        let s = &*self.ctx.scratch;
        let r = self
            .ctx
            .backend
            .put(self.slot.id, self.ctx.key, &s.user_key, &s.value);
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Stores `f(old)` at `key`.
    ///
    /// # Errors
    ///
    /// As [`get_owned`](Self::get_owned) and [`put`](Self::put).
    pub fn update<Q>(&mut self, key: &Q, f: impl FnOnce(Option<V>) -> V) -> Result<()>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        let new = f(self.get_owned(key)?);
        self.put(key, &new)
    }

    /// Removes the entry at `key`.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn remove<Q>(&mut self, key: &Q) -> Result<()>
    where
        K: Borrow<Q>,
        Q: EncodeKey + ?Sized,
    {
        self.encode_user_key(key);
        let r = self
            .ctx
            .backend
            .delete(self.slot.id, self.ctx.key, &self.ctx.scratch.user_key);
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Whether the map has no entries.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn is_empty(&self) -> Result<bool> {
        let namespace = &self.ctx.scratch.namespace;
        let r = self.ctx.backend.scan(self.slot.id, self.ctx.key);
        r.and_then(|it| {
            for entry in it {
                if entry?.0.starts_with(namespace) {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// Number of entries.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn len(&self) -> Result<usize> {
        let namespace = &self.ctx.scratch.namespace;
        let r = if namespace.is_empty() {
            self.ctx.backend.count(self.slot.id, self.ctx.key)
        } else {
            self.ctx
                .backend
                .scan(self.slot.id, self.ctx.key)
                .and_then(|it| {
                    let mut n = 0;
                    for entry in it {
                        n += usize::from(entry?.0.starts_with(namespace));
                    }
                    Ok(n)
                })
        };
        r.map_err(|e| self.ctx.wrap(self.slot.name, e))
    }

    /// The entries in key order: decoded keys and in-place values.
    ///
    /// # Errors
    ///
    /// A backend failure; each entry is decoded and validated as the iterator reaches it.
    pub fn entries(self) -> Result<impl Iterator<Item = Result<(K, &'a V::Archived)>> + 'a> {
        let (err, it) = self.scan_namespace()?;
        Ok(it.map(move |entry| {
            let (k, v) = entry.map_err(|e| err.wrap(e))?;
            let key = K::from_key_bytes(k).map_err(|e| err.wrap(e))?;
            let value = codec::access::<V>(v).map_err(|e| err.wrap(e))?;
            Ok((key, value))
        }))
    }

    /// The keys in order.
    ///
    /// # Errors
    ///
    /// A backend failure; each key is decoded as the iterator reaches it.
    pub fn keys(self) -> Result<impl Iterator<Item = Result<K>> + 'a> {
        let (err, it) = self.scan_namespace()?;
        Ok(it.map(move |entry| {
            let (k, _) = entry.map_err(|e| err.wrap(e))?;
            K::from_key_bytes(k).map_err(|e| err.wrap(e))
        }))
    }

    /// The values in key order, read in place.
    ///
    /// # Errors
    ///
    /// A backend failure; each value is validated as the iterator reaches it.
    pub fn values(self) -> Result<impl Iterator<Item = Result<&'a V::Archived>> + 'a> {
        let (err, it) = self.scan_namespace()?;
        Ok(it.map(move |entry| {
            let (_, v) = entry.map_err(|e| err.wrap(e))?;
            codec::access::<V>(v).map_err(|e| err.wrap(e))
        }))
    }

    const PREFIXED: bool = true;

    common!();
}

/// [`ReducingState`](crate::ReducingState) for the current key.
pub struct ReducingView<'a, T, B: ?Sized> {
    inner: ValueView<'a, T, B>,
    reduce: fn(&T, &T) -> T,
}

impl<'a, T, B: ?Sized> ReducingView<'a, T, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot, reduce: fn(&T, &T) -> T) -> Self {
        Self {
            inner: ValueView::new(ctx, slot),
            reduce,
        }
    }
}

impl<'a, T: StateValue, B: StateBackend + ?Sized> ReducingView<'a, T, B> {
    /// Folds `value` into the stored value with the reduce function (stores it when empty).
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn add(&mut self, value: &T) -> Result<()> {
        let reduce = self.reduce;
        self.inner.modify(&mut |old, out| {
            match old {
                None => codec::encode_into(value, out)?,
                Some(b) => codec::encode_into(&reduce(&codec::decode::<T>(b)?, value), out)?,
            }
            Ok(())
        })
    }

    /// The reduced value, read in place.
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn get(self) -> Result<Option<&'a T::Archived>> {
        self.inner.get()
    }

    /// The reduced value, deserialised.
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn get_owned(&self) -> Result<Option<T>> {
        self.inner.get_owned()
    }

    /// Removes this key's value.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn clear(&mut self) -> Result<()> {
        self.inner.clear()
    }
}

/// [`AggregatingState`](crate::AggregatingState) for the current key.
pub struct AggregatingView<'a, A: Aggregate, B: ?Sized> {
    inner: ValueView<'a, A::Acc, B>,
}

impl<'a, A: Aggregate, B: ?Sized> AggregatingView<'a, A, B> {
    #[doc(hidden)]
    pub fn new(ctx: KeyContext<'a, B>, slot: Slot) -> Self {
        Self {
            inner: ValueView::new(ctx, slot),
        }
    }
}

impl<'a, A: Aggregate, B: StateBackend + ?Sized> AggregatingView<'a, A, B> {
    /// Adds `value` to the accumulator (created with [`Aggregate::create`] when empty).
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn add(&mut self, value: &A::In) -> Result<()> {
        self.inner.modify(&mut |old, out| {
            let mut acc = match old {
                None => A::create(),
                Some(b) => codec::decode::<A::Acc>(b)?,
            };
            A::add(&mut acc, value);
            codec::encode_into(&acc, out)?;
            Ok(())
        })
    }

    /// The aggregate's result; `None` when nothing was added.
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn get(&self) -> Result<Option<A::Out>> {
        Ok(self.inner.get_owned()?.map(|acc| A::result(&acc)))
    }

    /// Merges another accumulator into this key's (for example one restored from elsewhere).
    /// A key without an accumulator stores `other` as it is, as Flink's aggregating state
    /// does: [`Aggregate::create`] is not called.
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn merge(&mut self, other: A::Acc) -> Result<()> {
        match self.inner.get_owned()? {
            Some(mut acc) => {
                A::merge(&mut acc, other);
                self.inner.set(&acc)
            }
            None => self.inner.set(&other),
        }
    }

    /// The accumulator, read in place.
    ///
    /// # Errors
    ///
    /// A codec or backend failure.
    pub fn accumulator(self) -> Result<Option<&'a <A::Acc as rkyv::Archive>::Archived>> {
        self.inner.get()
    }

    /// Removes this key's accumulator.
    ///
    /// # Errors
    ///
    /// A backend failure.
    pub fn clear(&mut self) -> Result<()> {
        self.inner.clear()
    }
}
