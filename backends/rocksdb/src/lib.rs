//! The RocksDB backend of statewright, for keyed state larger than memory.
//!
//! - One column family per state, named `<operator>.<state>`, all sharing one block cache.
//! - Key layout: key group (2 bytes, big endian), the canonical key's length (LEB128), the
//!   canonical key, then the canonical user key of map states. Entries of a key group are
//!   contiguous, so a key-group range can be cut off on rescale; the entries of one key are
//!   contiguous, so map iteration is a prefix scan in user-key order.
//! - Reads are zero-copy: [`StateBackend::get`] hands out the bytes of a RocksDB pinned slice
//!   (the block in the cache, or the memtable entry), which stays pinned until the next write or
//!   key change. Values use rkyv's `unaligned` format, so any slice can be read in place.
//! - List appends are RocksDB merges with an append operator: no read-modify-write.
//! - A bounded row cache sits in front of RocksDB ([`RocksDbOptions::row_cache_size`]): hits
//!   never reach RocksDB, and writes to every state but maps and namespaced states stay in the
//!   cache until eviction, a checkpoint, a flush, a scan or a clean close writes them back.
//!   Reads handed out from the cache are as zero-copy as pinned ones.
//! - Timers are stored in time order, one row per timer, in a column family of their own
//!   (`<operator>.<state>#by-time`; see the `timers` module): firing reads each key group's
//!   next timers in order and deletes each fired one once, as Flink's RocksDB timer service.
//! - The write-ahead log is off by default, as in Flink: checkpoints make state durable.
//!
//! # Examples
//!
//! ```
//! use statewright::prelude::*;
//! use statewright::{RocksDbBackend, RocksDbOptions};
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "counts", key = u64)]
//! struct Counts { n: ValueState<u64> }
//!
//! let dir = tempfile::tempdir()?;
//! let backend = RocksDbBackend::open(dir.path().join("db"), RocksDbOptions::low_memory())?;
//! let mut op = Counts::default().bind(backend)?;
//! op.key(&1)?.n().set(&41)?;
//! op.key(&1)?.n().update(|n| n.unwrap_or(0) + 1)?;
//! assert_eq!(op.key(&1)?.n().get()?.map(|n| n.to_native()), Some(42));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod native;
mod options;
mod rows;
mod stats;
mod timers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rocksdb::compaction_filter::{CompactionFilter, Decision as CompactionDecision};
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};
use rocksdb::{ColumnFamily, DB, DBPinnableSlice, ReadOptions, WriteBatch, WriteOptions};
use statewright_core::backend::{
    ChangeVisitor, DetachedState, EntryIter, EntryVisitor, ExpiryHooks, NativeFiles, NativeRestore,
    Snapshots, StateBackend, StateId, ValueReader,
};
use statewright_core::checkpoint::validate_name;
use statewright_core::ttl::ExpiryFilter;
use statewright_core::{Error, OperatorDescriptor, Result, StateDescriptor, StateKind};

pub use native::{restore_native, restore_native_with_progress};
pub use options::{Compression, RocksDbOptions};
pub use rows::RowCacheStats;
pub use statewright_core::backend::MigrationProgress;
pub use stats::{Latency, RocksDbStats, StateKeys};

use rows::{Row, RowCache, Slot};

fn db_error(e: &rocksdb::Error) -> Error {
    Error::Storage {
        backend: "rocksdb",
        source: Box::new(e.clone()),
    }
}

/// Read buffers that must outlive a `get` or `scan` call: pinned slices and the chunks scans
/// copied entries into. Emptied whenever the backend is borrowed mutably, which proves no read
/// is alive. Reads that decode into owned values ([`StateBackend::read`], [`StateBackend::count`])
/// add nothing here.
#[derive(Default)]
struct Pins {
    slices: Vec<DBPinnableSlice<'static>>,
    /// Never grown after a slice into them is handed out: a `Vec` moved here keeps its heap
    /// buffer where it is.
    scanned: Vec<Vec<u8>>,
}

/// The first chunk of a scan's copy buffer; later ones double, up to [`MAX_SCAN_CHUNK`].
const FIRST_SCAN_CHUNK: usize = 1 << 10;
const MAX_SCAN_CHUNK: usize = 1 << 16;

/// A lazy prefix scan: each entry is read from RocksDB when the caller asks for it and copied
/// once into a chunk the iterator owns (RocksDB's iterator reuses its key and value buffers on
/// every step, and its C API does not say when a slice is pinned). A scan stopped early copies
/// only what it yielded; full chunks, and the last one when the iterator drops, move to the
/// backend's [`Pins`] so the slices handed out stay valid for the backend borrow.
struct ScanIter<'a> {
    backend: &'a RocksDbBackend,
    it: rocksdb::DBRawIterator<'a>,
    prefix: Vec<u8>,
    chunk: Vec<u8>,
    started: bool,
    done: bool,
}

/// Copies `key` and `value` into `chunk`, starting a new chunk when they do not fit in its
/// capacity (a chunk that slices point into is never reallocated; the full one moves to the
/// backend's pins), and returns where each now is.
fn copy_entry(
    backend: &RocksDbBackend,
    chunk: &mut Vec<u8>,
    key: &[u8],
    value: &[u8],
) -> Result<(*const [u8], *const [u8])> {
    let need = key.len() + value.len();
    if chunk.capacity() - chunk.len() < need {
        let next = (chunk.capacity() * 2)
            .clamp(FIRST_SCAN_CHUNK, MAX_SCAN_CHUNK)
            .max(need);
        let full = std::mem::replace(chunk, Vec::with_capacity(next));
        if !full.is_empty() {
            backend.pins()?.scanned.push(full);
        }
    }
    let start = chunk.len();
    // Within capacity: these do not reallocate, so earlier slices into the chunk stay valid.
    chunk.extend_from_slice(key);
    chunk.extend_from_slice(value);
    let k: *const [u8] = &chunk[start..start + key.len()];
    let v: *const [u8] = &chunk[start + key.len()..start + need];
    Ok((k, v))
}

impl<'a> Iterator for ScanIter<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.started {
            self.it.next();
        }
        self.started = true;
        let Self {
            backend,
            it,
            prefix,
            chunk,
            ..
        } = self;
        let copied = match it.item() {
            Some((k, v)) if k.starts_with(prefix) => {
                copy_entry(backend, chunk, &k[prefix.len()..], v)
            }
            _ => {
                self.done = true;
                return self.it.status().err().map(|e| Err(db_error(&e)));
            }
        };
        match copied {
            // SAFETY: both pointers are into a chunk's heap buffer, which is never reallocated
            // once a slice into it exists (`copy_entry` starts a new chunk instead) and is freed
            // only by `release_reads` (which takes `&mut` of the backend, so no borrow for `'a`
            // is alive) or when the backend drops; the iterator moves its chunk into the
            // backend's pins, never frees it, when it drops.
            #[allow(unsafe_code)]
            Ok((k, v)) => Some(Ok(unsafe { (&*k, &*v) })),
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Drop for ScanIter<'_> {
    fn drop(&mut self) {
        let chunk = std::mem::take(&mut self.chunk);
        if chunk.is_empty() {
            return;
        }
        match self.backend.pins.try_borrow_mut() {
            Ok(mut pins) => pins.scanned.push(chunk),
            // Slices into the chunk may still be borrowed: leak it rather than free it. The
            // pins are only borrowed for the length of a push, so this does not happen.
            Err(_) => std::mem::forget(chunk),
        }
    }
}

struct Column {
    name: String,
    /// Whether the row cache keeps this state's writes until write-back (map states and a
    /// backend with the write-ahead log on write through).
    write_back: bool,
    /// Whether a key has many rows (user keys: map, namespaced and timer states).
    user_keys: bool,
    /// For a timer state kept in time order: the column that holds its timers
    /// (`<name>#by-time`, one row per timer; see [`timers`]). The state's own column family
    /// stays empty.
    by_time: Option<u32>,
    /// Whether this is a timer state.
    timers: bool,
}

