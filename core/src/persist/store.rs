//! Where checkpoints live: a small interface shaped by what object storage offers (whole
//! objects written once, a conditional put as the only atomic step, ranged reads, listing by
//! prefix, deletion), and its implementation on a local directory.
//!
//! Names are relative, `/`-separated, each part a valid file name (see
//! [`validate_name`](crate::checkpoint::validate_name)): the same names on every store.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::model::error::{Error, Result};
use crate::persist::checkpoint::validate_name;

/// Storage for checkpoint files: a directory, an S3 bucket, ... Every method is required.
pub trait CheckpointStore: Send + Sync + fmt::Debug {
    /// Where `name` is, for errors (a path, or a URL as a path).
    fn locate(&self, name: &str) -> PathBuf;

    /// Starts writing `name`: the object appears, whole and durable, replacing one of that
    /// name, when [`ObjectWriter::finish`] returns; dropping the writer unfinished writes
    /// nothing. Memory holds what the store buffers, not the object.
    ///
    /// # Errors
    ///
    /// An invalid name, a failure to start writing.
    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>>;

    /// Moves the local file `from` into the store as `name` (replacing one of that name) and
    /// returns its length; `from` is gone afterwards. A local store renames it.
    ///
    /// # Errors
    ///
    /// An invalid name, a failure to read `from` or to write.
    fn put_file(&self, name: &str, from: &Path) -> Result<u64>;

    /// Writes `name` from `bytes`: [`create`](Self::create), write, finish.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create) and [`ObjectWriter::finish`].
    fn put(&self, name: &str, bytes: &[u8]) -> Result<u64> {
        let mut writer = self.create(name)?;
        writer
            .write_all(bytes)
            .map_err(|e| Error::io(self.locate(name), e))?;
        writer.finish()
    }

    /// Writes `name` only if no object has that name: `Ok(false)`, writing nothing, when one
    /// exists. Of two writers racing for one name, exactly one gets `true`: the commit point of
    /// a checkpoint.
    ///
    /// # Errors
    ///
    /// An invalid name, a failure to write.
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool>;

    /// The bytes `range` of `name`.
    ///
    /// # Errors
    ///
    /// An invalid name, a missing object, a range past its end, a failure to read.
    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>>;

    /// The length of `name`, `None` when there is no such object.
    ///
    /// # Errors
    ///
    /// An invalid name, a failure to ask.
    fn head(&self, name: &str) -> Result<Option<u64>>;

    /// The names of every object under `prefix` (`""` for all; a prefix ends at a `/`), sorted.
    ///
    /// # Errors
    ///
    /// An invalid prefix, a failure to list.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Removes `name`; a missing object is not an error.
    ///
    /// # Errors
    ///
    /// An invalid name, a failure to delete.
    fn delete(&self, name: &str) -> Result<()>;

    /// Removes every object under `prefix` (which ends at a `/`). The default lists the prefix
    /// and deletes each object, which is what a flat object store can do; a store with
    /// directories removes the tree at once.
    ///
    /// # Errors
    ///
    /// An invalid prefix, a failure to list or delete.
    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        if !prefix.ends_with('/') {
            return Err(Error::InvalidName {
                what: "object prefix",
                name: prefix.to_owned(),
                reason: "must end with `/`",
            });
        }
        for name in self.list(prefix)? {
            self.delete(&name)?;
        }
        Ok(())
    }

    /// The local file that holds `name`, for a store on a local file system (a restore then
    /// links files instead of copying them); `None` for a remote store.
    fn local_path(&self, name: &str) -> Option<PathBuf>;
}

