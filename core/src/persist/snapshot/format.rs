//! Constants and the index model of snapshot format v1, with its encoder and bounds-checked
//! decoder.

use std::path::Path;

use crate::model::descriptor::StateKind;
use crate::model::error::{Corruption, Error, Result};
use crate::model::schema::{SchemaDesc, StoredSchema};

/// Magic bytes at the start of a snapshot file.
pub const MAGIC: [u8; 8] = *b"\x89SWSNAP\n";
/// Magic bytes at the end of a snapshot file.
pub const END_MAGIC: [u8; 8] = *b"SWSNEND\n";
/// The snapshot format version this build writes. Version 2 added the schemas (key, value and
/// user key schema with their fingerprints, and each state's version); version 1 is still read.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Blocks stored as they are.
pub const COMPRESSION_NONE: u8 = 0;
/// Blocks compressed with LZ4 (block format, `lz4_flex`).
pub const COMPRESSION_LZ4: u8 = 1;
/// Header byte 13: a full snapshot (the whole state of its key groups).
pub const KIND_FULL: u8 = 0;
/// Header byte 13: an incremental snapshot (changes on top of earlier snapshots; its records
/// may be deletions).
pub const KIND_INCREMENTAL: u8 = 1;
/// A record's value length that marks the deletion of one entry (incremental snapshots only).
pub const TOMBSTONE_ENTRY: u32 = u32::MAX;
/// A record's value length that marks the deletion of every entry of a key (incremental
/// snapshots only; its user key is empty).
pub const TOMBSTONE_KEY: u32 = u32::MAX - 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 20;
/// Footer length in bytes.
pub const FOOTER_LEN: usize = 24;
/// The largest decompressed block a reader accepts (a single larger entry is refused).
pub const MAX_BLOCK_RAW: u32 = 1 << 30;

/// The file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub format_version: u16,
    pub rkyv_format: u8,
    pub key_hash_version: u8,
    pub compression: u8,
    pub kind: u8,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(&MAGIC);
        h[8..10].copy_from_slice(&self.format_version.to_le_bytes());
        h[10] = self.rkyv_format;
        h[11] = self.key_hash_version;
        h[12] = self.compression;
        h[13] = self.kind;
        let crc = crc32c::crc32c(&h[..16]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// One block of records in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// Offset of the block's bytes in the file.
    pub offset: u64,
    /// Length on disk.
    pub stored_len: u32,
    /// Length after decompression.
    pub raw_len: u32,
    /// Records in the block.
    pub entries: u32,
    /// crc32c of the stored bytes.
    pub crc: u32,
}

/// The blocks of one key group of one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGroupIndex {
    /// The key group.
    pub key_group: u16,
    /// Its blocks, in key order.
    pub blocks: Vec<BlockRef>,
}

/// One state's section: its descriptor as written, and its key groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSection {
    /// The state's name.
    pub name: String,
    /// Its kind.
    pub kind: StateKind,
    /// Value type as declared when written.
    pub value_type: String,
    /// Map user key type as declared when written (empty for other kinds).
    pub user_key_type: String,
    /// The value schema's version (0 in format 1 snapshots, which did not record it).
    pub version: u32,
    /// The value schema when written (`None` in format 1 snapshots).
    pub value_schema: Option<StoredSchema>,
    /// The user key schema of a map or broadcast state.
    pub user_key_schema: Option<StoredSchema>,
    /// Time-to-live in milliseconds when written; non-zero exactly when the section's values
    /// carry TTL stamps (see [`ttl`](crate::data::ttl)), 0 when they do not.
    pub ttl_ms: u64,
    /// Entries in the section.
    pub entries: u64,
    /// Uncompressed bytes of the section's records.
    pub raw_bytes: u64,
    /// Key groups that have entries, ascending.
    pub key_groups: Vec<KeyGroupIndex>,
}

/// The index at the end of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotIndex {
    /// The operator's name.
    pub operator: String,
    /// The key type as declared when written.
    pub key_type: String,
    /// The key schema when written (`None` in format 1 snapshots).
    pub key_schema: Option<StoredSchema>,
    /// The operator's maximum parallelism (number of key groups).
    pub max_parallelism: u16,
    /// First key group covered by the snapshot.
    pub first_key_group: u16,
    /// Last key group covered (inclusive).
    pub last_key_group: u16,
    /// Block compression ([`COMPRESSION_NONE`] or [`COMPRESSION_LZ4`]).
    pub compression: u8,
    /// Whether the snapshot is incremental (header byte 13): its records are changes, and may
    /// be deletions, to apply on top of the snapshots it was taken after.
    pub incremental: bool,
    /// The states.
    pub states: Vec<StateSection>,
}