/// Moves the timers a timer state holds in its own column family (a database that kept
/// them in memory, or files of an earlier layout) into its time-ordered column family
/// (created when missing), one row per timer, and empties its own.
pub(crate) fn settle_in_time_order(
    backend: &mut RocksDbBackend,
    name: &str,
    by_time_name: &str,
) -> Result<()> {
    backend.write_time_rows()?;
    if backend.db.cf_handle(by_time_name).is_none() {
        let opts = cf_options(
            &backend.options,
            &backend.cache,
            &mut backend.filters,
            by_time_name,
        );
        backend
            .db
            .create_cf(by_time_name, &opts)
            .map_err(|e| db_error(&e))?;
    }
    let moved = {
        let db = &backend.db;
        let cf = db.cf_handle(name).ok_or_else(|| missing_cf(name))?;
        let time_cf = db
            .cf_handle(by_time_name)
            .ok_or_else(|| missing_cf(by_time_name))?;
        let mut batch = WriteBatch::default();
        let mut it = db.raw_iterator_cf_opt(cf, scan_options());
        it.seek_to_first();
        let (mut key, mut row, mut value) = (Vec::new(), Vec::new(), Vec::new());
        let mut moved = false;
        while let Some(k) = it.key() {
            let at = split_internal(k, &mut key).ok_or_else(|| Error::Backend {
                backend: "rocksdb",
                message: format!("malformed key in column family `{name}`"),
            })?;
            timers::row_key(&mut row, &key, k.get(at..).unwrap_or_default())?;
            timers::row_value(&mut value, &key);
            batch.put_cf(time_cf, &row, &value);
            moved = true;
            write_when_full(db, &mut batch, &backend.write_opts)?;
            it.next();
        }
        it.status().map_err(|e| db_error(&e))?;
        db.write_opt(batch, &backend.write_opts)
            .map_err(|e| db_error(&e))?;
        moved
    };
    if moved {
        recreate_cf(backend, name)?;
    }
    Ok(())
}

/// Moves the timers of a timer state's time-ordered column family under their keys, in the
/// state's own column family, and drops the time-ordered one: a database that kept its
/// timers in time order now keeps them in memory. Rows of an earlier layout (an empty value:
/// the timer was under its key as well) are left out.
pub(crate) fn settle_under_keys(
    backend: &mut RocksDbBackend,
    name: &str,
    by_time_name: &str,
) -> Result<()> {
    backend.write_time_rows()?;
    {
        let db = &backend.db;
        let Some(time_cf) = db.cf_handle(by_time_name) else {
            return Ok(());
        };
        let cf = db.cf_handle(name).ok_or_else(|| missing_cf(name))?;
        let mut batch = WriteBatch::default();
        let mut it = db.raw_iterator_cf_opt(time_cf, scan_options());
        it.seek_to_first();
        let (mut key, mut user_key, mut internal) = (Vec::new(), Vec::new(), Vec::new());
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !v.is_empty() {
                let p = timers::parts(k, v).ok_or_else(|| Error::Backend {
                    backend: "rocksdb",
                    message: format!("malformed timer row in column family `{by_time_name}`"),
                })?;
                p.state_key(&mut key);
                p.user_key(&mut user_key);
                RocksDbBackend::internal_key(&mut internal, &key, &user_key)?;
                batch.put_cf(cf, &internal, []);
                write_when_full(db, &mut batch, &backend.write_opts)?;
            }
            it.next();
        }
        it.status().map_err(|e| db_error(&e))?;
        db.write_opt(batch, &backend.write_opts)
            .map_err(|e| db_error(&e))?;
    }
    backend.db.drop_cf(by_time_name).map_err(|e| db_error(&e))
}

/// Writes a bulk write's batch once it holds [`OUT_BATCH`] bytes, and starts the next one.
pub(crate) fn write_when_full(db: &DB, batch: &mut WriteBatch, opts: &WriteOptions) -> Result<()> {
    if batch.size_in_bytes() >= OUT_BATCH {
        db.write_opt(std::mem::take(batch), opts)
            .map_err(|e| db_error(&e))?;
    }
    Ok(())
}

fn missing_cf(name: &str) -> Error {
    Error::Backend {
        backend: "rocksdb",
        message: format!("column family `{name}` is missing"),
    }
}

/// Empties a column family by dropping and creating it again: at once, without tombstones.
fn recreate_cf(backend: &mut RocksDbBackend, name: &str) -> Result<()> {
    backend.db.drop_cf(name).map_err(|e| db_error(&e))?;
    let opts = cf_options(&backend.options, &backend.cache, &mut backend.filters, name);
    backend.db.create_cf(name, &opts).map_err(|e| db_error(&e))
}

/// Puts every timer state's timers where this backend's options keep them (after a native
/// restore, whose files may come from a backend that kept them the other way, or from an
/// earlier layout).
pub(crate) fn settle_timers(backend: &mut RocksDbBackend) -> Result<()> {
    let states: Vec<(String, Option<String>)> = backend
        .columns
        .iter()
        .filter(|c| c.timers)
        .map(|c| {
            let by_time = c
                .by_time
                .and_then(|i| backend.columns.get(i as usize))
                .map(|b| b.name.clone());
            (c.name.clone(), by_time)
        })
        .collect();
    for (name, by_time) in states {
        match by_time {
            Some(by_time) => settle_in_time_order(backend, &name, &by_time)?,
            None => settle_under_keys(backend, &name, &format!("{name}#by-time"))?,
        }
    }
    Ok(())
}

/// The TTL filter of one column family, filled in when a TTL backend registers the state; the
/// compaction filter installed with the column family reads it.
type FilterSlot = Arc<RwLock<Option<ExpiryFilter>>>;

/// Makes one compaction's TTL filter from the column family's slot. RocksDB owns the factory
/// (it outlives the options it was set on), and each filter it makes runs on one thread.
struct TtlFilterFactory {
    slot: FilterSlot,
}

const TTL_FILTER: &CStr = c"statewright-ttl";

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        TtlFilter(self.slot.read().ok().and_then(|f| f.clone()))
    }

    fn name(&self) -> &CStr {
        TTL_FILTER
    }
}

/// Drops entries whose TTL expired (see [`ExpiryFilter::remove`]); keeps everything when the
/// state has no TTL.
struct TtlFilter(Option<ExpiryFilter>);

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> CompactionDecision {
        match &self.0 {
            Some(f) if f.remove(value) => CompactionDecision::Remove,
            _ => CompactionDecision::Keep,
        }
    }

    fn name(&self) -> &CStr {
        TTL_FILTER
    }
}

/// Column family options with the compaction filter that drops expired TTL entries.
fn cf_options(
    options: &RocksDbOptions,
    cache: &rocksdb::Cache,
    slots: &mut HashMap<String, FilterSlot>,
    name: &str,
) -> rocksdb::Options {
    let mut o = options.rocksdb_cf_options(cache);
    let slot = Arc::clone(slots.entry(name.to_owned()).or_default());
    o.set_compaction_filter_factory(TtlFilterFactory { slot });
    o
}

/// The column families of the database at `path`, or none when there is no database there yet
/// (no `CURRENT` file). Any other failure to list them is an error naming the directory:
/// opening anyway would fail with a message that does not say where, after RocksDB had already
/// written into the directory.
fn existing_column_families(db_opts: &rocksdb::Options, path: &Path) -> Result<Vec<String>> {
    let current = path.join("CURRENT");
    match current.try_exists() {
        Ok(false) => return Ok(Vec::new()),
        Ok(true) => {}
        Err(e) => {
            return Err(Error::Io {
                path: current,
                source: e,
            });
        }
    }
    DB::list_cf(db_opts, path).map_err(|e| Error::Io {
        path: path.to_owned(),
        source: std::io::Error::other(format!(
            "cannot list the column families of the database: {e}"
        )),
    })
}

/// Opens the database at `path` with every column family it has (creating it when there is
/// none yet).
fn open_db(
    path: &Path,
    db_opts: &rocksdb::Options,
    options: &RocksDbOptions,
    cache: &rocksdb::Cache,
    filters: &mut HashMap<String, FilterSlot>,
) -> Result<DB> {
    let existing = existing_column_families(db_opts, path)?;
    let cfs: Vec<_> = existing
        .iter()
        .filter(|n| n.as_str() != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        .map(|n| {
            let o = cf_options(options, cache, filters, n);
            rocksdb::ColumnFamilyDescriptor::new(n, o)
        })
        .collect();
    DB::open_cf_descriptors(db_opts, path, cfs).map_err(|e| db_error(&e))
}

/// Visits every entry of a column family as `(key, user key, value)`.
fn visit_column(
    db: &DB,
    cf: &ColumnFamily,
    read: ReadOptions,
    name: &str,
    visit: &mut EntryVisitor<'_>,
) -> Result<()> {
    let mut it = db.raw_iterator_cf_opt(cf, read);
    it.seek_to_first();
    let mut key = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let split = split_internal(k, &mut key).ok_or_else(|| Error::Backend {
            backend: "rocksdb",
            message: format!("malformed key in column family `{name}`"),
        })?;
        visit(&key, &k[split..], v)?;
        it.next();
    }
    it.status().map_err(|e| db_error(&e))
}

