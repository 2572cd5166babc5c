//! Native RocksDB checkpoints in the checkpoint storage, and restoring them.
//!
//! A native checkpoint is a RocksDB checkpoint: a memtable flush and hard links to the live
//! files, taken in the synchronous step. The checkpoint storage then moves the files in,
//! storing every SST file once under `shared/` for all the checkpoints that list it (SST files
//! never change once written), so a checkpoint after a small change writes only the new SST
//! files and RocksDB's small manifest files.
//!
//! A shared SST file needs a name no other file ever gets. RocksDB numbers files uniquely
//! within one database's history, so the name is `<lineage>-<file>`, where the lineage is an
//! identity statewright keeps in the database directory (`STATEWRIGHT-LINEAGE`). A restored
//! database starts a new lineage (it will write files with numbers its source wrote too, after
//! the checkpoint), and remembers the shared names of the files it was restored with, so its
//! first checkpoint shares them instead of writing them again.

use std::collections::HashMap;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use rocksdb::{DB, WriteBatch};
use statewright_core::backend::{
    MigrationProgress, NativeFileSpec, NativeFiles, NativePart, NativeRestore, NativeSource,
};
use statewright_core::checkpoint::{CheckpointStorage, RestorePoint};
use statewright_core::keygroup::KeyGroupRange;
use statewright_core::ttl;
use statewright_core::{
    Bound, Corruption, Error, Result, StateBackend, StateKind, StatefulOperator,
};

use crate::{RocksDbBackend, RocksDbOptions, capture_prefix, db_error};

const LINEAGE: &str = "STATEWRIGHT-LINEAGE";

/// The backend name native snapshots record.
pub(crate) const BACKEND: &str = "rocksdb";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// The identity under which a database's SST files are shared, and the shared names of the
/// files it was restored with.
#[derive(Debug, Clone)]
pub(crate) struct Lineage {
    id: String,
    restored: HashMap<String, String>,
}

impl Lineage {
    /// Reads the lineage of the database at `db`, starting a new one when it has none.
    pub(crate) fn load_or_create(db: &Path) -> Result<Self> {
        let path = db.join(LINEAGE);
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let lineage = Self {
                    id: new_id(),
                    restored: HashMap::new(),
                };
                lineage.write(db)?;
                Ok(lineage)
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn parse(path: &Path, text: &str) -> Result<Self> {
        let malformed = |line: &str| Error::Backend {
            backend: BACKEND,
            message: format!("`{}` has a malformed line `{line}`", path.display()),
        };
        let mut lines = text.lines();
        let id = lines.next().unwrap_or_default().trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed(&id));
        }
        let mut restored = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (local, shared) = line.split_once(' ').ok_or_else(|| malformed(line))?;
            restored.insert(local.to_owned(), shared.to_owned());
        }
        Ok(Self { id, restored })
    }

    fn write(&self, db: &Path) -> Result<()> {
        let mut text = format!("{}\n", self.id);
        let mut files: Vec<_> = self.restored.iter().collect();
        files.sort();
        for (local, shared) in files {
            text.push_str(&format!("{local} {shared}\n"));
        }
        let tmp = db.join(format!("{LINEAGE}.tmp"));
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        let path = db.join(LINEAGE);
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// The shared name of the database's SST file `file`.
    fn shared_name(&self, file: &str) -> String {
        self.restored
            .get(file)
            .cloned()
            .unwrap_or_else(|| format!("{}-{file}", self.id))
    }
}

/// 128 bits no other database gets: the process's random hash keys over the time, the process
/// and a counter.
fn new_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(count);
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

