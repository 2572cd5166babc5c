//! Reading snapshot format v1: every length checked, every checksum verified, every entry
//! validated against the operator's declared types before it reaches a backend.

use std::path::{Path, PathBuf};

use super::format::{
    BlockRef, COMPRESSION_LZ4, COMPRESSION_NONE, Cursor, END_MAGIC, FOOTER_LEN, FORMAT_VERSION,
    HEADER_LEN, KIND_FULL, KIND_INCREMENTAL, MAGIC, OLDEST_FORMAT_VERSION, SnapshotIndex,
    StateSection, TOMBSTONE_ENTRY, TOMBSTONE_KEY,
};
use crate::access::operator_state::OperatorEntries;
use crate::data::backend::{Change, Snapshots, StateId};
use crate::data::ttl;
use crate::model::codec::RKYV_FORMAT;
use crate::model::descriptor::{OperatorDescriptor, StateDescriptor, StateKind};
use crate::model::error::{Corruption, Error, Result};
use crate::model::keygroup::{KEY_HASH_VERSION, KeyGroupRange, key_group};
use crate::model::schema::{Reading, SchemaReport, StoredState};
use crate::persist::store::CheckpointStore;

/// The most bytes of consecutive blocks one read from a remote store fetches.
const RUN_BYTES: u64 = 8 << 20;

/// A visitor over snapshot records: `(key group, canonical key, user key, value)`.
pub type RecordVisitor<'v> = dyn FnMut(u16, &[u8], &[u8], &[u8]) -> Result<()> + 'v;

/// A visitor over snapshot records that may be deletions (incremental snapshots):
/// `(key group, canonical key, user key, change)`.
pub type ChangeRecordVisitor<'v> = dyn FnMut(u16, &[u8], &[u8], Change<'_>) -> Result<()> + 'v;

/// A parsed, checksum-verified snapshot held in memory.
///
/// A reader made by [`parse`](SnapshotReader::parse) reads the bytes given; one made by
/// [`open`](SnapshotReader::open) reads the file block by block as a restore asks for them, so
/// memory holds the index and one block, whatever the size of the snapshot.
#[derive(Debug)]
pub struct SnapshotReader<'a> {
    path: PathBuf,
    source: Source<'a>,
    len: u64,
    index: SnapshotIndex,
}

/// Where a [`SnapshotReader`] reads from.
#[derive(Debug)]
enum Source<'a> {
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
    File(std::sync::Mutex<std::fs::File>),
    Store(std::sync::Arc<dyn CheckpointStore>, String),
}

impl Source<'_> {
    /// `len` bytes at `offset`, which the caller checked lie within the source.
    fn read(&self, path: &Path, offset: u64, len: usize) -> Result<std::borrow::Cow<'_, [u8]>> {
        match self {
            Source::Bytes(bytes) => slice(path, bytes, offset, len),
            Source::Owned(bytes) => slice(path, bytes, offset, len),
            Source::File(file) => {
                use std::io::{Read, Seek, SeekFrom};
                let mut file = file.lock().map_err(|_| Error::Backend {
                    backend: "snapshot",
                    message: format!(
                        "a read of `{}` failed while holding the file",
                        path.display()
                    ),
                })?;
                let mut buf = vec![0u8; len];
                file.seek(SeekFrom::Start(offset))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|e| Error::io(path, e))?;
                Ok(std::borrow::Cow::Owned(buf))
            }
            Source::Store(store, name) => store
                .get_range(name, offset..offset + len as u64)
                .map(std::borrow::Cow::Owned),
        }
    }
}

/// `len` bytes at `offset` of `bytes`.
fn slice<'b>(
    path: &Path,
    bytes: &'b [u8],
    offset: u64,
    len: usize,
) -> Result<std::borrow::Cow<'b, [u8]>> {
    usize::try_from(offset)
        .ok()
        .and_then(|start| bytes.get(start..start.checked_add(len)?))
        .map(std::borrow::Cow::Borrowed)
        .ok_or_else(|| corrupt(path, offset, truncated(len as u64, bytes.len() as u64)))
}