/// The name prefix of the directories `detach` creates next to the database at `path`.
fn capture_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(|| "db".into(), |n| n.to_string_lossy());
    format!(".{name}.statewright-capture-")
}

/// Removes what detached views of the database at `path` left behind when a process died
/// while writing a checkpoint (their hard links would keep deleted SST files on disk).
fn remove_stale_captures(path: &Path) {
    let (Some(parent), prefix) = (path.parent(), capture_prefix(path)) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A detached view: a checkpoint of the database, opened read-only on first use.
struct Detached {
    // Declared before the directory: the database closes before its files are deleted.
    db: RefCell<Option<DB>>,
    names: Vec<String>,
    /// For each state, the index of its time-ordered column when it is a timer state kept
    /// in time order.
    time_orders: Vec<Option<u32>>,
    options: RocksDbOptions,
    target: PathBuf,
    _dir: tempfile::TempDir,
}

impl DetachedState for Detached {
    fn in_canonical_order(&self) -> bool {
        // `visit_canonical` merges the runs of one key length within each key group.
        true
    }

    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        let name = self
            .names
            .get(state.0 as usize)
            .ok_or(Error::UnknownState {
                backend: "rocksdb",
                id: state.0,
            })?;
        let mut slot = self.db.try_borrow_mut().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "a detached view is read by one visitor at a time".into(),
        })?;
        if slot.is_none() {
            let cache = rocksdb::Cache::new_lru_cache(8 << 20);
            let cfs: Vec<_> = self
                .names
                .iter()
                .map(|n| {
                    rocksdb::ColumnFamilyDescriptor::new(n, self.options.rocksdb_cf_options(&cache))
                })
                .collect();
            let db = DB::open_cf_descriptors_read_only(
                &self.options.rocksdb_db_options(),
                &self.target,
                cfs,
                false,
            )
            .map_err(|e| db_error(&e))?;
            *slot = Some(db);
        }
        let Some(db) = slot.as_ref() else {
            return Ok(());
        };
        let time_order = self
            .time_orders
            .get(state.0 as usize)
            .copied()
            .flatten()
            .and_then(|i| self.names.get(i as usize));
        let name = time_order.unwrap_or(name);
        let cf = db.cf_handle(name).ok_or_else(|| Error::Backend {
            backend: "rocksdb",
            message: format!("no column family `{name}` in the detached view"),
        })?;
        if time_order.is_some() {
            return timers::visit_canonical(db, cf, name, visit);
        }
        visit_canonical(db, cf, name, visit)
    }
}

/// Read options for a scan of a detached view: its blocks are read once, so they stay out of
/// the block cache.
fn scan_options() -> ReadOptions {
    let mut read = ReadOptions::default();
    read.fill_cache(false);
    read
}

/// The canonical key and the user key of an internal key.
fn internal_parts(internal: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = internal.get(2..)?;
    let (mut len, mut shift, mut i) = (0usize, 0u32, 0usize);
    loop {
        let b = *rest.get(i)?;
        len |= usize::from(b & 0x7F).checked_shl(shift)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let end = i.checked_add(len)?;
    Some((rest.get(i..end)?, rest.get(end..)?))
}

/// Visits a column family in the canonical order of snapshots: key group, canonical key, user
/// key. A stored key is the key group, the LEB128 length of the canonical key, the canonical
/// key and the user key, so within a key group RocksDB orders the keys by length first: they
/// come in runs of one length, each in canonical order. The runs of a key group are found by
/// seeking past each one, and merged, one iterator each. Fixed-width keys make one run per key
/// group; memory holds an iterator per run, never the state.
fn visit_canonical(
    db: &DB,
    cf: &ColumnFamily,
    name: &str,
    visit: &mut EntryVisitor<'_>,
) -> Result<()> {
    let malformed = || Error::Backend {
        backend: "rocksdb",
        message: format!("malformed key in column family `{name}`"),
    };
    let mut probe = db.raw_iterator_cf_opt(cf, scan_options());
    probe.seek_to_first();
    let mut runs: Vec<Vec<u8>> = Vec::new();
    let mut key = Vec::new();
    while let Some(first) = probe.key() {
        let group = first.get(..2).ok_or_else(malformed)?.to_vec();
        runs.clear();
        let mut past_end = false;
        while let Some(k) = probe.key() {
            if !k.starts_with(&group) {
                break;
            }
            let (canonical, user_key) = internal_parts(k).ok_or_else(malformed)?;
            // The run's prefix: the key group and the length.
            let run = k[..k.len() - user_key.len() - canonical.len()].to_vec();
            let next = prefix_end(&run);
            runs.push(run);
            match next {
                Some(next) => probe.seek(&next),
                None => {
                    past_end = true;
                    break;
                }
            }
        }
        probe.status().map_err(|e| db_error(&e))?;
        merge_runs(db, cf, &runs, &mut key, &malformed, visit)?;
        if past_end {
            break;
        }
    }
    probe.status().map_err(|e| db_error(&e))
}

/// Visits the entries of `runs` (prefixes of one key group, one key length each) merged into
/// canonical order.
fn merge_runs(
    db: &DB,
    cf: &ColumnFamily,
    runs: &[Vec<u8>],
    key: &mut Vec<u8>,
    malformed: &dyn Fn() -> Error,
    visit: &mut EntryVisitor<'_>,
) -> Result<()> {
    let mut iterators = Vec::with_capacity(runs.len());
    for run in runs {
        let mut read = scan_options();
        if let Some(end) = prefix_end(run) {
            read.set_iterate_upper_bound(end);
        }
        let mut it = db.raw_iterator_cf_opt(cf, read);
        it.seek(run);
        iterators.push(it);
    }
    loop {
        // The run whose next entry comes first (a linear pick: there are few runs).
        let mut best = None;
        let mut best_parts: (&[u8], &[u8]) = (&[], &[]);
        for (i, it) in iterators.iter().enumerate() {
            if let Some(k) = it.key() {
                let parts = internal_parts(k).ok_or_else(malformed)?;
                if best.is_none() || parts < best_parts {
                    (best, best_parts) = (Some(i), parts);
                }
            }
        }
        let Some(i) = best else {
            break;
        };
        let it = &mut iterators[i];
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            let split = split_internal(k, key).ok_or_else(malformed)?;
            visit(key, &k[split..], v)?;
        }
        it.next();
    }
    for it in &iterators {
        it.status().map_err(|e| db_error(&e))?;
    }
    Ok(())
}

/// Keyed state in a RocksDB database.
pub struct RocksDbBackend {
    // Declared before `db`: fields drop in order, and pinned slices must go before the database.
    pins: RefCell<Pins>,
    key_buf: RefCell<Vec<u8>>,
    /// A timer's row key and value in its time-ordered column.
    time_key: Vec<u8>,
    time_value: Vec<u8>,
    /// Rows of the time-ordered columns not yet written: written in key order, in one batch,
    /// before anything reads those columns (a refill, a checkpoint, a write-back, a close)
    /// or once they reach [`OUT_BATCH`] bytes.
    time_rows: RefCell<OutRows>,
    // Written back in `Drop` while the database is open.
    rows: RefCell<RowCache>,
    /// Set when a write-back failed: rows the cache had may be missing from RocksDB, so every
    /// later operation fails until the backend is restored.
    poisoned: Cell<bool>,
    db: DB,
    db_opts: rocksdb::Options,
    path: PathBuf,
    options: RocksDbOptions,
    cache: rocksdb::Cache,
    columns: Vec<Column>,
    filters: HashMap<String, FilterSlot>,
    read_opts: ReadOptions,
    write_opts: WriteOptions,
    reads: Cell<u64>,
    writes: Cell<u64>,
    rate_window: Cell<(Instant, u64, u64)>,
    lineage: native::Lineage,
    // Last: removed after the database has closed.
    temporary: Option<tempfile::TempDir>,
}

impl Drop for RocksDbBackend {
    fn drop(&mut self) {
        // Rows written since the last write-back reach RocksDB, which flushes its memtables
        // when it closes: a database reopened after a clean close has every write. (A process
        // that dies loses them, as RocksDB without its write-ahead log loses its memtables:
        // checkpoints make state durable.)
        let _ = self.write_back_rows();
    }
}

impl std::fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.path)
            .field("states", &self.columns.len())
            .finish_non_exhaustive()
    }
}