impl RocksDbBackend {
    /// A RocksDB checkpoint in a new directory next to the database (removed stale on open).
    pub(crate) fn take_native(&self) -> Result<NativeFiles> {
        self.write_back_rows()?;
        let parent = self.path.parent().unwrap_or(&self.path);
        // A fresh name: RocksDB creates the directory itself.
        let dir = tempfile::Builder::new()
            .prefix(&capture_prefix(&self.path))
            .tempdir_in(parent)
            .map_err(io(parent))?;
        let target = dir.path().to_owned();
        dir.close().map_err(io(&target))?;
        let cp = rocksdb::checkpoint::Checkpoint::new(&self.db).map_err(|e| db_error(&e))?;
        // A log size of 0 flushes the memtables first: with the write-ahead log off, that is
        // the only way their contents reach the checkpoint.
        if let Err(e) = cp.create_checkpoint_with_log_size(&target, 0) {
            let _ = fs::remove_dir_all(&target);
            return Err(db_error(&e));
        }
        let listed = (|| {
            let mut specs = Vec::new();
            for entry in fs::read_dir(&target).map_err(io(&target))? {
                let entry = entry.map_err(io(&target))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let shared_as = name
                    .ends_with(".sst")
                    .then(|| self.lineage.shared_name(&name));
                specs.push(NativeFileSpec { name, shared_as });
            }
            specs.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(specs)
        })();
        match listed {
            // From here on the directory is the value's to remove.
            Ok(specs) => Ok(NativeFiles::new(BACKEND, target, specs)),
            Err(e) => {
                let _ = fs::remove_dir_all(&target);
                Err(e)
            }
        }
    }
}

/// Restores an operator instance owning key groups `range` from a checkpoint into a new
/// database at `path` (which must not exist): a shortcut for opening a [`RocksDbBackend`] at
/// `path`, binding `op` to it and [`Bound::restore_from`], the one restore path.
///
/// A native checkpoint of exactly these key groups is restored by hard links to the stored
/// files: its time does not depend on the state's size. When the parallelism changed, the
/// snapshot overlapping the range most becomes the database, the key groups outside the range
/// are deleted (range deletions), and the entries of the range in the other snapshots are
/// copied in. A canonical checkpoint is read as into any backend. An operator with TTL state
/// needs the [`TtlBackend`](statewright_core::TtlBackend) wrapper: bind
/// `TtlBackend::new(RocksDbBackend::open(path, options)?)` and call [`Bound::restore_from`].
///
/// # Errors
///
/// As [`Bound::restore_from`]; [`Error::Incompatible`] when `path` exists. A failed restore
/// removes what it created at `path`.
pub fn restore_native<Op: StatefulOperator>(
    op: Op,
    storage: &CheckpointStorage,
    point: RestorePoint,
    range: KeyGroupRange,
    path: impl Into<PathBuf>,
    options: RocksDbOptions,
) -> Result<Bound<Op, RocksDbBackend>> {
    restore_native_with_progress(op, storage, point, range, path, options, &mut |_| {})
}