/// An object being written (see [`CheckpointStore::create`]).
pub trait ObjectWriter: Write + Send {
    /// Makes the object whole, durable and visible under its name; returns its length.
    ///
    /// # Errors
    ///
    /// A failure to write; the object is then not created.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// [`CheckpointStore::put_file`] for a store that keeps no local files: streams `from` through
/// [`create`](CheckpointStore::create) (so memory holds what the writer buffers), then removes
/// `from`; returns the object's length.
///
/// # Errors
///
/// A failure to read `from`, and those of [`create`](CheckpointStore::create) and
/// [`ObjectWriter::finish`].
pub fn upload_file(store: &dyn CheckpointStore, name: &str, from: &Path) -> Result<u64> {
    let mut file = File::open(from).map_err(|e| Error::io(from, e))?;
    let mut writer = store.create(name)?;
    std::io::copy(&mut file, &mut writer).map_err(|e| Error::io(store.locate(name), e))?;
    let bytes = writer.finish()?;
    let _ = fs::remove_file(from);
    Ok(bytes)
}

/// Checks an object name: `/`-separated parts, each a valid file name.
///
/// # Errors
///
/// [`Error::InvalidName`] for an empty name, an empty part, or a part
/// [`validate_name`] rejects (`..` and absolute names included).
pub fn validate_object_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            what: "object",
            name: String::new(),
            reason: "must not be empty",
        });
    }
    name.split('/').try_for_each(|part| {
        validate_name("object name part", part).map_err(|_| Error::InvalidName {
            what: "object",
            name: name.to_owned(),
            reason: "each `/`-separated part must be 1 to 200 of `A-Z a-z 0-9 . _ -`, not \
                     starting with `.`",
        })
    })
}

/// A [`CheckpointStore`] on a local directory: each object a file, written to a temporary
/// name, synced and renamed (or, for [`put_if_absent`](CheckpointStore::put_if_absent),
/// hard-linked, which fails when the name exists) into place.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store in `root`, which must exist; nothing is created until something is written.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `root` is not a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        match fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Self { root }),
            Ok(_) => Err(Error::io(
                &root,
                std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            )),
            Err(e) => Err(Error::io(&root, e)),
        }
    }

    /// The directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        validate_object_name(name)?;
        Ok(self.root.join(name))
    }

    /// A new temporary file next to `path`, under a name no other writer uses (this
    /// process's id and a counter), created exclusively.
    fn temporary(&self, path: &Path) -> Result<(PathBuf, File)> {
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp_path = parent.join(format!(".tmp-{}-{n}", std::process::id()));
        let tmp = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, e))?;
        Ok((tmp_path, tmp))
    }

    /// Removes the directories `name` leaves empty, up to the root.
    fn prune(&self, name: &str) {
        let mut dir = self.root.join(name);
        while dir.pop() && dir != self.root && dir.starts_with(&self.root) {
            if fs::remove_dir(&dir).is_err() {
                break;
            }
        }
    }
}

/// An object of a [`LocalStore`] being written: a temporary file, renamed into place.
#[derive(Debug)]
struct LocalWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    bytes: u64,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the object is finished"))?;
        let n = file.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

impl ObjectWriter for LocalWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let Some(file) = self.file.take() else {
            return Ok(self.bytes);
        };
        let synced = file.sync_all();
        drop(file);
        if let Err(e) = synced.and_then(|()| fs::rename(&self.tmp, &self.path)) {
            let _ = fs::remove_file(&self.tmp);
            return Err(Error::io(&self.path, e));
        }
        sync_parent(&self.path)?;
        Ok(self.bytes)
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}