fn corrupt(path: &Path, offset: u64, kind: Corruption) -> Error {
    Error::corrupt(path, offset, kind)
}

impl<'a> SnapshotReader<'a> {
    /// Parses and verifies the header, footer and index of the snapshot in `bytes`; `path`
    /// names it in errors.
    ///
    /// # Errors
    ///
    /// [`Error::Foreign`] for a file that is not a snapshot, [`Error::UnsupportedVersion`] for
    /// a newer format, [`Error::Corrupt`] for a truncated or damaged one.
    pub fn parse(path: impl Into<PathBuf>, bytes: &'a [u8]) -> Result<Self> {
        Self::from_source(path.into(), Source::Bytes(bytes), bytes.len() as u64)
    }

    /// Like [`parse`](Self::parse), owning the bytes (a snapshot downloaded whole).
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse).
    pub fn from_vec(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<SnapshotReader<'static>> {
        let len = bytes.len() as u64;
        SnapshotReader::from_source(path.into(), Source::Owned(bytes), len)
    }

    /// Reads and verifies the header, footer and index of the snapshot file at `path`, which
    /// is kept open: blocks are read from it as they are asked for.
    ///
    /// # Errors
    ///
    /// As [`parse`](Self::parse); an I/O failure.
    pub fn open(path: impl Into<PathBuf>) -> Result<SnapshotReader<'static>> {
        let path = path.into();
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_file(path, file)
    }

    /// Like [`open`](Self::open), with the file already open.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn from_file(
        path: impl Into<PathBuf>,
        file: std::fs::File,
    ) -> Result<SnapshotReader<'static>> {
        let path = path.into();
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        SnapshotReader::from_source(path, Source::File(std::sync::Mutex::new(file)), len)
    }

    /// Like [`open`](Self::open), reading the object `name` of a checkpoint store with ranged
    /// reads: the header, the index, then each block as a restore asks for it.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); a missing object is [`Error::Io`].
    pub fn from_store(
        store: std::sync::Arc<dyn CheckpointStore>,
        name: &str,
    ) -> Result<SnapshotReader<'static>> {
        let path = store.locate(name);
        let len = store.head(name)?.ok_or_else(|| {
            Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such object"),
            )
        })?;
        SnapshotReader::from_source(path, Source::Store(store, name.to_owned()), len)
    }

    fn from_source(path: PathBuf, source: Source<'a>, len: u64) -> Result<Self> {
        let magic = if len >= MAGIC.len() as u64 {
            Some(source.read(&path, 0, MAGIC.len())?)
        } else {
            None
        };
        if magic.is_none_or(|m| *m != MAGIC) {
            return Err(Error::Foreign {
                path,
                expected: "snapshot",
            });
        }
        if len < HEADER_LEN as u64 {
            return Err(corrupt(&path, len, truncated(HEADER_LEN as u64, len)));
        }
        let header = source.read(&path, 0, HEADER_LEN)?;
        let stored = u32::from_le_bytes([header[16], header[17], header[18], header[19]]);
        let computed = crc32c::crc32c(&header[..16]);
        if stored != computed {
            return Err(corrupt(
                &path,
                16,
                Corruption::ChecksumMismatch {
                    section: "header",
                    stored,
                    computed,
                },
            ));
        }
        let version = u16::from_le_bytes([header[8], header[9]]);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            check_version(
                &path,
                "format",
                u32::from(version),
                u32::from(FORMAT_VERSION),
            )?;
        }
        check_version(
            &path,
            "rkyv format",
            u32::from(header[10]),
            u32::from(RKYV_FORMAT),
        )?;
        check_version(
            &path,
            "key hash",
            u32::from(header[11]),
            u32::from(KEY_HASH_VERSION),
        )?;
        let compression = header[12];
        if compression != COMPRESSION_NONE && compression != COMPRESSION_LZ4 {
            return Err(corrupt(
                &path,
                12,
                Corruption::Malformed {
                    section: "header",
                    detail: format!("unknown compression {compression}"),
                },
            ));
        }
        let kind = header[13];
        if kind != KIND_FULL && kind != KIND_INCREMENTAL {
            return Err(corrupt(
                &path,
                13,
                Corruption::Malformed {
                    section: "header",
                    detail: format!("unknown snapshot kind {kind}"),
                },
            ));
        }
        if len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(corrupt(
                &path,
                len,
                truncated((HEADER_LEN + FOOTER_LEN) as u64, len),
            ));
        }
        let footer_at = len - FOOTER_LEN as u64;
        let footer = source.read(&path, footer_at, FOOTER_LEN)?;
        if footer[16..24] != END_MAGIC {
            // A file cut short loses its footer first; say so rather than "malformed".
            return Err(corrupt(
                &path,
                footer_at + 16,
                Corruption::Truncated {
                    needed: END_MAGIC.len() as u64,
                    available: 0,
                },
            ));
        }
        let mut f = [0u8; 8];
        f.copy_from_slice(&footer[..8]);
        let index_offset = u64::from_le_bytes(f);
        let index_len = u64::from(u32::from_le_bytes([
            footer[8], footer[9], footer[10], footer[11],
        ]));
        let index_crc = u32::from_le_bytes([footer[12], footer[13], footer[14], footer[15]]);
        let index_end = index_offset.checked_add(index_len);
        if index_offset < HEADER_LEN as u64 || index_end != Some(footer_at) {
            return Err(corrupt(
                &path,
                footer_at,
                Corruption::Malformed {
                    section: "footer",
                    detail: format!(
                        "index at {index_offset} of {index_len} bytes does not end at the footer ({footer_at})"
                    ),
                },
            ));
        }
        // In range: checked just above.
        let index_bytes = source.read(&path, index_offset, index_len as usize)?;
        let computed = crc32c::crc32c(&index_bytes);
        if computed != index_crc {
            return Err(corrupt(
                &path,
                index_offset,
                Corruption::ChecksumMismatch {
                    section: "index",
                    stored: index_crc,
                    computed,
                },
            ));
        }
        let index = SnapshotIndex::decode(
            &path,
            index_offset,
            &index_bytes,
            version,
            compression,
            kind == KIND_INCREMENTAL,
            index_offset,
        )?;
        drop((header, footer, index_bytes));
        Ok(Self {
            path,
            source,
            len,
            index,
        })
    }

    /// The snapshot's index: operator, states and their key groups.
    #[must_use]
    pub fn index(&self) -> &SnapshotIndex {
        &self.index
    }

    /// The file this snapshot came from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The decompressed, checksum-verified records of one block.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the block is damaged.
    pub fn read_block(&self, block: &BlockRef) -> Result<Vec<u8>> {
        // The index decoder checked that the block lies inside the data area.
        if block
            .offset
            .checked_add(u64::from(block.stored_len))
            .is_none_or(|end| end > self.len)
        {
            return Err(corrupt(
                &self.path,
                block.offset,
                truncated(u64::from(block.stored_len), self.len),
            ));
        }
        let stored = self
            .source
            .read(&self.path, block.offset, block.stored_len as usize)?;
        self.decode_block(block, &stored)
    }

    /// Checks and decompresses the `stored` bytes of `block`.
    fn decode_block(&self, block: &BlockRef, stored: &[u8]) -> Result<Vec<u8>> {
        let computed = crc32c::crc32c(stored);
        if computed != block.crc {
            return Err(corrupt(
                &self.path,
                block.offset,
                Corruption::ChecksumMismatch {
                    section: "block",
                    stored: block.crc,
                    computed,
                },
            ));
        }
        if self.index.compression == COMPRESSION_NONE {
            return Ok(stored.to_vec());
        }
        let mut raw = vec![0u8; block.raw_len as usize];
        match lz4_flex::block::decompress_into(stored, &mut raw) {
            Ok(n) if n == raw.len() => Ok(raw),
            Ok(n) => Err(self.block_malformed(
                block,
                format!("decompressed to {n} bytes, expected {}", raw.len()),
            )),
            Err(e) => Err(self.block_malformed(block, format!("lz4: {e}"))),
        }
    }

    /// The stored bytes of the first of `blocks` and of those right after it in the file, up
    /// to [`RUN_BYTES`] in all, in one read.
    fn fetch_run(&self, blocks: &[(u16, &BlockRef)]) -> Result<Vec<u8>> {
        let Some((_, first)) = blocks.first() else {
            return Ok(Vec::new());
        };
        let start = first.offset;
        let mut end = start.saturating_add(u64::from(first.stored_len));
        for (_, block) in &blocks[1..] {
            let next = end.saturating_add(u64::from(block.stored_len));
            if block.offset != end || next - start > RUN_BYTES {
                break;
            }
            end = next;
        }
        if end > self.len {
            return Err(corrupt(&self.path, start, truncated(end - start, self.len)));
        }
        let len = usize::try_from(end - start)
            .map_err(|_| corrupt(&self.path, start, truncated(end - start, self.len)))?;
        Ok(self.source.read(&self.path, start, len)?.into_owned())
    }

    fn block_malformed(&self, block: &BlockRef, detail: String) -> Error {
        corrupt(
            &self.path,
            block.offset,
            Corruption::Malformed {
                section: "block",
                detail,
            },
        )
    }

    /// Calls `visit(key_group, canonical key, user key, value)` for every record of `state` in
    /// the key groups of `range`, reading only those groups' blocks.
    ///
    /// # Errors
    ///
    /// A damaged block, a deletion in the records (use [`for_each_change`](Self::for_each_change)
    /// for incremental snapshots), or the visitor's error.
    pub fn for_each_record(
        &self,
        state: &StateSection,
        range: KeyGroupRange,
        visit: &mut RecordVisitor<'_>,
    ) -> Result<()> {
        self.for_each_change(
            state,
            range,
            &mut |kg, key, user_key, change| match change {
                Change::Put(value) => visit(kg, key, user_key, value),
                Change::Delete | Change::DeleteKey => Err(corrupt(
                    &self.path,
                    0,
                    Corruption::Malformed {
                        section: "block",
                        detail: "a deletion in a full snapshot".into(),
                    },
                )),
            },
        )
    }

    /// Calls `visit(key_group, canonical key, user key, change)` for every record of `state`
    /// in the key groups of `range`, in the order written (for each key, a deletion of the
    /// whole key before the entries written after it). A full snapshot holds only
    /// [`Change::Put`]s.
    ///
    /// # Errors
    ///
    /// A damaged block, or the visitor's error.
    pub fn for_each_change(
        &self,
        state: &StateSection,
        range: KeyGroupRange,
        visit: &mut ChangeRecordVisitor<'_>,
    ) -> Result<()> {
        let blocks: Vec<(u16, &BlockRef)> = state
            .key_groups
            .iter()
            .filter(|kg| range.contains(kg.key_group))
            .flat_map(|kg| kg.blocks.iter().map(|b| (kg.key_group, b)))
            .collect();
        // From a remote store, blocks that follow one another in the file are fetched
        // together (up to 8 MiB a request): a restore of a key-group range makes a few
        // requests, not one a block.
        let mut run: Option<(u64, Vec<u8>)> = None;
        for (i, &(key_group, block)) in blocks.iter().enumerate() {
            let raw = self.read_block_in_run(&blocks[i..], &mut run)?;
            let mut c = Cursor {
                path: &self.path,
                base: block.offset,
                bytes: &raw,
                pos: 0,
            };
            let mut seen = 0u32;
            while c.pos < raw.len() {
                let n = c.u32()? as usize;
                let key = c.take(n)?;
                let n = c.u32()? as usize;
                let user_key = c.take(n)?;
                let at = c.offset();
                let n = c.u32()?;
                let change = match n {
                    TOMBSTONE_ENTRY | TOMBSTONE_KEY if !self.index.incremental => {
                        return Err(self.block_malformed(
                            block,
                            format!("a deletion at {at} in a full snapshot"),
                        ));
                    }
                    TOMBSTONE_ENTRY => Change::Delete,
                    TOMBSTONE_KEY if user_key.is_empty() => Change::DeleteKey,
                    TOMBSTONE_KEY => {
                        return Err(self.block_malformed(
                            block,
                            format!("a key deletion at {at} with a user key"),
                        ));
                    }
                    n => Change::Put(c.take(n as usize)?),
                };
                seen += 1;
                visit(key_group, key, user_key, change)?;
            }
            if seen != block.entries {
                return Err(self.block_malformed(
                    block,
                    format!("holds {seen} records, the index says {}", block.entries),
                ));
            }
        }
        Ok(())
    }

    /// The records of the first of `blocks`. From a remote store they come out of `run`, the
    /// stored bytes of consecutive blocks, fetched again from this block on when `run` does
    /// not hold it; from a file or memory, the block is read by itself.
    fn read_block_in_run(
        &self,
        blocks: &[(u16, &BlockRef)],
        run: &mut Option<(u64, Vec<u8>)>,
    ) -> Result<Vec<u8>> {
        let Some(&(_, block)) = blocks.first() else {
            return Ok(Vec::new());
        };
        if !matches!(self.source, Source::Store(..)) {
            return self.read_block(block);
        }
        let len = u64::from(block.stored_len);
        let holds = |(start, bytes): &(u64, Vec<u8>)| {
            block.offset >= *start && block.offset + len <= *start + bytes.len() as u64
        };
        if !run.as_ref().is_some_and(holds) {
            *run = Some((block.offset, self.fetch_run(blocks)?));
        }
        let stored = run
            .as_ref()
            .and_then(|(start, bytes)| {
                let at = usize::try_from(block.offset - start).ok()?;
                bytes.get(at..at.checked_add(block.stored_len as usize)?)
            })
            .ok_or_else(|| corrupt(&self.path, block.offset, truncated(len, self.len)))?;
        self.decode_block(block, stored)
    }
}

