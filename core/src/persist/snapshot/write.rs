//! Writing snapshot format v1, in two steps: [`capture`] copies what a snapshot holds out of a
//! backend (the short synchronous step of a checkpoint), [`SnapshotImage::write`] sorts,
//! encodes, compresses and writes it (on any thread, while processing goes on).

use std::io::Write;
use std::path::Path;

use super::format::{
    BlockRef, COMPRESSION_LZ4, COMPRESSION_NONE, END_MAGIC, FORMAT_VERSION, HEADER_LEN, Header,
    KIND_FULL, KIND_INCREMENTAL, KeyGroupIndex, SnapshotIndex, StateSection, TOMBSTONE_ENTRY,
    TOMBSTONE_KEY, put_u32,
};
use crate::access::operator_state::OperatorStateData;
use crate::data::backend::{Change, DetachedState, Snapshots, StateId};
use crate::model::codec::RKYV_FORMAT;
use crate::model::descriptor::{OperatorDescriptor, StateKind};
use crate::model::error::{Error, Result};
use crate::model::keygroup::{KEY_HASH_VERSION, KeyGroupRange};
use crate::model::schema::{Schema, StoredSchema};

/// How a snapshot is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Compress blocks with LZ4 (default: on).
    pub compression: bool,
    /// Target uncompressed size of a block (default: 64 KiB).
    pub block_size: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            compression: true,
            block_size: 64 * 1024,
        }
    }
}

/// What a written snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnapshotSummary {
    /// Bytes written.
    pub bytes: u64,
    /// Entries written over all states (for an incremental snapshot: changes, deletions
    /// included).
    pub entries: u64,
    /// Uncompressed bytes of all records.
    pub raw_bytes: u64,
}

struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn write_all(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        self.inner
            .write_all(bytes)
            .map_err(|e| Error::io(path, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// One entry copied out of the backend: offsets into its state's arena.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    /// The key's first 16 bytes, zero-padded, as two big-endian words: sorting compares
    /// these first, in the entry itself, and reads the arena only on a tie (a key longer than
    /// 16 bytes, or several entries of one key). A backend that lists its entries in hash
    /// order, as the heap does, otherwise makes every comparison of the sort two random reads
    /// of the arena (`bench/ANALYSIS.md` has the figures).
    head: (u64, u64),
    key_len: u32,
    user_key_len: u32,
    /// The value's length, or [`TOMBSTONE_ENTRY`] / [`TOMBSTONE_KEY`] (no value bytes).
    value_len: u32,
}

/// The first 16 bytes of `key`, zero-padded, as two big-endian words. Zero padding keeps the
/// order: when `a < b`, `head_of(a) <= head_of(b)`.
fn head_of(key: &[u8]) -> (u64, u64) {
    let mut head = [0u8; 16];
    for (h, k) in head.iter_mut().zip(key) {
        *h = *k;
    }
    let head = u128::from_be_bytes(head);
    ((head >> 64) as u64, head as u64)
}

impl Entry {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.start..self.start + self.key_len as usize]
    }
    fn user_key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let s = self.start + self.key_len as usize;
        &arena[s..s + self.user_key_len as usize]
    }
    fn is_tombstone(&self) -> bool {
        self.value_len >= TOMBSTONE_KEY
    }
    fn value<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        if self.is_tombstone() {
            return &[];
        }
        let s = self.start + self.key_len as usize + self.user_key_len as usize;
        &arena[s..s + self.value_len as usize]
    }
}

fn len32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n < TOMBSTONE_KEY)
        .ok_or_else(|| Error::Backend {
            backend: "snapshot",
            message: format!("{what} of {n} bytes exceeds the format's 4 GiB limit"),
        })
}

/// One state's entries, copied out of the backend.
struct StateImage {
    name: &'static str,
    kind: StateKind,
    value_type: &'static str,
    user_key_type: &'static str,
    version: u32,
    value_schema: &'static Schema,
    user_key_schema: Option<&'static Schema>,
    ttl_ms: u64,
    arena: Vec<u8>,
    entries: Vec<Entry>,
}

impl StateImage {
    fn push(&mut self, key: &[u8], user_key: &[u8], value: Option<&[u8]>, tomb: u32) -> Result<()> {
        self.entries.push(Entry {
            start: self.arena.len(),
            // Filled in by `write`, out of the backend's synchronous step.
            head: (0, 0),
            key_len: len32(key.len(), "a key")?,
            user_key_len: len32(user_key.len(), "a user key")?,
            value_len: match value {
                Some(v) => len32(v.len(), "a value")?,
                None => tomb,
            },
        });
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(user_key);
        if let Some(v) = value {
            self.arena.extend_from_slice(v);
        }
        Ok(())
    }
}