impl SnapshotIndex {
    /// Total entries over all states.
    #[must_use]
    pub fn entries(&self) -> u64 {
        self.states.iter().map(|s| s.entries).sum()
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.operator);
        put_str(out, &self.key_type);
        put_schema(out, self.key_schema.as_ref());
        out.extend_from_slice(&self.max_parallelism.to_le_bytes());
        out.extend_from_slice(&self.first_key_group.to_le_bytes());
        out.extend_from_slice(&self.last_key_group.to_le_bytes());
        put_u32(out, len_u32(self.states.len()));
        for s in &self.states {
            put_str(out, &s.name);
            out.push(s.kind.tag());
            put_str(out, &s.value_type);
            put_str(out, &s.user_key_type);
            put_u32(out, s.version);
            put_schema(out, s.value_schema.as_ref());
            put_schema(out, s.user_key_schema.as_ref());
            out.extend_from_slice(&s.ttl_ms.to_le_bytes());
            out.extend_from_slice(&s.entries.to_le_bytes());
            out.extend_from_slice(&s.raw_bytes.to_le_bytes());
            put_u32(out, len_u32(s.key_groups.len()));
            for kg in &s.key_groups {
                out.extend_from_slice(&kg.key_group.to_le_bytes());
                put_u32(out, len_u32(kg.blocks.len()));
                for b in &kg.blocks {
                    out.extend_from_slice(&b.offset.to_le_bytes());
                    put_u32(out, b.stored_len);
                    put_u32(out, b.raw_len);
                    put_u32(out, b.entries);
                    put_u32(out, b.crc);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decode(
        path: &Path,
        base: u64,
        bytes: &[u8],
        format_version: u16,
        compression: u8,
        incremental: bool,
        blocks_end: u64,
    ) -> Result<Self> {
        let schemas = format_version >= 2;
        let mut r = Cursor {
            path,
            base,
            bytes,
            pos: 0,
        };
        let operator = r.str()?;
        let key_type = r.str()?;
        let key_schema = if schemas { r.schema()? } else { None };
        let max_parallelism = r.u16()?;
        let first_key_group = r.u16()?;
        let last_key_group = r.u16()?;
        if max_parallelism == 0
            || first_key_group > last_key_group
            || last_key_group >= max_parallelism
        {
            return Err(r.malformed(format!(
                "key-group range {first_key_group}..={last_key_group} with max parallelism {max_parallelism}"
            )));
        }
        let n_states = r.count(4)?;
        let mut states = Vec::with_capacity(n_states);
        for _ in 0..n_states {
            let name = r.str()?;
            let tag = r.u8()?;
            let kind = StateKind::from_tag(tag)
                .ok_or_else(|| r.malformed(format!("unknown state kind {tag}")))?;
            let value_type = r.str()?;
            let user_key_type = r.str()?;
            let (version, value_schema, user_key_schema) = if schemas {
                (r.u32()?, r.schema()?, r.schema()?)
            } else {
                (0, None, None)
            };
            let ttl_ms = r.u64()?;
            let entries = r.u64()?;
            let raw_bytes = r.u64()?;
            let n_kgs = r.count(6)?;
            let mut key_groups = Vec::with_capacity(n_kgs);
            let mut prev: Option<u16> = None;
            let mut counted = 0u64;
            for _ in 0..n_kgs {
                let key_group = r.u16()?;
                if prev.is_some_and(|p| p >= key_group)
                    || !(first_key_group..=last_key_group).contains(&key_group)
                {
                    return Err(r.malformed(format!(
                        "key group {key_group} out of order or outside the snapshot's range"
                    )));
                }
                prev = Some(key_group);
                let n_blocks = r.count(24)?;
                let mut blocks = Vec::with_capacity(n_blocks);
                for _ in 0..n_blocks {
                    let b = BlockRef {
                        offset: r.u64()?,
                        stored_len: r.u32()?,
                        raw_len: r.u32()?,
                        entries: r.u32()?,
                        crc: r.u32()?,
                    };
                    check_block(&r, &b, compression, blocks_end)?;
                    counted += u64::from(b.entries);
                    blocks.push(b);
                }
                key_groups.push(KeyGroupIndex { key_group, blocks });
            }
            if counted != entries {
                return Err(r.malformed(format!(
                    "state `{name}` declares {entries} entries, its blocks hold {counted}"
                )));
            }
            states.push(StateSection {
                name,
                kind,
                value_type,
                user_key_type,
                version,
                value_schema,
                user_key_schema,
                ttl_ms,
                entries,
                raw_bytes,
                key_groups,
            });
        }
        if r.pos != bytes.len() {
            return Err(r.malformed(format!(
                "{} bytes after the last state",
                bytes.len() - r.pos
            )));
        }
        Ok(Self {
            operator,
            key_type,
            key_schema,
            max_parallelism,
            first_key_group,
            last_key_group,
            compression,
            incremental,
            states,
        })
    }
}

fn check_block(r: &Cursor<'_>, b: &BlockRef, compression: u8, blocks_end: u64) -> Result<()> {
    let end = b.offset.checked_add(u64::from(b.stored_len));
    if b.offset < HEADER_LEN as u64 || end.is_none_or(|e| e > blocks_end) {
        return Err(r.malformed(format!(
            "block at {} of {} bytes lies outside the data area",
            b.offset, b.stored_len
        )));
    }
    // LZ4 expands at most ~255x; a raw length beyond that cannot come from the stored bytes, so
    // refusing it bounds every allocation by the file's size.
    let plausible = match compression {
        COMPRESSION_NONE => b.raw_len == b.stored_len,
        _ => u64::from(b.raw_len) <= u64::from(b.stored_len) * 255 + 16,
    };
    if !plausible || b.raw_len > MAX_BLOCK_RAW || u64::from(b.entries) * 12 > u64::from(b.raw_len) {
        return Err(r.malformed(format!(
            "block at {} claims {} raw bytes and {} entries from {} stored bytes",
            b.offset, b.raw_len, b.entries, b.stored_len
        )));
    }
    Ok(())
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, len_u32(s.len()));
    out.extend_from_slice(s.as_bytes());
}

/// A schema: its fingerprint and its description as JSON, or an empty description for none.
fn put_schema(out: &mut Vec<u8>, schema: Option<&StoredSchema>) {
    match schema {
        Some(s) => {
            out.extend_from_slice(&s.fingerprint.to_le_bytes());
            put_str(out, &s.desc.to_json());
        }
        None => {
            out.extend_from_slice(&0u64.to_le_bytes());
            put_str(out, "");
        }
    }
}

/// A bounds-checked reader over untrusted bytes; `base` is their offset in the file.
pub(crate) struct Cursor<'a> {
    pub path: &'a Path,
    pub base: u64,
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub fn malformed(&self, detail: String) -> Error {
        Error::corrupt(
            self.path,
            self.offset(),
            Corruption::Malformed {
                section: "index",
                detail,
            },
        )
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let rest = &self.bytes[self.pos..];
        match rest.get(..n) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Error::corrupt(
                self.path,
                self.offset(),
                Corruption::Truncated {
                    needed: n as u64,
                    available: rest.len() as u64,
                },
            )),
        }
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A count of items at least `min_item` bytes each; refuses counts the rest cannot hold.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        let rest = self.bytes.len() - self.pos;
        if n.saturating_mul(min_item) > rest {
            return Err(self.malformed(format!(
                "count {n} cannot fit in the {rest} bytes that remain"
            )));
        }
        Ok(n)
    }
    pub fn schema(&mut self) -> Result<Option<StoredSchema>> {
        let fingerprint = self.u64()?;
        let at = self.offset();
        let json = self.str()?;
        if json.is_empty() {
            return Ok(None);
        }
        let desc = SchemaDesc::from_json(&json).map_err(|e| {
            Error::corrupt(
                self.path,
                at,
                Corruption::Malformed {
                    section: "index",
                    detail: format!("a schema description is not valid: {e}"),
                },
            )
        })?;
        Ok(Some(StoredSchema { fingerprint, desc }))
    }

    pub fn str(&mut self) -> Result<String> {
        let n = self.u32()? as usize;
        let at = self.offset();
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| {
            Error::corrupt(
                self.path,
                at,
                Corruption::Malformed {
                    section: "index",
                    detail: "a name is not UTF-8".into(),
                },
            )
        })
    }
}