fn truncated(needed: u64, available: u64) -> Corruption {
    Corruption::Truncated { needed, available }
}

fn check_version(path: &Path, what: &'static str, found: u32, supported: u32) -> Result<()> {
    if found == supported {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion {
            path: path.to_owned(),
            what,
            found,
            supported,
        })
    }
}

/// What a restore read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreSummary {
    /// Entries restored.
    pub entries: u64,
    /// Values (or list elements) of an earlier version converted by a declared migration.
    pub migrated: u64,
}

/// Restores the states of `operator` (the key groups in `range`) from `reader` into `backend`.
///
/// The declared states are cleared first. Every key is checked against its key group and
/// decoded as the declared key type, every value validated as the declared value type; on any
/// error the declared states are cleared again, so a failed restore never leaves half a state.
///
/// # Errors
///
/// [`Error::Incompatible`] when the snapshot belongs to another operator, another maximum
/// parallelism, or is incremental; [`Error::SchemaMismatch`] when a stored state does not fit
/// the declared one (another kind, type or key type without a migration, or a state the
/// operator does not declare); [`Error::Corrupt`] for damaged data; a backend failure.
pub fn restore_operator<B: Snapshots + ?Sized>(
    reader: &SnapshotReader<'_>,
    backend: &mut B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
) -> Result<RestoreSummary> {
    restore_operator_from(&[reader], backend, operator, columns, range)
}