/// A consistent copy of what one operator instance's snapshot holds, taken by [`capture`] or
/// [`capture_changes`]; it owns its bytes, so it can be written on another thread while the
/// backend goes on changing.
pub struct SnapshotImage {
    operator: &'static str,
    key_type: &'static str,
    key_schema: &'static Schema,
    max_parallelism: u16,
    range: KeyGroupRange,
    incremental: bool,
    states: Vec<StateImage>,
    /// A view to copy the states from when the image is written (see
    /// [`Snapshots::detach`](crate::Snapshots::detach)), with the backend's id of each state.
    detached: Option<(Box<dyn DetachedState>, Vec<StateId>)>,
    /// The instance's watermark at the capture.
    watermark: Option<i64>,
}

impl std::fmt::Debug for SnapshotImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotImage")
            .field("operator", &self.operator)
            .field("range", &self.range)
            .field("incremental", &self.incremental)
            .field("detached", &self.detached.is_some())
            .field("entries", &self.entries())
            .field("bytes", &self.bytes())
            .finish()
    }
}

fn key_group_of(key: &[u8]) -> u16 {
    key.get(..2)
        .map_or(u16::MAX, |p| u16::from_be_bytes([p[0], p[1]]))
}

fn state_image(state: &crate::model::descriptor::StateDescriptor, stamped: bool) -> StateImage {
    StateImage {
        name: state.name,
        kind: state.kind,
        value_type: state.value_type,
        user_key_type: state.user_key_type.unwrap_or_default(),
        version: state.version,
        value_schema: state.value_schema,
        user_key_schema: state.user_key_schema,
        // Non-zero exactly when the values carry TTL stamps.
        ttl_ms: if stamped {
            state.ttl.map_or(1, |t| t.ttl_millis().unsigned_abs())
        } else {
            0
        },
        arena: Vec::new(),
        entries: Vec::new(),
    }
}

/// Copies every entry of the operator's states in the key groups of `range` out of `backend`:
/// the synchronous step of a full snapshot.
///
/// # Errors
///
/// A backend failure, or an entry too large for the format.
pub fn capture<B: Snapshots + ?Sized>(
    backend: &B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
) -> Result<SnapshotImage> {
    let mut states = Vec::with_capacity(operator.states.len());
    for (state, &column) in operator.states.iter().zip(columns) {
        let mut image = state_image(state, backend.stamps_ttl(column));
        backend.for_each_stored(column, &mut |key, user_key, value| {
            if range.contains(key_group_of(key)) {
                image.push(key, user_key, Some(value), 0)?;
            }
            Ok(())
        })?;
        states.push(image);
    }
    Ok(SnapshotImage {
        operator: operator.name,
        key_type: operator.key_type,
        key_schema: operator.key_schema,
        max_parallelism: operator.max_parallelism,
        range,
        incremental: false,
        states,
        detached: None,
        watermark: None,
    })
}

/// Like [`capture`], but where the backend can [detach](Snapshots::detach) a consistent view
/// of its state, takes only that view now and copies the entries out of it when the image is
/// written, on whichever thread writes it.
///
/// # Errors
///
/// A backend failure.
pub fn capture_detached<B: Snapshots + ?Sized>(
    backend: &B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
) -> Result<SnapshotImage> {
    let Some(view) = backend.detach()? else {
        return capture(backend, operator, columns, range);
    };
    let states = operator
        .states
        .iter()
        .zip(columns)
        .map(|(state, &column)| state_image(state, backend.stamps_ttl(column)))
        .collect();
    Ok(SnapshotImage {
        operator: operator.name,
        key_type: operator.key_type,
        key_schema: operator.key_schema,
        max_parallelism: operator.max_parallelism,
        range,
        incremental: false,
        states,
        detached: Some((view, columns.to_vec())),
        watermark: None,
    })
}