/// [`restore_native`], calling `progress` while declared migrations rewrite entries (every
/// 10,000 entries and when a state is done).
///
/// # Errors
///
/// As [`restore_native`].
pub fn restore_native_with_progress<Op: StatefulOperator>(
    op: Op,
    storage: &CheckpointStorage,
    point: RestorePoint,
    range: KeyGroupRange,
    path: impl Into<PathBuf>,
    options: RocksDbOptions,
    progress: &mut dyn FnMut(&MigrationProgress<'_>),
) -> Result<Bound<Op, RocksDbBackend>> {
    let path = path.into();
    if path.exists() {
        return Err(Error::Incompatible {
            operator: Op::DESCRIPTOR.name.to_owned(),
            path,
            reason: "the restore target already exists".into(),
        });
    }
    let result = (|| {
        let backend = RocksDbBackend::open(&path, options)?;
        let mut bound = Bound::new(op, backend)?.with_key_groups(range)?;
        bound.restore_from_with_progress(storage, point, progress)?;
        Ok(bound)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&path);
    }
    result
}

impl RocksDbBackend {
    /// [`StateBackend::restore_native`] for RocksDB: closes the database, replaces its
    /// directory with the snapshot overlapping the range most, reopens it, cuts it to the
    /// range, copies in the range's entries of the other snapshots and runs the migrations.
    pub(crate) fn open_native(&mut self, restore: &mut NativeRestore<'_>) -> Result<bool> {
        if restore.parts.is_empty() || !restore.parts.iter().all(|p| p.backend == BACKEND) {
            return Ok(false);
        }
        let range = restore.range;
        let overlap = |p: &NativePart| {
            let first = p.key_groups.first().max(range.first());
            let last = p.key_groups.last().min(range.last());
            u32::from(last).saturating_sub(u32::from(first)) + 1
        };
        let Some((base, base_part)) = restore
            .parts
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| overlap(p))
            .map(|(index, part)| (index, part.clone()))
        else {
            return Ok(false);
        };
        // The database closes when a placeholder takes its place; the placeholder closes when
        // the restored database takes its own.
        self.release_reads();
        // The cached rows belong to the state being replaced.
        self.rows.get_mut().forget(None);
        *self.time_rows.get_mut() = crate::OutRows::default();
        self.poisoned.set(false);
        let parent = self.path.parent().unwrap_or(&self.path).to_owned();
        let scratch = tempfile::Builder::new()
            .prefix(&capture_prefix(&self.path))
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        let placeholder = DB::open_default(scratch.path().join("db")).map_err(|e| db_error(&e))?;
        drop(std::mem::replace(&mut self.db, placeholder));
        let result = self.replace_with(restore, base, &base_part);
        if result.is_err() {
            // Leave an empty, usable database rather than half a restore.
            let _ = fs::remove_dir_all(&self.path);
            if let Ok(db) = self.reopen() {
                self.db = db;
            }
        }
        result.map(|()| true)
    }

    fn replace_with(
        &mut self,
        restore: &mut NativeRestore<'_>,
        base: usize,
        base_part: &NativePart,
    ) -> Result<()> {
        let range = restore.range;
        if self.path.exists() {
            fs::remove_dir_all(&self.path).map_err(io(&self.path))?;
        }
        restore.source.materialize(base, &self.path)?;
        // A new lineage that knows the shared names of the files it starts with.
        let lineage = Lineage {
            id: new_id(),
            restored: base_part
                .files
                .iter()
                .filter_map(|(name, shared)| Some((name.clone(), shared.clone()?)))
                .collect(),
        };
        lineage.write(&self.path)?;
        self.lineage = lineage;
        self.db = self.reopen()?;
        if base_part.key_groups != range {
            cut_to(self, range)?;
        }
        for (index, other) in restore.parts.iter().enumerate() {
            if index != base {
                copy_in(restore.source, index, other, self, range, &self.options)?;
            }
        }
        for m in &restore.migrations {
            let list = m.state.kind == StateKind::List;
            migrate_column(
                self,
                restore.operator.name,
                m.state.name,
                list,
                m.stamped,
                m.migration,
                restore.progress,
            )?;
        }
        // The files may come from a backend that kept its timers the other way (in memory, or
        // in time order), or from an earlier layout.
        crate::settle_timers(self)
    }

    /// Opens the database at this backend's path again (creating it when missing), with a
    /// column family for every registered state.
    fn reopen(&mut self) -> Result<DB> {
        fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        let mut db = crate::open_db(
            &self.path,
            &self.db_opts,
            &self.options,
            &self.cache,
            &mut self.filters,
        )?;
        for c in &self.columns {
            if db.cf_handle(&c.name).is_none() {
                let opts =
                    crate::cf_options(&self.options, &self.cache, &mut self.filters, &c.name);
                db.create_cf(&c.name, &opts).map_err(|e| db_error(&e))?;
            }
        }
        Ok(db)
    }
}

/// Rewrites every entry of one state's column family in the current version.
fn migrate_column(
    backend: &RocksDbBackend,
    operator: &str,
    state: &str,
    list: bool,
    stamped: bool,
    migration: &statewright_core::Migration,
    progress: &mut dyn FnMut(&MigrationProgress<'_>),
) -> Result<()> {
    let db = backend.db();
    let Some(cf) = db.cf_handle(&format!("{operator}.{state}")) else {
        return Ok(());
    };
    let estimated_total = db
        .property_int_value_cf(cf, "rocksdb.estimate-num-keys")
        .ok()
        .flatten()
        .unwrap_or(0);
    let mut report = |entries: u64, done: bool| {
        progress(&MigrationProgress {
            state,
            from_version: migration.version,
            entries,
            estimated_total,
            done,
        });
    };
    let mut read = rocksdb::ReadOptions::default();
    read.fill_cache(false);
    // The iterator reads a consistent view; the rewrites go into the same column family.
    let mut it = db.raw_iterator_cf_opt(cf, read);
    it.seek_to_first();
    let mut batch = WriteBatch::default();
    let mut out = Vec::new();
    let mut entries = 0u64;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        out.clear();
        ttl::migrate_parts(list, stamped, v, &mut out, migration.migrate).map_err(|e| {
            Error::Corrupt {
                path: backend.path().to_owned(),
                offset: 0,
                kind: Corruption::InvalidEntry {
                    state: state.to_owned(),
                    detail: format!("migrating from version {}: {e}", migration.version),
                },
            }
        })?;
        batch.put_cf(cf, k, &out);
        entries += 1;
        crate::write_when_full(db, &mut batch, &backend.write_opts)?;
        if entries.is_multiple_of(10_000) {
            report(entries, false);
        }
        it.next();
    }
    it.status().map_err(|e| db_error(&e))?;
    db.write_opt(batch, &backend.write_opts)
        .map_err(|e| db_error(&e))?;
    report(entries, true);
    Ok(())
}