/// Restores the states of `operator` (the key groups in `range`) from several snapshots, in
/// order: full snapshots of any key-group ranges (the instances of a checkpoint, whatever their
/// parallelism was), each followed by the incremental snapshots taken on top of it.
///
/// Only the blocks of key groups in `range` are read. Every stored schema is checked against
/// the declaration first, and values of an earlier version are migrated as they are restored.
/// The declared states are cleared first; every key and value is validated; on any error the
/// declared states are cleared again.
///
/// # Errors
///
/// As [`restore_operator`]; an incremental snapshot whose key groups no earlier full snapshot
/// covers is [`Error::Incompatible`].
pub fn restore_operator_from<B: Snapshots + ?Sized>(
    readers: &[&SnapshotReader<'_>],
    backend: &mut B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
) -> Result<RestoreSummary> {
    let plans = check_all(readers, operator)?;
    let clear_all = |backend: &mut B| -> Result<()> {
        for &c in columns {
            backend.clear_state(c)?;
        }
        Ok(())
    };
    clear_all(backend)?;
    let mut summary = RestoreSummary::default();
    let mut result = Ok(());
    for (reader, plan) in readers.iter().zip(&plans) {
        result = apply(
            reader,
            plan,
            backend,
            operator,
            columns,
            range,
            &mut summary,
        );
        if result.is_err() {
            break;
        }
    }
    match result {
        Ok(()) => Ok(summary),
        Err(e) => {
            // Leave no half-restored state behind; the original error is what matters.
            let _ = clear_all(backend);
            Err(e)
        }
    }
}

/// Checks every snapshot before anything is restored: the chains, the operator and its
/// maximum parallelism, and every stored schema against the declaration (all problems of a
/// snapshot reported together).
fn check_all<'r>(
    readers: &[&'r SnapshotReader<'_>],
    operator: &OperatorDescriptor,
) -> Result<Vec<Plan<'r>>> {
    let mut plans = Vec::with_capacity(readers.len());
    let mut full_ranges: Vec<(u16, u16)> = Vec::new();
    for reader in readers {
        let index = reader.index();
        if index.incremental
            && !full_ranges
                .iter()
                .any(|&(f, l)| f <= index.first_key_group && index.last_key_group <= l)
        {
            return Err(Error::Incompatible {
                operator: operator.name.to_owned(),
                path: reader.path().to_owned(),
                reason: "an incremental snapshot without the full snapshot it applies to".into(),
            });
        }
        if !index.incremental {
            full_ranges.push((index.first_key_group, index.last_key_group));
        }
        plans.push(plan(reader, operator)?);
    }
    Ok(plans)
}