/// Takes the changes `backend` tracked since change tracking started or since the last call
/// (see [`Snapshots::track_changes`](crate::Snapshots::track_changes)): the synchronous step of an incremental snapshot,
/// which applies on top of the snapshot taken when tracking (re)started.
///
/// # Errors
///
/// [`Error::Backend`] when the backend does not track changes; a backend failure.
pub fn capture_changes<B: Snapshots + ?Sized>(
    backend: &mut B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
) -> Result<SnapshotImage> {
    let mut states = Vec::with_capacity(operator.states.len());
    for (state, &column) in operator.states.iter().zip(columns) {
        let mut image = state_image(state, backend.stamps_ttl(column));
        backend.drain_changes(column, &mut |key, user_key, change| {
            if !range.contains(key_group_of(key)) {
                return Ok(());
            }
            match change {
                Change::Put(value) => image.push(key, user_key, Some(value), 0),
                Change::Delete => image.push(key, user_key, None, TOMBSTONE_ENTRY),
                Change::DeleteKey => image.push(key, &[], None, TOMBSTONE_KEY),
            }
        })?;
        states.push(image);
    }
    Ok(SnapshotImage {
        operator: operator.name,
        key_type: operator.key_type,
        key_schema: operator.key_schema,
        max_parallelism: operator.max_parallelism,
        range,
        incremental: true,
        states,
        detached: None,
        watermark: None,
    })
}

impl SnapshotImage {
    /// Adds the operator states (broadcast, operator list and union list states) to the image,
    /// after the keyed states. They are small and held in the operator, so every snapshot,
    /// incremental ones too, holds them whole.
    ///
    /// # Errors
    ///
    /// An entry too large for the format.
    pub fn add_operator_states(
        &mut self,
        operator: &OperatorDescriptor,
        states: &[&dyn OperatorStateData],
    ) -> Result<()> {
        let key = self.range.first().to_be_bytes();
        for (desc, data) in operator.operator_states.iter().zip(states) {
            let mut image = state_image(desc, false);
            data.for_each_entry(&mut |user_key, value| image.push(&key, user_key, Some(value), 0))?;
            self.states.push(image);
        }
        Ok(())
    }

    /// Whether this image holds changes (applied on top of earlier snapshots) rather than the
    /// whole state.
    #[must_use]
    pub fn is_incremental(&self) -> bool {
        self.incremental
    }

    /// Records the instance's watermark at the capture (the checkpoint's manifest keeps it).
    #[must_use]
    pub fn with_watermark(mut self, watermark: Option<i64>) -> Self {
        self.watermark = watermark;
        self
    }