impl CheckpointStore for LocalStore {
    fn locate(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            self.root.clone()
        } else {
            self.root.join(name)
        }
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(name)?;
        let (tmp, file) = self.temporary(&path)?;
        Ok(Box::new(LocalWriter {
            path,
            tmp,
            file: Some(file),
            bytes: 0,
        }))
    }

    fn put_file(&self, name: &str, from: &Path) -> Result<u64> {
        let path = self.path(name)?;
        let parent = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        if fs::rename(from, &path).is_err() {
            // Another file system: copy to a temporary name, then rename into place.
            let (tmp, mut file) = self.temporary(&path)?;
            let copied = File::open(from)
                .and_then(|mut src| std::io::copy(&mut src, &mut file))
                .and_then(|_| file.sync_all())
                .and_then(|()| fs::rename(&tmp, &path));
            if let Err(e) = copied {
                let _ = fs::remove_file(&tmp);
                return Err(Error::io(&path, e));
            }
            let _ = fs::remove_file(from);
        }
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        let bytes = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        sync_parent(&path)?;
        Ok(bytes)
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(name)?;
        let (tmp, mut file) = self.temporary(&path)?;
        if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        // A hard link never replaces: of two writers, one links and the other finds the name.
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_parent(&path).map(|()| true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(name)?;
        let invalid = |what: &str| {
            Error::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned()),
            )
        };
        let len = range
            .end
            .checked_sub(range.start)
            .ok_or_else(|| invalid("the range ends before it starts"))?;
        let len = usize::try_from(len).map_err(|_| invalid("the range is too large"))?;
        let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        file.seek(SeekFrom::Start(range.start))
            .map_err(|e| Error::io(&path, e))?;
        let mut out = vec![0; len];
        file.read_exact(&mut out).map_err(|e| Error::io(&path, e))?;
        Ok(out)
    }

    fn head(&self, name: &str) -> Result<Option<u64>> {
        let path = self.path(name)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = match prefix.strip_suffix('/') {
            Some(p) => self.path(p)?,
            None if prefix.is_empty() => self.root.clone(),
            None => {
                return Err(Error::InvalidName {
                    what: "object prefix",
                    name: prefix.to_owned(),
                    reason: "must be empty or end with `/`",
                });
            }
        };
        let mut out = Vec::new();
        let mut pending = vec![(dir, prefix.to_owned())];
        while let Some((dir, base)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(&dir, e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue; // not a name this store writes
                };
                if validate_name("object", &name).is_err() {
                    continue; // temporary files (`.tmp-*`) and foreign files
                }
                let kind = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
                if kind.is_dir() {
                    pending.push((entry.path(), format!("{base}{name}/")));
                } else if kind.is_file() {
                    out.push(format!("{base}{name}"));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                self.prune(name);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let Some(dir) = prefix.strip_suffix('/') else {
            return Err(Error::InvalidName {
                what: "object prefix",
                name: prefix.to_owned(),
                reason: "must end with `/`",
            });
        };
        let path = self.path(dir)?;
        match fs::remove_dir_all(&path) {
            Ok(()) => {
                self.prune(dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.path(name).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn put_then_ranged_reads_and_head() {
        let (_dir, s) = store();
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(s.put("chk-1/a.snap", &data).unwrap(), 256);
        assert_eq!(s.head("chk-1/a.snap").unwrap(), Some(256));
        assert_eq!(
            s.get_range("chk-1/a.snap", 10..14).unwrap(),
            [10, 11, 12, 13]
        );
        assert_eq!(s.get_range("chk-1/a.snap", 0..256).unwrap(), data);
        // Past the end: an error, not a short read.
        assert!(matches!(
            s.get_range("chk-1/a.snap", 250..300),
            Err(Error::Io { .. })
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 14..10;
        assert!(matches!(
            s.get_range("chk-1/a.snap", backwards),
            Err(Error::Io { .. })
        ));
        assert_eq!(s.head("chk-1/missing").unwrap(), None);
        assert!(matches!(
            s.get_range("chk-1/missing", 0..1),
            Err(Error::Io { .. })
        ));
        // put replaces.
        s.put("chk-1/a.snap", b"new").unwrap();
        assert_eq!(s.get_range("chk-1/a.snap", 0..3).unwrap(), b"new");
    }

    #[test]
    fn put_if_absent_commits_once() {
        let (_dir, s) = store();
        assert!(s.put_if_absent("manifests/7", b"first").unwrap());
        assert!(!s.put_if_absent("manifests/7", b"second").unwrap());
        assert_eq!(s.get_range("manifests/7", 0..5).unwrap(), b"first");
        // No temporary file is left behind, and none is listed.
        assert_eq!(s.list("").unwrap(), ["manifests/7"]);
        assert_eq!(fs::read_dir(s.root().join("manifests")).unwrap().count(), 1);
    }

    #[test]
    fn racing_writers_commit_exactly_once() {
        let (_dir, s) = store();
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let s = &s;
                    scope.spawn(move || usize::from(s.put_if_absent("commit", &[i]).unwrap()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
        assert_eq!(s.list("").unwrap(), ["commit"]);
    }

    #[test]
    fn list_by_prefix_and_delete() {
        let (_dir, s) = store();
        for name in ["chk-2/b", "chk-1/a", "shared/x", "chk-1/sub/c"] {
            s.put(name, b".").unwrap();
        }
        assert_eq!(
            s.list("").unwrap(),
            ["chk-1/a", "chk-1/sub/c", "chk-2/b", "shared/x"]
        );
        assert_eq!(s.list("chk-1/").unwrap(), ["chk-1/a", "chk-1/sub/c"]);
        assert!(s.list("nothing/").unwrap().is_empty());
        assert!(matches!(s.list("chk-1"), Err(Error::InvalidName { .. })));
        s.delete("chk-1/a").unwrap();
        s.delete("chk-1/a").unwrap(); // missing is fine
        assert_eq!(s.list("chk-1/").unwrap(), ["chk-1/sub/c"]);
    }

    #[test]
    fn an_unfinished_object_is_never_seen() {
        let (_dir, s) = store();
        let mut w = s.create("chk-1/a.snap").unwrap();
        w.write_all(b"half").unwrap();
        assert_eq!(s.head("chk-1/a.snap").unwrap(), None);
        drop(w);
        assert_eq!(s.head("chk-1/a.snap").unwrap(), None);
        assert!(s.list("").unwrap().is_empty());
        let mut w = s.create("chk-1/a.snap").unwrap();
        w.write_all(b"whole").unwrap();
        assert_eq!(w.finish().unwrap(), 5);
        assert_eq!(s.get_range("chk-1/a.snap", 0..5).unwrap(), b"whole");
    }

    #[test]
    fn put_file_moves_a_local_file_in() {
        let (dir, s) = store();
        let from = dir.path().join("outside");
        fs::write(&from, b"sst bytes").unwrap();
        assert_eq!(s.put_file("shared/x.sst", &from).unwrap(), 9);
        assert!(!from.exists());
        assert_eq!(s.get_range("shared/x.sst", 0..3).unwrap(), b"sst");
        assert_eq!(
            s.local_path("shared/x.sst"),
            Some(dir.path().join("shared/x.sst"))
        );
    }

    #[test]
    fn delete_prefix_removes_a_tree_and_the_directories_it_empties() {
        let (dir, s) = store();
        for name in ["chk-1/a", "chk-1/b.native/c", "chk-2/d"] {
            s.put(name, b".").unwrap();
        }
        s.delete_prefix("chk-1/").unwrap();
        s.delete_prefix("chk-1/").unwrap(); // missing is fine
        assert_eq!(s.list("").unwrap(), ["chk-2/d"]);
        assert!(!dir.path().join("chk-1").exists());
        s.delete("chk-2/d").unwrap();
        assert!(!dir.path().join("chk-2").exists());
        assert!(dir.path().exists());
        assert!(matches!(
            s.delete_prefix("chk-2"),
            Err(Error::InvalidName { .. })
        ));
    }

    #[test]
    fn names_cannot_escape_the_store() {
        let (_dir, s) = store();
        for bad in [
            "", "/abs", "../up", "a/../b", "a//b", ".hidden", "a/", "sp ace",
        ] {
            assert!(
                matches!(s.put(bad, b"x"), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
            assert!(
                matches!(s.head(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn opening_reads_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("mistyped");
        assert!(matches!(LocalStore::open(&missing), Err(Error::Io { .. })));
        assert!(!missing.exists());
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(LocalStore::open(&file), Err(Error::Io { .. })));
    }
}