/// One stored state to restore: its section, its declaration and how its values are read.
struct Step<'r> {
    section: &'r StateSection,
    desc: &'static StateDescriptor,
    reading: Reading,
}

type Plan<'r> = Vec<Step<'r>>;

fn plan<'r>(reader: &'r SnapshotReader<'_>, operator: &OperatorDescriptor) -> Result<Plan<'r>> {
    let index = reader.index();
    let incompatible = |reason: String| Error::Incompatible {
        operator: operator.name.to_owned(),
        path: reader.path().to_owned(),
        reason,
    };
    if index.operator != operator.name {
        return Err(incompatible(format!(
            "the snapshot belongs to operator `{}`",
            index.operator
        )));
    }
    if index.max_parallelism != operator.max_parallelism {
        return Err(incompatible(format!(
            "it was written with max_parallelism {}, the operator declares {}; key groups cannot be remapped",
            index.max_parallelism, operator.max_parallelism
        )));
    }
    let mut report = SchemaReport::default();
    report.check_key(index.key_schema.as_ref(), operator);
    let stored: Vec<StoredState<'_>> = index
        .states
        .iter()
        .map(|s| StoredState {
            name: &s.name,
            kind: s.kind,
            version: s.version,
            value: s.value_schema.as_ref(),
            user_key: s.user_key_schema.as_ref(),
        })
        .collect();
    let checked = report.check_states(&stored, operator);
    if !report.problems.is_empty() {
        return Err(Error::SchemaMismatch {
            operator: operator.name.to_owned(),
            path: reader.path().to_owned(),
            report,
        });
    }
    Ok(index
        .states
        .iter()
        .zip(checked)
        .filter_map(|(section, c)| {
            c.map(|(desc, reading)| Step {
                section,
                desc,
                reading,
            })
        })
        .collect())
}