/// Appends `n` as LEB128.
fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Splits an internal key into (key group prefix + canonical key, user key): fills `key_out`
/// with the first and returns where the user key starts.
fn split_internal(internal: &[u8], key_out: &mut Vec<u8>) -> Option<usize> {
    let (canonical, user_key) = internal_parts(internal)?;
    key_out.clear();
    key_out.extend_from_slice(internal.get(..2)?);
    key_out.extend_from_slice(canonical);
    Some(internal.len() - user_key.len())
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl RocksDbBackend {
    /// Opens (creating if needed) a database at `path`, reopening the column families of any
    /// states registered before.
    ///
    /// # Errors
    ///
    /// When RocksDB cannot open the database.
    pub fn open(path: impl Into<PathBuf>, options: RocksDbOptions) -> Result<Self> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_size);
        let db_opts = options.rocksdb_db_options();
        let mut filters = HashMap::new();
        let db = open_db(&path, &db_opts, &options, &cache, &mut filters)?;
        // Opened: no other process has this database, so no view of it is being read.
        remove_stale_captures(&path);
        let lineage = native::Lineage::load_or_create(&path)?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(!options.write_ahead_log);
        let mut read_opts = ReadOptions::default();
        read_opts.set_verify_checksums(true);
        Ok(Self {
            pins: RefCell::default(),
            key_buf: RefCell::default(),
            time_key: Vec::new(),
            time_value: Vec::new(),
            time_rows: RefCell::new(OutRows::default()),
            rows: RefCell::new(RowCache::new(
                options.row_cache_size,
                options.row_cache_dirty_limit,
            )),
            poisoned: Cell::new(false),
            db,
            db_opts,
            path,
            options,
            cache,
            columns: Vec::new(),
            filters,
            read_opts,
            write_opts,
            reads: Cell::new(0),
            writes: Cell::new(0),
            rate_window: Cell::new((Instant::now(), 0, 0)),
            lineage,
            temporary: None,
        })
    }

    /// Opens a database in a new temporary directory that is deleted when the backend drops
    /// (tests, benchmarks, throw-away jobs).
    ///
    /// # Errors
    ///
    /// When the directory cannot be created or RocksDB cannot open the database.
    pub fn open_temporary(options: RocksDbOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("statewright-rocksdb-")
            .tempdir()
            .map_err(|e| Error::Io {
                path: std::env::temp_dir(),
                source: e,
            })?;
        let mut backend = Self::open(dir.path(), options)?;
        backend.temporary = Some(dir);
        Ok(backend)
    }

    /// The database directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options this backend was opened with.
    #[must_use]
    pub fn options(&self) -> &RocksDbOptions {
        &self.options
    }

    /// The underlying database, for what statewright does not wrap. Writes still in the row
    /// cache are not in it until [`flush`](Self::flush) (or a checkpoint) writes them back, and
    /// writes made to it directly bypass the cache.
    #[must_use]
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// The column family name of a registered state.
    #[must_use]
    pub fn column_family_name(&self, state: StateId) -> Option<&str> {
        self.columns.get(state.0 as usize).map(|c| c.name.as_str())
    }

    /// Writes the row cache's dirty rows back, then flushes every state's memtables to SST
    /// files.
    ///
    /// # Errors
    ///
    /// When RocksDB fails to flush.
    pub fn flush(&self) -> Result<()> {
        self.write_back_rows()?;
        for c in &self.columns {
            let cf = self.cf_by_name(&c.name)?;
            self.db.flush_cf(cf).map_err(|e| db_error(&e))?;
        }
        Ok(())
    }

    /// Compacts every state's whole key range.
    ///
    /// # Errors
    ///
    /// When a column family is missing.
    pub fn compact(&self) -> Result<()> {
        for c in &self.columns {
            let cf = self.cf_by_name(&c.name)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Entries that compactions dropped from a column family because their TTL expired.
    fn ttl_expired_in_compaction(&self, name: &str) -> u64 {
        self.filters
            .get(name)
            .and_then(|slot| slot.read().ok()?.as_ref().map(ExpiryFilter::dropped))
            .unwrap_or(0)
    }

    fn cf_by_name(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Backend {
            backend: "rocksdb",
            message: format!("column family `{name}` is missing"),
        })
    }

    fn cf(&self, state: StateId) -> Result<&ColumnFamily> {
        let column = self
            .columns
            .get(state.0 as usize)
            .ok_or(Error::UnknownState {
                backend: "rocksdb",
                id: state.0,
            })?;
        self.cf_by_name(&column.name)
    }

    fn internal_key(buf: &mut Vec<u8>, key: &[u8], user_key: &[u8]) -> Result<()> {
        let Some((kg, canonical)) = key.split_first_chunk::<2>() else {
            return Err(Error::Backend {
                backend: "rocksdb",
                message: "a key must start with its 2-byte key group".into(),
            });
        };
        buf.clear();
        buf.extend_from_slice(kg);
        put_len(buf, canonical.len());
        buf.extend_from_slice(canonical);
        buf.extend_from_slice(user_key);
        Ok(())
    }

    fn with_key<T>(
        &self,
        key: &[u8],
        user_key: &[u8],
        f: impl FnOnce(&[u8]) -> Result<T>,
    ) -> Result<T> {
        let mut buf = self.key_buf.try_borrow_mut().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "re-entrant key buffer use".into(),
        })?;
        Self::internal_key(&mut buf, key, user_key)?;
        f(&buf)
    }

    /// The value at `(key, user_key)`, pinned where RocksDB holds it; counted as a read.
    fn pinned(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
    ) -> Result<Option<DBPinnableSlice<'_>>> {
        let cf = self.cf(state)?;
        self.reads.set(self.reads.get() + 1);
        self.with_key(key, user_key, |k| {
            self.db
                .get_pinned_cf_opt(cf, k, &self.read_opts)
                .map_err(|e| db_error(&e))
        })
    }

    /// A raw iterator over the keys that start with `prefix`, positioned at the first.
    fn prefix_iter(&self, cf: &ColumnFamily, prefix: &[u8]) -> rocksdb::DBRawIterator<'_> {
        self.prefix_iter_from(cf, prefix, prefix)
    }

    /// A raw iterator over the keys that start with `prefix`, positioned at the first at or
    /// after `from` (one seek: the keys before it are never stepped over).
    fn prefix_iter_from(
        &self,
        cf: &ColumnFamily,
        prefix: &[u8],
        from: &[u8],
    ) -> rocksdb::DBRawIterator<'_> {
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_cf_opt(cf, opts);
        it.seek(from);
        it
    }

    fn pins(&self) -> Result<std::cell::RefMut<'_, Pins>> {
        self.pins.try_borrow_mut().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "re-entrant read".into(),
        })
    }

    fn wrote(&mut self) {
        self.writes.set(self.writes.get() + 1);
        self.release_reads();
    }
}

/// Rows on their way from the cache to a write batch, copied out so that they go to RocksDB
/// in key order: a memtable insert right after the previous one's key reuses its search
/// path, where inserts in the cache's (hash) order each searched the memtable's skip list
/// from the top (`FindSpliceForLevel` was more than a third of `list_add` at a million keys).
#[derive(Default)]
struct OutRows {
    bytes: Vec<u8>,
    /// State, the key's first 16 bytes ([`key_head`]), what the row is, where its key starts,
    /// the key's length, where the row ends.
    rows: Vec<(u32, u128, Row, usize, usize, usize)>,
    /// For timer rows ([`push`](Self::push)): the greatest pending row key of each state and
    /// key group.
    greatest: HashMap<(u32, [u8; 2]), Vec<u8>>,
}

