//! Native incremental checkpoints: RocksDB checkpoints (hard-linked SST files) kept in a
//! directory where SST files are shared between checkpoints.
//!
//! ```text
//! <dir>/shared/<db identity>-<sst file name>   immutable SST files, shared by checkpoints
//! <dir>/chk-0000000007/                        the checkpoint's own files (MANIFEST, OPTIONS, ...)
//! <dir>/chk-0000000007/_SHARED                 the shared files it uses, with their sizes
//! <dir>/NATIVE                                 the retained checkpoints (the commit point)
//! ```
//!
//! SST files never change once written, and within one database their numbers are never
//! reused, so a file already in `shared/` is not copied again: checkpoint N+1 writes only the
//! SST files checkpoint N did not have. A shared file is deleted only when no retained
//! checkpoint lists it. A restored database gets a new identity, so files it writes later never
//! collide with files of the database it came from.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use statewright_core::{Error, Result};

use crate::{RocksDbBackend, RocksDbOptions, db_error};

const LIST: &str = "NATIVE";
const SHARED_LIST: &str = "_SHARED";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A directory of native RocksDB checkpoints.
#[derive(Debug, Clone)]
pub struct NativeCheckpoints {
    dir: PathBuf,
    max_retained: usize,
}

/// What one native checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeCheckpoint {
    /// Its number.
    pub id: u64,
    /// Bytes of all files the checkpoint consists of (shared and its own).
    pub state_bytes: u64,
    /// Bytes this checkpoint newly wrote: new SST files and its own small files.
    pub written_bytes: u64,
    /// SST files it shares with earlier checkpoints.
    pub reused_files: usize,
    /// SST files it added.
    pub new_files: usize,
}

