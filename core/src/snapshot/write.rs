//! Writing snapshot format v1.

use std::io::Write;
use std::path::Path;

use super::format::{
    BlockRef, COMPRESSION_LZ4, COMPRESSION_NONE, END_MAGIC, FORMAT_VERSION, HEADER_LEN, Header,
    KeyGroupIndex, SnapshotIndex, StateSection, put_u32,
};
use crate::backend::{StateBackend, StateId};
use crate::codec::RKYV_FORMAT;
use crate::descriptor::OperatorDescriptor;
use crate::error::{Error, Result};
use crate::keygroup::{KEY_HASH_VERSION, KeyGroupRange};

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
    /// Entries written over all states.
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

/// One entry copied out of the backend: offsets into a shared arena.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    key_len: u32,
    user_key_len: u32,
    value_len: u32,
}

impl Entry {
    fn key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.start..self.start + self.key_len as usize]
    }
    fn user_key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let s = self.start + self.key_len as usize;
        &arena[s..s + self.user_key_len as usize]
    }
    fn value<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        let s = self.start + self.key_len as usize + self.user_key_len as usize;
        &arena[s..s + self.value_len as usize]
    }
}

fn len32(n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Backend {
        backend: "snapshot",
        message: format!("{what} of {n} bytes exceeds the format's 4 GiB limit"),
    })
}

/// Writes the snapshot of one operator's states (the key groups in `range`) to `out`.
///
/// `path` names the destination in errors. The bytes depend only on the state's contents,
/// never on the backend that holds it.
///
/// # Errors
///
/// A backend failure, an I/O failure on `out`, or an entry too large for the format.
pub fn write_operator<B: StateBackend + ?Sized, W: Write>(
    backend: &B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
    options: SnapshotOptions,
    path: &Path,
    out: W,
) -> Result<SnapshotSummary> {
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
    };
    out.write_all(path, &header.encode())?;

    let mut sections = Vec::with_capacity(operator.states.len());
    let mut summary = SnapshotSummary::default();
    let mut arena = Vec::new();
    let mut entries = Vec::new();
    let mut raw = Vec::new();
    let mut stored = Vec::new();
    for (state, &column) in operator.states.iter().zip(columns) {
        arena.clear();
        entries.clear();
        backend.for_each_stored(column, &mut |key, user_key, value| {
            let kg = key
                .get(..2)
                .map_or(u16::MAX, |p| u16::from_be_bytes([p[0], p[1]]));
            if !range.contains(kg) {
                return Ok(());
            }
            entries.push(Entry {
                start: arena.len(),
                key_len: len32(key.len(), "a key")?,
                user_key_len: len32(user_key.len(), "a user key")?,
                value_len: len32(value.len(), "a value")?,
            });
            arena.extend_from_slice(key);
            arena.extend_from_slice(user_key);
            arena.extend_from_slice(value);
            Ok(())
        })?;
        // The key starts with the big-endian key group, so byte order is key-group order.
        entries.sort_unstable_by(|a, b| {
            a.key(&arena)
                .cmp(b.key(&arena))
                .then_with(|| a.user_key(&arena).cmp(b.user_key(&arena)))
        });

        let mut section = StateSection {
            name: state.name.to_owned(),
            kind: state.kind,
            value_type: state.value_type.to_owned(),
            user_key_type: state.user_key_type.unwrap_or_default().to_owned(),
            // Non-zero exactly when the values carry TTL stamps.
            ttl_ms: if backend.stamps_ttl(column) {
                state.ttl.map_or(1, |t| t.ttl_millis().unsigned_abs())
            } else {
                0
            },
            entries: entries.len() as u64,
            raw_bytes: 0,
            key_groups: Vec::new(),
        };
        let mut block_entries = 0u32;
        let mut current_kg: Option<u16> = None;
        raw.clear();
        for e in &entries {
            let key = e.key(&arena);
            let kg = u16::from_be_bytes([key[0], key[1]]);
            if current_kg != Some(kg) || raw.len() >= options.block_size {
                flush(
                    &mut out,
                    path,
                    &mut raw,
                    &mut stored,
                    &mut block_entries,
                    compression,
                    current_kg,
                    &mut section,
                )?;
                if current_kg != Some(kg) {
                    section.key_groups.push(KeyGroupIndex {
                        key_group: kg,
                        blocks: Vec::new(),
                    });
                    current_kg = Some(kg);
                }
            }
            let canonical = &key[2..];
            put_u32(&mut raw, len32(canonical.len(), "a key")?);
            raw.extend_from_slice(canonical);
            put_u32(&mut raw, e.user_key_len);
            raw.extend_from_slice(e.user_key(&arena));
            put_u32(&mut raw, e.value_len);
            raw.extend_from_slice(e.value(&arena));
            block_entries += 1;
        }
        flush(
            &mut out,
            path,
            &mut raw,
            &mut stored,
            &mut block_entries,
            compression,
            current_kg,
            &mut section,
        )?;
        summary.entries += section.entries;
        summary.raw_bytes += section.raw_bytes;
        sections.push(section);
    }

    let index = SnapshotIndex {
        operator: operator.name.to_owned(),
        key_type: operator.key_type.to_owned(),
        max_parallelism: operator.max_parallelism,
        first_key_group: range.first(),
        last_key_group: range.last(),
        compression,
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

#[allow(clippy::too_many_arguments)]
fn flush<W: Write>(
    out: &mut Counting<W>,
    path: &Path,
    raw: &mut Vec<u8>,
    stored: &mut Vec<u8>,
    block_entries: &mut u32,
    compression: u8,
    key_group: Option<u16>,
    section: &mut StateSection,
) -> Result<()> {
    if raw.is_empty() || key_group.is_none() {
        return Ok(());
    }
    let bytes: &[u8] = if compression == COMPRESSION_LZ4 {
        stored.clear();
        stored.resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
        let n = lz4_flex::block::compress_into(raw, stored).map_err(|e| Error::Backend {
            backend: "snapshot",
            message: format!("lz4 compression failed: {e}"),
        })?;
        &stored[..n]
    } else {
        raw
    };
    let block = BlockRef {
        offset: out.written,
        stored_len: len32(bytes.len(), "a block")?,
        raw_len: len32(raw.len(), "a block")?,
        entries: *block_entries,
        crc: crc32c::crc32c(bytes),
    };
    out.write_all(path, bytes)?;
    section.raw_bytes += raw.len() as u64;
    if let Some(kg) = section.key_groups.last_mut() {
        kg.blocks.push(block);
    }
    raw.clear();
    *block_entries = 0;
    Ok(())
}