impl OutRows {
    fn add(&mut self, slot: &Slot) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(slot.key());
        self.bytes.extend_from_slice(slot.value());
        self.rows.push((
            slot.state(),
            key_head(slot.key()),
            slot.row(),
            start,
            slot.key().len(),
            self.bytes.len(),
        ));
    }

    /// Adds a timer's row in time order, or its deletion.
    fn push(&mut self, state: u32, row: Row, key: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
        self.rows.push((
            state,
            key_head(key),
            row,
            start,
            key.len(),
            self.bytes.len(),
        ));
        if let Some(kg) = key.first_chunk::<2>() {
            let greatest = self.greatest.entry((state, *kg)).or_default();
            if key > greatest.as_slice() {
                greatest.clear();
                greatest.extend_from_slice(key);
            }
        }
    }

    /// Whether a timer row pending for `state` is in the key group `from` starts with and
    /// sorts after `from` (a read from `from` skips `from` itself, or starts at a key group's
    /// prefix, which no row equals).
    fn pending_after(&self, state: u32, from: &[u8]) -> bool {
        from.first_chunk::<2>().is_none_or(|kg| {
            self.greatest
                .get(&(state, *kg))
                .is_some_and(|g| g.as_slice() > from)
        })
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn key(&self, start: usize, key_len: usize) -> &[u8] {
        self.bytes.get(start..start + key_len).unwrap_or_default()
    }

    /// Writes the rows in (state, key) order, in batches of about [`OUT_BATCH`] bytes (the
    /// copy and the batch together stay within twice the rows' bytes plus one batch).
    fn write(
        mut self,
        db: &DB,
        columns: &[Column],
        write: &mut dyn FnMut(WriteBatch) -> Result<()>,
    ) -> Result<()> {
        let mut rows = std::mem::take(&mut self.rows);
        // Stable: of two writes of one key, the later one is applied last. Most comparisons
        // end at the state and the keys' first 16 bytes.
        rows.sort_by(|a, b| {
            (a.0, a.1)
                .cmp(&(b.0, b.1))
                .then_with(|| self.key(a.3, a.4).cmp(self.key(b.3, b.4)))
        });
        let mut batch = WriteBatch::default();
        let mut current: Option<(u32, &ColumnFamily)> = None;
        for (state, _, row, start, key_len, end) in rows {
            let cf = match current {
                Some((s, cf)) if s == state => cf,
                _ => {
                    let cf = column_family(db, columns, state)?;
                    current = Some((state, cf));
                    cf
                }
            };
            let key = self.key(start, key_len);
            let value = self.bytes.get(start + key_len..end).unwrap_or_default();
            match row {
                Row::Present => batch.put_cf(cf, key, value),
                Row::Absent => batch.delete_cf(cf, key),
                Row::Pending => batch.merge_cf(cf, key, value),
            }
            if batch.size_in_bytes() >= OUT_BATCH {
                write(std::mem::take(&mut batch))?;
            }
        }
        if batch.is_empty() {
            Ok(())
        } else {
            write(batch)
        }
    }
}

/// The first 16 bytes of `key` as a big-endian number, zeros after a shorter key: keys whose
/// heads differ are in the order of their heads. (A timer's row begins with its key group,
/// domain and timestamp: 11 bytes.)
fn key_head(key: &[u8]) -> u128 {
    let mut head = [0u8; 16];
    let n = key.len().min(16);
    head[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(head)
}

/// The size of one write batch of a bulk write: rows written back, copied or migrated in, a
/// rebuilt time order.
pub(crate) const OUT_BATCH: usize = 4 << 20;

/// The column family of a state.
fn column_family<'a>(db: &'a DB, columns: &[Column], state: u32) -> Result<&'a ColumnFamily> {
    let name = &columns
        .get(state as usize)
        .ok_or(Error::UnknownState {
            backend: "rocksdb",
            id: state,
        })?
        .name;
    db.cf_handle(name).ok_or_else(|| Error::Backend {
        backend: "rocksdb",
        message: format!("column family `{name}` is missing"),
    })
}

impl RocksDbBackend {
    /// Fails once a write-back has failed.
    fn healthy(&self) -> Result<()> {
        if self.poisoned.get() {
            return Err(Error::Backend {
                backend: "rocksdb",
                message: "cached rows could not be written to RocksDB earlier; the state is \
                          incomplete: restore it from the last checkpoint"
                    .into(),
            });
        }
        Ok(())
    }