fn key_group_bound(kg: u32) -> Vec<u8> {
    match u16::try_from(kg) {
        Ok(kg) => kg.to_be_bytes().to_vec(),
        // Past the last key group: after every key.
        Err(_) => vec![0xFF, 0xFF, 0xFF],
    }
}

fn column_families(path: &Path, options: &RocksDbOptions) -> Result<Vec<String>> {
    let names = DB::list_cf(&options.rocksdb_db_options(), path).map_err(|e| db_error(&e))?;
    Ok(names
        .into_iter()
        .filter(|n| n != rocksdb::DEFAULT_COLUMN_FAMILY_NAME)
        .collect())
}

/// Deletes every key group outside `range`, in every column family.
fn cut_to(backend: &RocksDbBackend, range: KeyGroupRange) -> Result<()> {
    let db = backend.db();
    let below = (Vec::new(), key_group_bound(u32::from(range.first())));
    let above = (
        key_group_bound(u32::from(range.last()) + 1),
        key_group_bound(u32::from(u16::MAX) + 1),
    );
    for name in column_families(backend.path(), backend.options())? {
        let Some(cf) = db.cf_handle(&name) else {
            continue;
        };
        let mut batch = WriteBatch::default();
        for (from, to) in [&below, &above] {
            if from < to {
                batch.delete_range_cf(cf, from, to);
            }
        }
        db.write(batch).map_err(|e| db_error(&e))?;
    }
    Ok(())
}

/// Copies the entries of `range` from a native snapshot into `target`.
fn copy_in(
    source: &dyn NativeSource,
    index: usize,
    part: &NativePart,
    target: &RocksDbBackend,
    range: KeyGroupRange,
    options: &RocksDbOptions,
) -> Result<()> {
    let parent = target.path().parent().unwrap_or(target.path()).to_owned();
    let scratch = tempfile::Builder::new()
        .prefix(&capture_prefix(target.path()))
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    let dir = scratch.path().join("db");
    source.materialize(index, &dir)?;
    let names = column_families(&dir, options)?;
    let cache = rocksdb::Cache::new_lru_cache(8 << 20);
    let cfs: Vec<_> = names
        .iter()
        .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, options.rocksdb_cf_options(&cache)))
        .collect();
    let source = DB::open_cf_descriptors_read_only(&options.rocksdb_db_options(), &dir, cfs, false)
        .map_err(|e| db_error(&e))?;
    let first = range.first().max(part.key_groups.first());
    let last = range.last().min(part.key_groups.last());
    let from = key_group_bound(u32::from(first));
    let to = key_group_bound(u32::from(last) + 1);
    for name in &names {
        let Some(src) = source.cf_handle(name) else {
            continue;
        };
        // Column families of states the operator no longer declares stay behind.
        let db = target.db();
        let Some(dst) = db.cf_handle(name) else {
            continue;
        };
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        read.set_iterate_upper_bound(to.clone());
        let mut it = source.raw_iterator_cf_opt(src, read);
        it.seek(&from);
        let mut batch = WriteBatch::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            batch.put_cf(dst, k, v);
            crate::write_when_full(db, &mut batch, &target.write_opts)?;
            it.next();
        }
        it.status().map_err(|e| db_error(&e))?;
        db.write_opt(batch, &target.write_opts)
            .map_err(|e| db_error(&e))?;
    }
    Ok(())
}