/// Reads one stored value (as the section stores it: stamped or not, framed for lists) into
/// `out` in the declared version, migrating each part if the plan says so. `None`: use the
/// stored bytes as they are.
fn migrated<'b>(
    step: &Step<'_>,
    list: bool,
    value: &'b [u8],
    out: &'b mut Vec<u8>,
    summary: &mut RestoreSummary,
) -> std::result::Result<&'b [u8], crate::model::error::CodecError> {
    match step.reading {
        Reading::AsIs => Ok(value),
        Reading::Migrate(m) => {
            out.clear();
            summary.migrated +=
                ttl::migrate_parts(list, step.section.ttl_ms != 0, value, out, m.migrate)?;
            Ok(&out[..])
        }
    }
}

fn apply<B: Snapshots + ?Sized>(
    reader: &SnapshotReader<'_>,
    plan: &Plan<'_>,
    backend: &mut B,
    operator: &OperatorDescriptor,
    columns: &[StateId],
    range: KeyGroupRange,
    summary: &mut RestoreSummary,
) -> Result<()> {
    let mut full_key = Vec::new();
    let mut plain_buf = Vec::new();
    let mut migrate_buf = Vec::new();
    for step in plan {
        let (section, desc) = (step.section, step.desc);
        let Some(pos) = operator.states.iter().position(|s| s.name == desc.name) else {
            // Operator state: restored into the operator, not the backend.
            continue;
        };
        let Some(&column) = columns.get(pos) else {
            return Err(Error::Incompatible {
                operator: operator.name.to_owned(),
                path: reader.path().to_owned(),
                reason: format!("state `{}` is not registered", section.name),
            });
        };
        let invalid = |detail: String| {
            Error::corrupt(
                reader.path(),
                0,
                Corruption::InvalidEntry {
                    state: section.name.clone(),
                    detail,
                },
            )
        };
        let list = section.kind == StateKind::List;
        reader.for_each_change(section, range, &mut |kg, key, user_key, change| {
            (operator.validate_key)(key).map_err(|e| invalid(format!("key: {e}")))?;
            let actual = key_group(key, operator.max_parallelism);
            if actual != kg {
                return Err(invalid(format!(
                    "a key of group {actual} is stored in group {kg}"
                )));
            }
            if !(user_key.is_empty() && matches!(change, Change::DeleteKey)) {
                (desc.validate_user_key)(user_key)
                    .map_err(|e| invalid(format!("user key: {e}")))?;
            }
            full_key.clear();
            full_key.extend_from_slice(&kg.to_be_bytes());
            full_key.extend_from_slice(key);
            let value = match change {
                Change::Put(value) => value,
                Change::Delete => {
                    summary.entries += 1;
                    return backend.delete(column, &full_key, user_key);
                }
                Change::DeleteKey => {
                    summary.entries += 1;
                    return backend.delete_key(column, &full_key);
                }
            };
            let value = migrated(step, list, value, &mut migrate_buf, summary)
                .map_err(|e| invalid(format!("migrating from version {}: {e}", section.version)))?;
            let stored_stamped = section.ttl_ms != 0;
            let plain = if stored_stamped {
                plain_buf.clear();
                ttl::strip_stamps(list, value, &mut plain_buf)
                    .map_err(|e| invalid(format!("ttl stamps: {e}")))?;
                &plain_buf[..]
            } else {
                value
            };
            (desc.validate_value)(plain).map_err(|e| invalid(format!("value: {e}")))?;
            match (stored_stamped, backend.stamps_ttl(column)) {
                // Stamps travel unchanged: a restore never extends a value's life.
                (true, true) => backend.put_stored(column, &full_key, user_key, value)?,
                // Written without a TTL, now with one: stamped at restore time by `put`.
                // Written with a TTL, now without one: the stamps are dropped.
                _ => backend.put(column, &full_key, user_key, plain)?,
            }
            summary.entries += 1;
            Ok(())
        })?;
    }
    Ok(())
}