    fn rows_mut(&self) -> Result<std::cell::RefMut<'_, RowCache>> {
        self.rows.try_borrow_mut().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "re-entrant row cache use".into(),
        })
    }

    fn column(&self, state: StateId) -> Result<&Column> {
        self.columns
            .get(state.0 as usize)
            .ok_or(Error::UnknownState {
                backend: "rocksdb",
                id: state.0,
            })
    }

    fn row_cache_on(&self) -> bool {
        self.options.row_cache_size > 0
    }

    /// The row cache's counters.
    #[must_use]
    pub fn row_cache_stats(&self) -> RowCacheStats {
        self.rows
            .try_borrow()
            .map(|rows| rows.stats())
            .unwrap_or_default()
    }

    /// Makes RocksDB hold every row of `state` before it is read as a whole (scans): the
    /// cache holds dirty rows of write-back states only.
    fn stored_in_rocksdb(&self, state: StateId) -> Result<()> {
        if self.column(state)?.write_back {
            self.write_back_rows()?;
        }
        Ok(())
    }

    /// Drops the cached row at an internal key (its RocksDB row is being deleted).
    fn forget_row(&self, state: StateId, internal: &[u8]) -> Result<()> {
        let mut rows = self.rows_mut()?;
        let hash = rows.hash(state.0, internal);
        if let Some(i) = rows.find(hash, state.0, internal) {
            rows.set(i, Row::Absent, false, &[]);
        }
        Ok(())
    }

    /// Writes the rows `take` hands out of the cache to RocksDB in key order ([`OutRows`]); a
    /// failure poisons the backend (the rows have left the cache's dirty set).
    fn write_out(&self, take: impl FnOnce(&mut RowCache, &mut dyn FnMut(&Slot))) -> Result<()> {
        let mut out = OutRows::default();
        take(&mut *self.rows_mut()?, &mut |slot| out.add(slot));
        self.write_rows(out)
    }

    /// Writes rows taken out of the cache or the timers' buffer, in key order; a failure
    /// poisons the backend (the rows are gone from where they were kept).
    fn write_rows(&self, out: OutRows) -> Result<()> {
        let result = out.write(&self.db, &self.columns, &mut |batch| {
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| db_error(&e))
        });
        if result.is_err() {
            self.poisoned.set(true);
        }
        result
    }

    /// Writes every dirty cached row to RocksDB, in key order. Before anything reads RocksDB
    /// as a whole: scans of write-back states, checkpoints, flushes.
    fn write_back_rows(&self) -> Result<()> {
        self.healthy()?;
        self.write_time_rows()?;
        if self.rows_mut()?.stats().dirty_rows == 0 {
            return Ok(());
        }
        self.write_out(|rows, write| rows.write_back(write))
    }

    /// Writes the pending rows of the time-ordered columns, in key order.
    fn write_time_rows(&self) -> Result<()> {
        let out = {
            let mut pending = self
                .time_rows
                .try_borrow_mut()
                .map_err(|_| Error::Backend {
                    backend: "rocksdb",
                    message: "re-entrant use of the timers' rows".into(),
                })?;
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::take(&mut *pending)
        };
        self.write_rows(out)
    }

    /// Evicts rows down to the cache's bound, writing the dirty ones back. Called only under
    /// `&mut self`, when no read's bytes can still be borrowed.
    fn evict_rows(&self) -> Result<()> {
        let (over, too_dirty, capacity) = {
            let rows = self.rows_mut()?;
            (rows.over(), rows.too_dirty(), rows.capacity())
        };
        if over {
            // A sixteenth below the bound, so evictions come in batches.
            self.write_out(|rows, write| rows.evict_to(capacity - capacity / 16, write))?;
        }
        if too_dirty && self.rows_mut()?.too_dirty() {
            // Keeps the next checkpoint's synchronous write-back within the dirty bound.
            self.write_out(|rows, write| rows.write_back(write))?;
        }
        Ok(())
    }

    /// The value at `(key, user_key)` through the row cache, as a pointer into the cached
    /// row: a miss reads RocksDB and caches what it found (or that it found nothing).
    fn cached(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<*const [u8]>> {
        self.healthy()?;
        let cf = self.cf(state)?;
        self.reads.set(self.reads.get() + 1);
        self.with_key(key, user_key, |k| {
            let mut rows = self.rows_mut()?;
            let hash = rows.hash(state.0, k);
            if let Some(i) = rows.find(hash, state.0, k) {
                let (row, value) = match rows.slot(i) {
                    Some(slot) => (slot.row(), slot.value() as *const [u8]),
                    None => (Row::Absent, &[] as *const [u8]),
                };
                match row {
                    Row::Present => {
                        rows.touch(i);
                        return Ok(Some(value));
                    }
                    Row::Absent => {
                        rows.touch(i);
                        return Ok(None);
                    }
                    Row::Pending => {
                        // Appends to a row the cache never read: RocksDB merges them into
                        // what it holds, and the row is read whole below.
                        if let Some(slot) = rows.slot(i) {
                            self.db
                                .merge_cf_opt(cf, k, slot.value(), &self.write_opts)
                                .map_err(|e| db_error(&e))?;
                        }
                        // Allowed under `&self`: a pending row's bytes were never handed out.
                        rows.remove(i);
                    }
                }
            }
            rows.count_miss();
            let pinned = self
                .db
                .get_pinned_cf_opt(cf, k, &self.read_opts)
                .map_err(|e| db_error(&e))?;
            let i = match &pinned {
                Some(v) => rows.insert(hash, state.0, k, Row::Present, false, v),
                None => rows.insert(hash, state.0, k, Row::Absent, false, &[]),
            };
            Ok(match rows.slot(i) {
                Some(slot) if slot.row() == Row::Present => Some(slot.value() as *const [u8]),
                _ => None,
            })
        })
    }

    /// A write through the row cache: `row` and `value` are what the row becomes (for
    /// [`Row::Pending`], the operand appended to it).
    fn write_row(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        row: Row,
        value: &[u8],
    ) -> Result<()> {
        self.wrote();
        self.healthy()?;
        let cf = self.cf(state)?;
        let write_back = self.column(state)?.write_back;
        self.with_key(key, user_key, |k| {
            self.write_at(state, cf, write_back, k, row, value)
        })?;
        self.evict_rows()
    }

    /// Writes a row at an internal key: to RocksDB unless the state is written back, and to
    /// the row cache.
    fn write_at(
        &self,
        state: StateId,
        cf: &ColumnFamily,
        write_back: bool,
        k: &[u8],
        row: Row,
        value: &[u8],
    ) -> Result<()> {
        if !write_back {
            match row {
                Row::Present => self.db.put_cf_opt(cf, k, value, &self.write_opts),
                Row::Absent => self.db.delete_cf_opt(cf, k, &self.write_opts),
                Row::Pending => self.db.merge_cf_opt(cf, k, value, &self.write_opts),
            }
            .map_err(|e| db_error(&e))?;
        }
        let mut rows = self.rows_mut()?;
        let hash = rows.hash(state.0, k);
        match (rows.find(hash, state.0, k), row) {
            // A written-through append leaves a row only RocksDB knows whole.
            (Some(i), Row::Pending) if !write_back => rows.remove(i),
            (None, Row::Pending) if !write_back => {}
            (Some(i), Row::Pending) => rows.append(i, value),
            (Some(i), row) => rows.set(i, row, write_back, value),
            // A written-through row the cache does not hold stays out of it until it is
            // read: bulk writes of map entries do not churn the cache.
            (None, _) if !write_back => {}
            (None, row) => {
                rows.insert(hash, state.0, k, row, write_back, value);
            }
        }
        Ok(())
    }

    fn put_row(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        if self.row_cache_on() {
            return self.write_row(state, key, user_key, Row::Present, value);
        }
        self.wrote();
        let cf = self.cf(state)?;
        self.with_key(key, user_key, |k| {
            self.db
                .put_cf_opt(cf, k, value, &self.write_opts)
                .map_err(|e| db_error(&e))
        })
    }

    fn delete_row(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        if self.row_cache_on() {
            return self.write_row(state, key, user_key, Row::Absent, &[]);
        }
        self.wrote();
        let cf = self.cf(state)?;
        self.with_key(key, user_key, |k| {
            self.db
                .delete_cf_opt(cf, k, &self.write_opts)
                .map_err(|e| db_error(&e))
        })
    }

    /// Empties one column family.
    fn clear_column(&mut self, state: StateId) -> Result<()> {
        self.wrote();
        // Pending rows in time order go to the column family before it is dropped.
        self.write_time_rows()?;
        self.rows.get_mut().forget(Some(state.0));
        // A restore clears its states first: no tombstones are left behind.
        let name = self.column(state)?.name.clone();
        recreate_cf(self, &name)
    }

    /// The time-ordered column of `state` when it is a timer state kept in time order.
    fn time_order(&self, state: StateId) -> Result<Option<StateId>> {
        Ok(self.column(state)?.by_time.map(StateId))
    }

    /// Writes (or deletes) a timer's row in its state's time-ordered column `by_time`: into
    /// the buffer of pending rows, written in key order before anything reads the column (or
    /// when it is full); through at once when the write-ahead log is on, so that a timer is as
    /// durable as every other write when the call returns.
    fn timer_row(&mut self, by_time: StateId, key: &[u8], user_key: &[u8], row: Row) -> Result<()> {
        self.healthy()?;
        self.wrote();
        let (mut k, mut v) = (
            std::mem::take(&mut self.time_key),
            std::mem::take(&mut self.time_value),
        );
        let result = timers::row_key(&mut k, key, user_key).and_then(|()| {
            timers::row_value(&mut v, key);
            let present = row != Row::Absent;
            if self.options.write_ahead_log {
                let cf = self.cf(by_time)?;
                if present {
                    self.db.put_cf_opt(cf, &k, &v, &self.write_opts)
                } else {
                    self.db.delete_cf_opt(cf, &k, &self.write_opts)
                }
                .map_err(|e| db_error(&e))
            } else {
                let (row, value) = if present {
                    (Row::Present, v.as_slice())
                } else {
                    (Row::Absent, &[][..])
                };
                self.time_rows.get_mut().push(by_time.0, row, &k, value);
                Ok(())
            }
        });
        (self.time_key, self.time_value) = (k, v);
        result?;
        // Written in key order when the buffer is full (or before a read of the column):
        // each of a memtable's inserts then starts where the one before it ended.
        if self.time_rows.get_mut().bytes.len() >= OUT_BATCH {
            self.write_time_rows()?;
        }
        Ok(())
    }

    /// Whether the timer `(key, user_key)` of a timer state kept in time order is registered.
    fn timer_registered(&self, by_time: StateId, key: &[u8], user_key: &[u8]) -> Result<bool> {
        self.healthy()?;
        self.write_time_rows()?;
        let cf = self.cf(by_time)?;
        self.reads.set(self.reads.get() + 1);
        let mut row = self.key_buf.try_borrow_mut().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "re-entrant key buffer use".into(),
        })?;
        timers::row_key(&mut row, key, user_key)?;
        let found = self
            .db
            .get_pinned_cf_opt(cf, row.as_slice(), &self.read_opts)
            .map_err(|e| db_error(&e))?;
        Ok(found.is_some())
    }

    /// Visits the timers of `key` of a timer state kept in time order, in user-key order.
    fn key_timers(
        &self,
        by_time: StateId,
        key: &[u8],
        visit: &mut dyn FnMut(&[u8], &timers::Parts<'_>) -> Result<()>,
    ) -> Result<()> {
        self.healthy()?;
        self.write_time_rows()?;
        let cf = self.cf(by_time)?;
        self.reads.set(self.reads.get() + 1);
        let name = self.column(by_time)?.name.as_str();
        timers::for_each_of_key(&self.db, cf, name, key, visit)
    }
}