    /// The watermark recorded with [`with_watermark`](Self::with_watermark).
    #[must_use]
    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// The operator's name.
    #[must_use]
    pub fn operator(&self) -> &'static str {
        self.operator
    }

    /// The key groups the image covers.
    #[must_use]
    pub fn key_groups(&self) -> KeyGroupRange {
        self.range
    }

    /// Whether the entries are still in a detached view of the backend, copied out when the
    /// image is written (see [`capture_detached`]).
    #[must_use]
    pub fn is_detached(&self) -> bool {
        self.detached.is_some()
    }

    /// Entries (changes, for an incremental image) over all states; 0 while detached.
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.states.iter().map(|s| s.entries.len() as u64).sum()
    }

    /// Bytes of keys and values held in memory.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.states.iter().map(|s| s.arena.len() as u64).sum()
    }

    /// Sorts, encodes, compresses and writes the snapshot to `out`; `path` names the
    /// destination in errors. The bytes depend only on the state's contents, never on the
    /// backend that held it.
    ///
    /// # Errors
    ///
    /// An I/O failure on `out`.
    pub fn write<W: Write>(
        mut self,
        options: SnapshotOptions,
        path: &Path,
        out: W,
    ) -> Result<SnapshotSummary> {
        let detached = self.detached.take();
        // A view that yields each state's entries in canonical order is encoded as it is
        // read: memory holds a block, not the state.
        let streamed = detached
            .as_ref()
            .is_some_and(|(view, _)| view.in_canonical_order());
        let range = self.range;
        if let Some((view, columns)) = &detached
            && !streamed
        {
            for (image, &column) in self.states.iter_mut().zip(columns) {
                view.for_each_stored(column, &mut |key, user_key, value| {
                    if range.contains(key_group_of(key)) {
                        image.push(key, user_key, Some(value), 0)?;
                    }
                    Ok(())
                })?;
            }
        }
        let compression = if options.compression {
            COMPRESSION_LZ4
        } else {
            COMPRESSION_NONE
        };
        let mut out = Counting {
            inner: out,
            written: 0,
        };
        let header = Header {
            format_version: FORMAT_VERSION,
            rkyv_format: RKYV_FORMAT,
            key_hash_version: KEY_HASH_VERSION,
            compression,
            kind: if self.incremental {
                KIND_INCREMENTAL
            } else {
                KIND_FULL
            },
        };
        out.write_all(path, &header.encode())?;

        let mut sections = Vec::with_capacity(self.states.len());
        let mut summary = SnapshotSummary::default();
        let mut blocks = Blocks {
            out: &mut out,
            path,
            options,
            compression,
            raw: Vec::new(),
            stored: Vec::new(),
            block_entries: 0,
            current_kg: None,
        };
        for (i, image) in self.states.iter_mut().enumerate() {
            let mut section = StateSection {
                name: image.name.to_owned(),
                kind: image.kind,
                value_type: image.value_type.to_owned(),
                user_key_type: image.user_key_type.to_owned(),
                version: image.version,
                value_schema: Some(StoredSchema::of(image.value_schema)),
                user_key_schema: image.user_key_schema.map(StoredSchema::of),
                ttl_ms: image.ttl_ms,
                entries: 0,
                raw_bytes: 0,
                key_groups: Vec::new(),
            };
            blocks.current_kg = None;
            match (&detached, streamed) {
                (Some((view, columns)), true) => {
                    let column = *columns.get(i).ok_or(Error::UnknownState {
                        backend: "snapshot",
                        id: u32::try_from(i).unwrap_or(u32::MAX),
                    })?;
                    // The promise is checked: each entry must come after the one before.
                    let (mut last_key, mut last_user_key) = (Vec::new(), Vec::new());
                    let mut first = true;
                    let name = image.name;
                    view.for_each_stored(column, &mut |key, user_key, value| {
                        if !range.contains(key_group_of(key)) {
                            return Ok(());
                        }
                        if !first && (key, user_key) <= (&last_key[..], &last_user_key[..]) {
                            return Err(Error::Backend {
                                backend: "snapshot",
                                message: format!(
                                    "state `{name}`: the detached view yielded an entry out of \
                                     the canonical order it promised"
                                ),
                            });
                        }
                        first = false;
                        last_key.clear();
                        last_key.extend_from_slice(key);
                        last_user_key.clear();
                        last_user_key.extend_from_slice(user_key);
                        let value_len = len32(value.len(), "a value")?;
                        blocks.put(&mut section, key, user_key, value_len, value)?;
                        section.entries += 1;
                        Ok(())
                    })?;
                }
                _ => blocks.write_sorted(image, &mut section)?,
            }
            blocks.flush(&mut section)?;
            summary.entries += section.entries;
            summary.raw_bytes += section.raw_bytes;
            sections.push(section);
        }

        let index = SnapshotIndex {
            operator: self.operator.to_owned(),
            key_type: self.key_type.to_owned(),
            key_schema: Some(StoredSchema::of(self.key_schema)),
            max_parallelism: self.max_parallelism,
            first_key_group: self.range.first(),
            last_key_group: self.range.last(),
            compression,
            incremental: self.incremental,
            states: sections,
        };
        let mut encoded = Vec::new();
        index.encode(&mut encoded);
        let index_offset = out.written;
        out.write_all(path, &encoded)?;
        let mut footer = Vec::with_capacity(24);
        footer.extend_from_slice(&index_offset.to_le_bytes());
        put_u32(&mut footer, len32(encoded.len(), "the index")?);
        put_u32(&mut footer, crc32c::crc32c(&encoded));
        footer.extend_from_slice(&END_MAGIC);
        out.write_all(path, &footer)?;
        out.inner.flush().map_err(|e| Error::io(path, e))?;
        summary.bytes = out.written;
        debug_assert!(summary.bytes >= HEADER_LEN as u64);
        Ok(summary)
    }
}

/// Writes the full snapshot of one operator's states (the key groups in `range`) to `out`:
/// [`capture`] then [`SnapshotImage::write`].
///
/// `path` names the destination in errors. The bytes depend only on the state's contents,
/// never on the backend that holds it.
///
/// # Errors
///
/// A backend failure, an I/O failure on `out`, or an entry too large for the format.
pub fn write_operator<B: Snapshots + ?Sized, W: Write>(
    backend: &B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
    options: SnapshotOptions,
    path: &Path,
    out: W,
) -> Result<SnapshotSummary> {
    capture(backend, operator, columns, range)?.write(options, path, out)
}
/// The block writer of [`SnapshotImage::write`]: encodes sorted entries into blocks of about
/// `options.block_size` bytes, one key group per block, and writes each as it fills.
struct Blocks<'o, W> {
    out: &'o mut Counting<W>,
    path: &'o Path,
    options: SnapshotOptions,
    compression: u8,
    raw: Vec<u8>,
    stored: Vec<u8>,
    block_entries: u32,
    current_kg: Option<u16>,
}