impl NativeCheckpoints {
    /// Opens (creating) a native checkpoint directory; retains 3 checkpoints by default.
    ///
    /// # Errors
    ///
    /// When the directories cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        let shared = dir.join("shared");
        fs::create_dir_all(&shared).map_err(io(&shared))?;
        Ok(Self {
            dir,
            max_retained: 3,
        })
    }

    /// How many checkpoints to retain (at least 1).
    #[must_use]
    pub fn max_retained(mut self, n: usize) -> Self {
        self.max_retained = n.max(1);
        self
    }

    /// The retained checkpoints, oldest first.
    ///
    /// # Errors
    ///
    /// When the list cannot be read or is damaged.
    pub fn list(&self) -> Result<Vec<u64>> {
        let path = self.dir.join(LIST);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&path)(e)),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.parse().map_err(|_| Error::Backend {
                    backend: "rocksdb",
                    message: format!("`{}` has a malformed line `{l}`", path.display()),
                })
            })
            .collect()
    }

    fn checkpoint_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("chk-{id:010}"))
    }

    fn shared_files(&self, id: u64) -> Result<Vec<(String, u64)>> {
        let path = self.checkpoint_dir(id).join(SHARED_LIST);
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, size) = l.rsplit_once(' ').unwrap_or((l, ""));
                let size = size.parse().map_err(|_| Error::Backend {
                    backend: "rocksdb",
                    message: format!("`{}` has a malformed line `{l}`", path.display()),
                })?;
                if name.contains('/') || name.starts_with('.') {
                    return Err(Error::Backend {
                        backend: "rocksdb",
                        message: format!(
                            "`{}` names a file outside the store: `{name}`",
                            path.display()
                        ),
                    });
                }
                Ok((name.to_owned(), size))
            })
            .collect()
    }

    /// Takes a native checkpoint of `backend`: flushes memtables, hard-links the live files
    /// into a staging directory, moves SST files the store does not have yet into `shared/`,
    /// and commits by rewriting the checkpoint list. Old checkpoints beyond `max_retained` and
    /// shared files no retained checkpoint lists are deleted afterwards.
    ///
    /// # Errors
    ///
    /// RocksDB or I/O failures; earlier checkpoints are untouched.
    pub fn checkpoint(&self, backend: &RocksDbBackend) -> Result<NativeCheckpoint> {
        let retained = self.list()?;
        let id = retained.last().map_or(1, |l| l + 1);
        let staging = self.dir.join(format!("staging-{id:010}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        let cp = rocksdb::checkpoint::Checkpoint::new(backend.db()).map_err(|e| db_error(&e))?;
        // A log size of 0 makes RocksDB flush the memtables first: with the write-ahead log off,
        // that is the only way their contents reach the checkpoint.
        cp.create_checkpoint_with_log_size(&staging, 0)
            .map_err(|e| db_error(&e))?;
        let identity = fs::read_to_string(backend.path().join("IDENTITY"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "db".to_owned());
        let shared = self.dir.join("shared");
        let mut info = NativeCheckpoint {
            id,
            state_bytes: 0,
            written_bytes: 0,
            reused_files: 0,
            new_files: 0,
        };
        let mut listed = String::new();
        for entry in fs::read_dir(&staging).map_err(io(&staging))? {
            let entry = entry.map_err(io(&staging))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let size = entry.metadata().map_err(io(&entry.path()))?.len();
            info.state_bytes += size;
            if !name.ends_with(".sst") {
                info.written_bytes += size;
                continue;
            }
            let shared_name = format!("{identity}-{name}");
            let target = shared.join(&shared_name);
            if target.exists() {
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                info.reused_files += 1;
            } else {
                fs::rename(entry.path(), &target).map_err(io(&target))?;
                info.written_bytes += size;
                info.new_files += 1;
            }
            listed.push_str(&format!("{shared_name} {size}\n"));
        }
        let list_path = staging.join(SHARED_LIST);
        write_synced(&list_path, listed.as_bytes())?;
        let final_dir = self.checkpoint_dir(id);
        fs::rename(&staging, &final_dir).map_err(io(&final_dir))?;
        sync_dir(&shared)?;
        sync_dir(&self.dir)?;

        let mut ids = retained;
        ids.push(id);
        let excess = ids.len().saturating_sub(self.max_retained);
        let dropped: Vec<u64> = ids.drain(..excess).collect();
        let text: String = ids.iter().map(|i| format!("{i}\n")).collect();
        let tmp = self.dir.join(format!("{LIST}.tmp"));
        write_synced(&tmp, text.as_bytes())?;
        let list = self.dir.join(LIST);
        fs::rename(&tmp, &list).map_err(io(&list))?;
        sync_dir(&self.dir)?;
        self.collect_garbage(&ids, &dropped);
        Ok(info)
    }

    /// Deletes dropped checkpoints and every shared file no retained checkpoint lists. Failures
    /// leave garbage behind, never remove a needed file.
    fn collect_garbage(&self, retained: &[u64], dropped: &[u64]) {
        for id in dropped {
            let _ = fs::remove_dir_all(self.checkpoint_dir(*id));
        }
        let mut needed = BTreeSet::new();
        for id in retained {
            match self.shared_files(*id) {
                Ok(files) => needed.extend(files.into_iter().map(|(n, _)| n)),
                // Unknown needs: keep everything.
                Err(_) => return,
            }
        }
        let shared = self.dir.join("shared");
        if let Ok(entries) = fs::read_dir(&shared) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !needed.contains(&name) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Restores checkpoint `id` into a new database at `path` (which must not exist) and opens
    /// it. The restored database gets a new identity.
    ///
    /// # Errors
    ///
    /// An unknown checkpoint, a missing or truncated shared file, or RocksDB failing to open
    /// the result.
    pub fn restore(
        &self,
        id: u64,
        path: impl Into<PathBuf>,
        options: RocksDbOptions,
    ) -> Result<RocksDbBackend> {
        if !self.list()?.contains(&id) {
            return Err(Error::CheckpointNotFound {
                dir: self.dir.clone(),
                wanted: id.to_string(),
            });
        }
        let path = path.into();
        if path.exists() {
            return Err(Error::Backend {
                backend: "rocksdb",
                message: format!("restore target `{}` already exists", path.display()),
            });
        }
        fs::create_dir_all(&path).map_err(io(&path))?;
        let own = self.checkpoint_dir(id);
        for entry in fs::read_dir(&own).map_err(io(&own))? {
            let entry = entry.map_err(io(&own))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == SHARED_LIST || name == "IDENTITY" {
                continue;
            }
            let to = path.join(&name);
            fs::copy(entry.path(), &to).map_err(io(&to))?;
        }
        for (shared_name, size) in self.shared_files(id)? {
            let from = self.dir.join("shared").join(&shared_name);
            let actual = fs::metadata(&from).map_err(io(&from))?.len();
            if actual != size {
                return Err(Error::Backend {
                    backend: "rocksdb",
                    message: format!(
                        "shared file `{}` has {actual} bytes, checkpoint {id} recorded {size}",
                        from.display()
                    ),
                });
            }
            let local = shared_name
                .rsplit_once('-')
                .map_or(shared_name.as_str(), |(_, n)| n);
            let to = path.join(local);
            // Hard links share the immutable file; fall back to a copy across file systems.
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).map_err(io(&to))?;
            }
        }
        RocksDbBackend::open(path, options)
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}