impl StateBackend for RocksDbBackend {
    fn name(&self) -> &'static str {
        "rocksdb"
    }

    fn register(
        &mut self,
        operator: &OperatorDescriptor,
        state: &StateDescriptor,
    ) -> Result<StateId> {
        validate_name("operator", operator.name)?;
        validate_name("state", state.name)?;
        let name = format!("{}.{}", operator.name, state.name);
        if let Some(i) = self.columns.iter().position(|c| c.name == name) {
            return Ok(StateId(i as u32));
        }
        if self.db.cf_handle(&name).is_none() {
            let opts = cf_options(&self.options, &self.cache, &mut self.filters, &name);
            self.db.create_cf(&name, &opts).map_err(|e| db_error(&e))?;
        }
        let id = u32::try_from(self.columns.len()).map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: "too many states".into(),
        })?;
        // Timers kept in memory are written back too: a job registers and deletes them all the
        // time and lists a key's timers rarely (a list writes the cache back first, as any scan
        // of a write-back state does). Timers in time order never reach the row cache.
        let user_keys = state.has_user_key();
        let timers = state.kind == StateKind::Timers;
        let write_back = !self.options.write_ahead_log && (!user_keys || timers);
        let by_time_name = format!("{name}#by-time");
        let by_time = if timers && !self.options.timers_in_memory {
            // Timers under their keys (a database that kept them in memory, or an earlier
            // layout) move into the time order.
            settle_in_time_order(self, &name, &by_time_name)?;
            Some((id + 1, by_time_name))
        } else {
            if timers {
                // Timers kept in time order move under their keys.
                settle_under_keys(self, &name, &by_time_name)?;
            }
            None
        };
        self.columns.push(Column {
            name,
            write_back,
            user_keys,
            by_time: by_time.as_ref().map(|(i, _)| *i),
            timers,
        });
        if let Some((_, name)) = by_time {
            // Written through: a refill reads RocksDB at once, without writing the cache back
            // (frequent small write-backs cost more than the writes they save).
            self.columns.push(Column {
                name,
                write_back: false,
                user_keys: false,
                by_time: None,
                timers: false,
            });
        }
        Ok(StateId(id))
    }

    fn get(&self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<Option<&[u8]>> {
        if let Some(by_time) = self.time_order(state)? {
            // A timer stores no value.
            return Ok(self
                .timer_registered(by_time, key, user_key)?
                .then_some(&[][..]));
        }
        if self.row_cache_on() {
            let value = self.cached(state, key, user_key)?;
            // SAFETY: the pointer is into a cached row's byte buffer. A row's buffer is
            // replaced, grown or freed only by methods that take `&mut self` (writes, evictions,
            // `release_reads`, `clear_state`, restores) or, under `&self`, for pending rows,
            // whose bytes no read hands out; adding rows under `&self` moves the slots, not
            // their buffers. So the bytes stay valid for the `&self` borrow returned here.
            #[allow(unsafe_code)]
            return Ok(value.map(|v| unsafe { &*v }));
        }
        let pinned = self.pinned(state, key, user_key)?;
        let Some(pinned) = pinned else {
            return Ok(None);
        };
        // SAFETY: the slice's bytes are owned by RocksDB (a pinned block or memtable entry, or
        // the pinnable slice's own heap buffer), not by the `DBPinnableSlice` value, so moving
        // that value into `pins` does not move them. They stay valid until the value is dropped,
        // which happens only in `release_reads` or when the backend drops (`pins` drops before
        // `db`). `release_reads` takes `&mut self`, so no `&self` borrow, and hence no slice
        // returned here with that borrow's lifetime, is alive then. The `'static` lifetime only
        // lets the value live in `pins`; it never escapes the backend.
        #[allow(unsafe_code)]
        let pinned: DBPinnableSlice<'static> = unsafe { std::mem::transmute(pinned) };
        let bytes: *const [u8] = &*pinned;
        self.pins()?.slices.push(pinned);
        // SAFETY: `bytes` points into memory kept alive by the slice just stored in `pins`, as
        // argued above, for at least the lifetime of `&self`.
        #[allow(unsafe_code)]
        Ok(Some(unsafe { &*bytes }))
    }

    fn put(&mut self, state: StateId, key: &[u8], user_key: &[u8], value: &[u8]) -> Result<()> {
        if let Some(by_time) = self.time_order(state)? {
            return self.timer_row(by_time, key, user_key, Row::Present);
        }
        self.put_row(state, key, user_key, value)
    }

    fn merge(&mut self, state: StateId, key: &[u8], user_key: &[u8], operand: &[u8]) -> Result<()> {
        if self.row_cache_on() {
            return self.write_row(state, key, user_key, Row::Pending, operand);
        }
        self.wrote();
        let cf = self.cf(state)?;
        self.with_key(key, user_key, |k| {
            self.db
                .merge_cf_opt(cf, k, operand, &self.write_opts)
                .map_err(|e| db_error(&e))
        })
    }

    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> Result<()> {
        if let Some(by_time) = self.time_order(state)? {
            return self.timer_row(by_time, key, user_key, Row::Absent);
        }
        self.delete_row(state, key, user_key)
    }

    fn scan<'a>(&'a self, state: StateId, key: &[u8]) -> Result<EntryIter<'a>> {
        if let Some(by_time) = self.time_order(state)? {
            // A key's timers are few: copied out at once, into a chunk kept in the pins.
            let mut chunk = Vec::new();
            let mut entries: Vec<(*const [u8], *const [u8])> = Vec::new();
            let mut user_key = Vec::new();
            self.key_timers(by_time, key, &mut |_, p| {
                p.user_key(&mut user_key);
                entries.push(copy_entry(self, &mut chunk, &user_key, &[])?);
                Ok(())
            })?;
            if !chunk.is_empty() {
                self.pins()?.scanned.push(chunk);
            }
            // SAFETY: the pointers are into chunks' heap buffers, which `copy_entry` never
            // reallocates once a slice into them exists and which now sit in the backend's pins
            // (moving a `Vec` does not move its buffer). Pins are freed only by `release_reads`
            // (under `&mut self`, when no borrow for `'a` is alive) or when the backend drops.
            #[allow(unsafe_code)]
            return Ok(Box::new(
                entries.into_iter().map(|(k, v)| Ok(unsafe { (&*k, &*v) })),
            ));
        }
        self.stored_in_rocksdb(state)?;
        let cf = self.cf(state)?;
        self.reads.set(self.reads.get() + 1);
        let prefix = self.with_key(key, &[], |k| Ok(k.to_vec()))?;
        let it = self.prefix_iter(cf, &prefix);
        Ok(Box::new(ScanIter {
            backend: self,
            it,
            prefix,
            chunk: Vec::new(),
            started: false,
            done: false,
        }))
    }

    fn read(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        reader: &mut ValueReader<'_>,
    ) -> Result<()> {
        if let Some(by_time) = self.time_order(state)? {
            let registered = self.timer_registered(by_time, key, user_key)?;
            return reader(registered.then_some(&[][..]));
        }
        if self.row_cache_on() {
            let value = self.cached(state, key, user_key)?;
            // SAFETY: as in `get`; the bytes are only used during the call.
            #[allow(unsafe_code)]
            return reader(value.map(|v| unsafe { &*v }));
        }
        let pinned = self.pinned(state, key, user_key)?;
        reader(pinned.as_deref())
    }

    fn count(&self, state: StateId, key: &[u8]) -> Result<usize> {
        if let Some(by_time) = self.time_order(state)? {
            let mut n = 0;
            self.key_timers(by_time, key, &mut |_, _| {
                n += 1;
                Ok(())
            })?;
            return Ok(n);
        }
        self.stored_in_rocksdb(state)?;
        let cf = self.cf(state)?;
        self.reads.set(self.reads.get() + 1);
        self.with_key(key, &[], |prefix| {
            let mut it = self.prefix_iter(cf, prefix);
            let mut n = 0;
            while it.key().is_some_and(|k| k.starts_with(prefix)) {
                n += 1;
                it.next();
            }
            it.status().map_err(|e| db_error(&e))?;
            Ok(n)
        })
    }

    fn delete_key(&mut self, state: StateId, key: &[u8]) -> Result<()> {
        if let Some(by_time) = self.time_order(state)? {
            self.wrote();
            let cf = self.cf(by_time)?;
            let mut batch = WriteBatch::default();
            self.key_timers(by_time, key, &mut |row, _| {
                batch.delete_cf(cf, row);
                Ok(())
            })?;
            return self
                .db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| db_error(&e));
        }
        let column = self.column(state)?;
        if self.row_cache_on() && column.write_back && !column.user_keys {
            // A key of a state without user keys is one row.
            return self.write_row(state, key, &[], Row::Absent, &[]);
        }
        // The key's rows in the cache reach RocksDB first, so the deletes below find them.
        self.stored_in_rocksdb(state)?;
        self.wrote();
        let cf = self.cf(state)?;
        // Point deletes of the key's entries, not a range delete: range tombstones pile up in
        // memtables and slow every later read until compaction removes them.
        self.with_key(key, &[], |prefix| {
            let mut it = self.prefix_iter(cf, prefix);
            let mut batch = WriteBatch::default();
            while let Some(k) = it.key() {
                if !k.starts_with(prefix) {
                    break;
                }
                batch.delete_cf(cf, k);
                self.forget_row(state, k)?;
                it.next();
            }
            it.status().map_err(|e| db_error(&e))?;
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| db_error(&e))
        })
    }

    fn for_each_entry(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        if let Some(by_time) = self.time_order(state)? {
            self.healthy()?;
            self.write_time_rows()?;
            let cf = self.cf(by_time)?;
            let name = self.column(by_time)?.name.as_str();
            return timers::visit_all(&self.db, cf, name, visit);
        }
        self.stored_in_rocksdb(state)?;
        let cf = self.cf(state)?;
        let name = self.column_family_name(state).unwrap_or("?");
        visit_column(&self.db, cf, ReadOptions::default(), name, visit)
    }

    fn release_reads(&mut self) {
        let pins = self.pins.get_mut();
        pins.slices.clear();
        pins.scanned.clear();
        // Reads may have cached rows past the bound; a failure poisons the backend, and the
        // next operation reports it.
        let _ = self.evict_rows();
    }

    fn clear_state(&mut self, state: StateId) -> Result<()> {
        if let Some(by_time) = self.column(state)?.by_time {
            self.clear_column(StateId(by_time))?;
        }
        self.clear_column(state)
    }

    fn ordered_timers(
        &self,
        state: StateId,
        key_group: u16,
        domain: u8,
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<bool> {
        let Some(by_time) = self.column(state)?.by_time else {
            return Ok(false);
        };
        if limit == 0 {
            return Ok(true);
        }
        let by_time = StateId(by_time);
        let mut prefix = key_group.to_be_bytes().to_vec();
        prefix.push(domain);
        // One seek, straight past `after`: the deletions of the timers fired before it lie
        // between the group's start and `after`, and a seek to the start would step over
        // every one of them on every refill.
        let mut from = prefix.clone();
        from.extend_from_slice(after.unwrap_or_default());
        // The time-ordered column is not cached: once its pending rows are written, RocksDB
        // holds every timer. Only rows after `from` can change what this reads: the
        // deletions of fired timers (all before it) stay pending, and go to RocksDB later in
        // larger batches, where each key group's deletions follow one another in key order.
        let pending = self
            .time_rows
            .try_borrow()
            .map_or(true, |rows| rows.pending_after(by_time.0, &from));
        if pending {
            self.write_time_rows()?;
        }
        let cf = self.cf(by_time)?;
        self.reads.set(self.reads.get() + 1);
        let mut it = self.prefix_iter_from(cf, &prefix, &from);
        if after.is_some() && it.key() == Some(from.as_slice()) {
            it.next();
        }
        let mut n = 0;
        while n < limit {
            let Some(k) = it.key() else {
                break;
            };
            let Some(timer) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            visit(timer)?;
            n += 1;
            it.next();
        }
        it.status().map_err(|e| db_error(&e))?;
        Ok(true)
    }

    fn stamps_ttl(&self, state: StateId) -> bool {
        // Values are stored as written; TTL state is bound through `TtlBackend`.
        let _ = state;
        false
    }

    fn watermark(&self) -> Option<i64> {
        // Event time is kept by the operator instance and by a TTL wrapper, not here.
        None
    }

    fn set_watermark(&mut self, millis: i64) {
        let _ = millis;
    }
}