/// The operator states (broadcast, operator list and union list states) of `operator` as the
/// instance owning `range` restores them from `readers` (full snapshots each followed by their
/// incremental ones, as for [`restore_operator_from`]): validated and migrated, one entry list
/// per declared operator state, in declaration order.
///
/// A chain's last snapshot that holds a state gives that old instance's entries. A broadcast
/// state comes from the first chain (every instance held the same). A union list concatenates
/// every chain's elements. An operator list gives each old instance's elements spread evenly
/// over that instance's key groups, and keeps those in `range`: every element goes to exactly
/// one new instance, and at the same parallelism each instance gets its own back.
///
/// # Errors
///
/// As [`restore_operator_from`] (schemas are checked the same way); a damaged entry.
pub fn restore_operator_states(
    readers: &[&SnapshotReader<'_>],
    operator: &OperatorDescriptor,
    range: KeyGroupRange,
) -> Result<Vec<OperatorEntries>> {
    let n = operator.operator_states.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let plans = check_all(readers, operator)?;
    // Per chain: its range, and per operator state its entries (the latest snapshot's).
    type Entries = OperatorEntries;
    type Chain = ((u16, u16), Vec<Option<Entries>>);
    let mut chains: Vec<Chain> = Vec::new();
    let mut summary = RestoreSummary::default();
    let mut buf = Vec::new();
    for (reader, plan) in readers.iter().zip(&plans) {
        let index = reader.index();
        if !index.incremental || chains.is_empty() {
            chains.push(((index.first_key_group, index.last_key_group), vec![None; n]));
        }
        let Some((_, slots)) = chains.last_mut() else {
            continue;
        };
        // The decoder checked the range.
        let Some(whole) = KeyGroupRange::new(index.first_key_group, index.last_key_group) else {
            continue;
        };
        for step in plan {
            let Some(pos) = operator
                .operator_states
                .iter()
                .position(|d| d.name == step.desc.name)
            else {
                continue;
            };
            let invalid = |detail: String| {
                Error::corrupt(
                    reader.path(),
                    0,
                    Corruption::InvalidEntry {
                        state: step.section.name.clone(),
                        detail,
                    },
                )
            };
            let mut entries = Vec::new();
            reader.for_each_change(step.section, whole, &mut |_, _, user_key, change| {
                let Change::Put(value) = change else {
                    return Err(invalid("a deletion in operator state".into()));
                };
                if step.desc.kind == StateKind::Broadcast {
                    (step.desc.validate_user_key)(user_key)
                        .map_err(|e| invalid(format!("user key: {e}")))?;
                } else if user_key.len() != 4 {
                    return Err(invalid(format!(
                        "a list position of {} bytes",
                        user_key.len()
                    )));
                }
                let value = migrated(step, false, value, &mut buf, &mut summary)
                    .map_err(|e| invalid(format!("migrating: {e}")))?;
                (step.desc.validate_value)(value).map_err(|e| invalid(format!("value: {e}")))?;
                entries.push((user_key.to_vec(), value.to_vec()));
                Ok(())
            })?;
            slots[pos] = Some(entries);
        }
    }
    let mut out = Vec::with_capacity(n);
    for (pos, desc) in operator.operator_states.iter().enumerate() {
        let mut entries: Entries = Vec::new();
        match desc.kind {
            StateKind::Broadcast => {
                if let Some(first) = chains.iter().find_map(|(_, s)| s[pos].as_ref()) {
                    entries.clone_from(first);
                }
            }
            StateKind::UnionList => {
                for (_, slots) in &chains {
                    entries.extend(slots[pos].iter().flatten().cloned());
                }
            }
            _ => {
                for ((first, last), slots) in &chains {
                    let Some(elements) = &slots[pos] else {
                        continue;
                    };
                    let groups = u64::from(last - first) + 1;
                    let count = elements.len() as u64;
                    for (j, element) in elements.iter().enumerate() {
                        let offset = j as u64 * groups / count;
                        let kg = u16::try_from(u64::from(*first) + offset).unwrap_or(u16::MAX);
                        if range.contains(kg) {
                            entries.push(element.clone());
                        }
                    }
                }
            }
        }
        if desc.kind != StateKind::Broadcast {
            // Positions are renumbered when the lists are loaded.
            for (i, e) in entries.iter_mut().enumerate() {
                e.0 = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes().to_vec();
            }
        }
        out.push(entries);
    }
    Ok(out)
}