impl<W: Write> Blocks<'_, W> {
    /// Sorts the entries `image` holds, encodes them into `section`'s blocks and empties
    /// `image`, keeping its buffers for the next key group.
    fn write_sorted(&mut self, image: &mut StateImage, section: &mut StateSection) -> Result<()> {
        let arena = &image.arena;
        // Entries are in arena order, so this reads the arena front to back.
        for e in &mut image.entries {
            e.head = head_of(e.key(arena));
        }
        // The key starts with the big-endian key group, so byte order is key-group order; a
        // key's deletion comes before the entries written after it.
        image.entries.sort_unstable_by(|a, b| {
            // Zero-padded heads order as the keys do, up to a tie.
            a.head
                .cmp(&b.head)
                .then_with(|| a.key(arena).cmp(b.key(arena)))
                .then_with(|| (a.value_len != TOMBSTONE_KEY).cmp(&(b.value_len != TOMBSTONE_KEY)))
                .then_with(|| a.user_key(arena).cmp(b.user_key(arena)))
        });
        for e in &image.entries {
            self.put(
                section,
                e.key(arena),
                e.user_key(arena),
                e.value_len,
                e.value(arena),
            )?;
        }
        section.entries += image.entries.len() as u64;
        image.entries.clear();
        image.arena.clear();
        Ok(())
    }

    /// Encodes one entry (in canonical order after the one before) into the block being
    /// filled, starting a new block when it is full or the key group changes. `value_len` is
    /// the value's length or a tombstone marker.
    fn put(
        &mut self,
        section: &mut StateSection,
        key: &[u8],
        user_key: &[u8],
        value_len: u32,
        value: &[u8],
    ) -> Result<()> {
        let kg = key_group_of(key);
        if self.current_kg != Some(kg) || self.raw.len() >= self.options.block_size {
            self.flush(section)?;
            if self.current_kg != Some(kg) {
                section.key_groups.push(KeyGroupIndex {
                    key_group: kg,
                    blocks: Vec::new(),
                });
                self.current_kg = Some(kg);
            }
        }
        let canonical = key.get(2..).unwrap_or_default();
        put_u32(&mut self.raw, len32(canonical.len(), "a key")?);
        self.raw.extend_from_slice(canonical);
        put_u32(&mut self.raw, len32(user_key.len(), "a user key")?);
        self.raw.extend_from_slice(user_key);
        put_u32(&mut self.raw, value_len);
        self.raw.extend_from_slice(value);
        self.block_entries += 1;
        Ok(())
    }

    /// Compresses and writes the block being filled, if any, into the current key group.
    fn flush(&mut self, section: &mut StateSection) -> Result<()> {
        if self.raw.is_empty() || self.current_kg.is_none() {
            return Ok(());
        }
        let raw = &self.raw;
        let bytes: &[u8] = if self.compression == COMPRESSION_LZ4 {
            self.stored.clear();
            self.stored
                .resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
            let n = lz4_flex::block::compress_into(raw, &mut self.stored).map_err(|e| {
                Error::Backend {
                    backend: "snapshot",
                    message: format!("lz4 compression failed: {e}"),
                }
            })?;
            &self.stored[..n]
        } else {
            raw
        };
        let block = BlockRef {
            offset: self.out.written,
            stored_len: len32(bytes.len(), "a block")?,
            raw_len: len32(raw.len(), "a block")?,
            entries: self.block_entries,
            crc: crc32c::crc32c(bytes),
        };
        self.out.write_all(self.path, bytes)?;
        section.raw_bytes += raw.len() as u64;
        if let Some(kg) = section.key_groups.last_mut() {
            kg.blocks.push(block);
        }
        self.raw.clear();
        self.block_entries = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn heads_never_contradict_the_byte_order_of_keys(
            a in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()], 0..24),
            b in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()], 0..24),
        ) {
            // The sort compares heads first and keys only on a tie, so a head order must never
            // disagree with the key order (keys that are prefixes of each other included).
            let (ha, hb) = (head_of(&a), head_of(&b));
            if ha != hb {
                prop_assert_eq!(ha.cmp(&hb), a.cmp(&b));
            }
        }
    }
}