impl Snapshots for RocksDbBackend {
    fn for_each_stored(&self, state: StateId, visit: &mut EntryVisitor<'_>) -> Result<()> {
        // Values are stored as written: a TTL wrapper above adds and reads the stamps.
        self.for_each_entry(state, visit)
    }

    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        self.put(state, key, user_key, value)
    }

    fn track_changes(&mut self, on: bool) -> bool {
        // Incremental checkpoints of RocksDB are native ones: shared SST files, not a change
        // log. Canonical checkpoints of RocksDB are full.
        let _ = on;
        false
    }

    fn drain_changes(&mut self, state: StateId, visit: &mut ChangeVisitor<'_>) -> Result<()> {
        let _ = (state, visit);
        Err(Error::Unsupported {
            backend: "rocksdb",
            what: "change tracking: its canonical checkpoints are full snapshots (incremental ones are native)".into(),
        })
    }

    /// A RocksDB checkpoint (a memtable flush and hard links to the SST files) next to the
    /// database, opened read-only by whichever thread reads the view, deleted when the view
    /// drops.
    fn detach(&self) -> Result<Option<Box<dyn DetachedState>>> {
        self.write_back_rows()?;
        let parent = self.path.parent().unwrap_or(&self.path);
        let dir = tempfile::Builder::new()
            .prefix(&capture_prefix(&self.path))
            .tempdir_in(parent)
            .map_err(|e| Error::Io {
                path: parent.to_owned(),
                source: e,
            })?;
        let target = dir.path().join("db");
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| db_error(&e))?;
        // A log size of 0 flushes the memtables first: with the write-ahead log off, that is
        // the only way their contents reach the checkpoint.
        cp.create_checkpoint_with_log_size(&target, 0)
            .map_err(|e| db_error(&e))?;
        Ok(Some(Box::new(Detached {
            db: RefCell::new(None),
            names: self.columns.iter().map(|c| c.name.clone()).collect(),
            time_orders: self.columns.iter().map(|c| c.by_time).collect(),
            options: self.options.clone(),
            target,
            _dir: dir,
        })))
    }

    /// A RocksDB checkpoint (a memtable flush and hard links) next to the database; the
    /// checkpoint storage shares its SST files between checkpoints. Restore it with
    /// [`restore_native`].
    fn native_checkpoint(&mut self) -> Result<Option<NativeFiles>> {
        self.take_native().map(Some)
    }

    fn restore_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        self.open_native(restore)
    }
}

impl ExpiryHooks for RocksDbBackend {
    fn visit_some(
        &self,
        state: StateId,
        cursor: &mut u64,
        limit: usize,
        visit: &mut EntryVisitor<'_>,
    ) -> Result<bool> {
        // Expired entries go in compactions (the expiry filter), not in steps.
        let _ = (state, cursor, limit, visit);
        Ok(false)
    }

    /// Compactions drop entries whose every part has expired; a list with live elements is
    /// kept whole (reads drop its expired elements).
    fn install_expiry_filter(&mut self, state: StateId, filter: ExpiryFilter) -> Result<bool> {
        let name = &self
            .columns
            .get(state.0 as usize)
            .ok_or(Error::UnknownState {
                backend: "rocksdb",
                id: state.0,
            })?
            .name;
        let slot = self.filters.entry(name.clone()).or_default();
        let mut guard = slot.write().map_err(|_| Error::Backend {
            backend: "rocksdb",
            message: format!("the ttl filter of `{name}` is poisoned"),
        })?;
        *guard = Some(filter);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_split_back() {
        let mut buf = Vec::new();
        let mut key = Vec::new();
        for len in [0usize, 1, 127, 128, 300] {
            let k: Vec<u8> = [0u8, 5]
                .into_iter()
                .chain((0..len).map(|i| i as u8))
                .collect();
            RocksDbBackend::internal_key(&mut buf, &k, b"user").unwrap();
            let at = split_internal(&buf, &mut key).unwrap();
            assert_eq!(key, k);
            assert_eq!(&buf[at..], b"user");
        }
        assert!(split_internal(&[0, 1, 0x85], &mut key).is_none());
    }

    #[test]
    fn key_heads_order_keys_as_their_bytes_do() {
        let keys: [&[u8]; 11] = [
            b"",
            b"\0",
            b"a",
            b"a\0",
            b"a\0\0\0\0\0\0\0\x01",
            b"a\0x",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefgi",
            b"abcdefghabcdefgh",
            b"abcdefghabcdefgh\0",
        ];
        for a in keys {
            for b in keys {
                // Heads that differ order as the keys; equal heads leave it to the bytes.
                if key_head(a) != key_head(b) {
                    assert_eq!(key_head(a).cmp(&key_head(b)), a.cmp(b), "{a:?} {b:?}");
                }
            }
        }
        assert_eq!(
            key_head(b"abcdefghabcdefgh"),
            key_head(b"abcdefghabcdefgh\xff")
        );
    }

    #[test]
    fn prefix_end_is_the_next_prefix() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}

/// RocksDB's own record of the options in force: the newest `OPTIONS-*` file of the database,
/// parsed into sections (`DBOptions`, `CFOptions "<cf>"`, `TableOptions/BlockBasedTable "<cf>"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveOptions {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl EffectiveOptions {
    /// The value of `key` in the section named `section` (for example `DBOptions`, or
    /// `CFOptions "op.state"`).
    #[must_use]
    pub fn value(&self, section: &str, key: &str) -> Option<&str> {
        self.sections
            .iter()
            .find(|(s, _)| s == section)
            .and_then(|(_, kv)| kv.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v.as_str())
    }

    fn parse(text: &str) -> Self {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                sections.push((name.to_owned(), Vec::new()));
            } else if let (Some((k, v)), Some((_, kv))) =
                (line.split_once('='), sections.last_mut())
            {
                kv.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        Self { sections }
    }
}

impl RocksDbBackend {
    /// The options RocksDB recorded for this database (its latest OPTIONS file), to check that
    /// what was configured is what runs.
    ///
    /// # Errors
    ///
    /// When the OPTIONS file cannot be found or read.
    pub fn effective_options(&self) -> Result<EffectiveOptions> {
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        let mut newest: Option<(u64, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix("OPTIONS-"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            if newest.as_ref().is_none_or(|(m, _)| n > *m) {
                newest = Some((n, entry.path()));
            }
        }
        let (_, path) = newest.ok_or_else(|| Error::Backend {
            backend: "rocksdb",
            message: format!("no OPTIONS file in `{}`", self.path.display()),
        })?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io { path, source: e })?;
        Ok(EffectiveOptions::parse(&text))
    }

    /// The block cache's capacity as RocksDB reports it.
    ///
    /// # Errors
    ///
    /// When RocksDB cannot report the property.
    pub fn block_cache_capacity(&self) -> Result<u64> {
        let cf = match self.columns.first() {
            Some(c) => self.cf_by_name(&c.name)?,
            None => {
                return Ok(self.options.block_cache_size as u64);
            }
        };
        self.db
            .property_int_value_cf(cf, properties_block_cache_capacity())
            .map(Option::unwrap_or_default)
            .map_err(|e| db_error(&e))
    }
}

fn properties_block_cache_capacity() -> &'static rocksdb::properties::PropName {
    rocksdb::properties::BLOCK_CACHE_CAPACITY
}
