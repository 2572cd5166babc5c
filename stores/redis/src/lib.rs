//! Checkpoints of statewright in Redis, for small deployments that already run one: a
//! [`CheckpointStore`] that keeps each file in chunks of at most [`CHUNK_SIZE`] bytes and
//! commits with `SET NX`, and [`open_url`], which opens a [`CheckpointStorage`] at
//! `redis://host:port/db/prefix`.
//!
//! Redis holds everything in memory: every retained checkpoint costs its size in the server's
//! RAM, and the stock configuration snapshots to disk now and then without an append-only log,
//! so a crash of the Redis server can lose checkpoints it had acknowledged. Prefer object
//! storage for state beyond a few hundred megabytes, or where a checkpoint must outlive the
//! server; run Redis with `appendonly yes` and `appendfsync everysec` (or `always`) where it
//! must keep what it acknowledged.
//!
//! # Layout
//!
//! Under the prefix `p` (`statewright` unless the URL names one):
//!
//! - `p:o:<name>`: an object's head, `sw1 <length> <chunk size> <chunks> <chunk key prefix>`;
//! - `p:c:<upload>:<i>`: its chunks, written with an expiry while the upload runs and made
//!   permanent by the commit, so an upload that never finishes (a killed process) disappears
//!   by itself;
//! - `p:index`: every object name in a sorted set, for listing by prefix;
//! - `p:uploads`: the counter that numbers uploads.
//!
//! A commit is one Lua script, atomic on the server: it checks that every chunk is there,
//! makes them permanent, sets the head (only if absent for [`CheckpointStore::put_if_absent`],
//! the manifest's commit point) and adds the name to the index. Replaced chunks expire a few
//! seconds later, so a reader of the old object finishes. One server, not a cluster: the
//! script touches keys that a cluster would place on different nodes.
//!
//! ```no_run
//! let storage = statewright_redis::open_url("redis://127.0.0.1:6379/0/jobs/fraud")?;
//! # let _ = storage;
//! # Ok::<(), statewright::Error>(())
//! ```

use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::{Connection, RedisError, RedisResult};
use statewright_core::store::{CheckpointStore, ObjectWriter, upload_file, validate_object_name};
use statewright_core::{CheckpointStorage, Error, Result};

/// The most bytes one Redis value holds: an object is written in chunks of this size (the last
/// one smaller), holding one chunk in memory.
pub const CHUNK_SIZE: usize = 1 << 20;

/// How long the chunks of an unfinished upload live (a day): a writer killed in the middle of
/// an upload leaves nothing behind after this.
const UPLOAD_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the chunks of a replaced object stay, so a reader of the old object finishes.
const REPLACED_GRACE: Duration = Duration::from_secs(10);

/// The most connections kept open between calls.
const POOL: usize = 8;

/// Attempts of a call that fails for a transient reason (a dropped connection, a timeout, a
/// server loading its data), with backoff from 50 ms doubling to 2 s: about 6 s in all.
const ATTEMPTS: u32 = 8;

/// Connecting gives up after this; a request after [`IO_TIMEOUT`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets an object's head from its uploaded chunks. `KEYS`: head, index. `ARGV`: head value,
/// name, chunk key prefix, chunk count, `replace` or `absent`, grace for replaced chunks (ms).
/// Returns 1 when the head is set (or already was this value: a retried commit), 0 when
/// `absent` finds another object.
const COMMIT: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then return 1 end
if current and ARGV[5] == 'absent' then return 0 end
for i = 0, tonumber(ARGV[4]) - 1 do
  local chunk = ARGV[3] .. i
  if redis.call('EXISTS', chunk) == 0 then
    return redis.error_reply('ERR statewright: chunk ' .. i .. ' of the upload is gone')
  end
  redis.call('PERSIST', chunk)
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if current then
  local n, old = string.match(current, '^sw1 %d+ %d+ (%d+) (.+)$')
  if n and old ~= ARGV[3] then
    for i = 0, tonumber(n) - 1 do redis.call('PEXPIRE', old .. i, ARGV[6]) end
  end
end
return 1
";

/// Removes an object. `KEYS`: head, index. `ARGV`: name.
const DELETE: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
redis.call('DEL', KEYS[1])
local n, old = string.match(current, '^sw1 %d+ %d+ (%d+) (.+)$')
if n then
  for i = 0, tonumber(n) - 1 do redis.call('UNLINK', old .. i) end
end
return 1
";

/// A [`CheckpointStore`] in one Redis database, under a key prefix.
///
/// Calls are blocking, each on a pooled connection, retried with backoff when the connection
/// drops or times out.
#[derive(Debug, Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    pool: Mutex<Vec<Connection>>,
    /// The key prefix, without the trailing `:`.
    prefix: String,
    /// The location without credentials, for errors.
    url: String,
    commit: redis::Script,
    delete: redis::Script,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// An object's head: where its chunks are.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    len: u64,
    chunk_size: u64,
    chunks: u64,
    chunk_prefix: String,
}

impl Head {
    fn encode(&self) -> String {
        format!(
            "sw1 {} {} {} {}",
            self.len, self.chunk_size, self.chunks, self.chunk_prefix
        )
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(5, ' ');
        if parts.next()? != "sw1" {
            return None;
        }
        let len: u64 = parts.next()?.parse().ok()?;
        let chunk_size: u64 = parts.next()?.parse().ok()?;
        let chunks: u64 = parts.next()?.parse().ok()?;
        let chunk_prefix = parts.next()?.to_owned();
        let fits = chunk_size > 0 && chunks == len.div_ceil(chunk_size);
        fits.then_some(Self {
            len,
            chunk_size,
            chunks,
            chunk_prefix,
        })
    }
}

impl RedisStore {
    /// A store at `url`: `redis://[user:password@]host[:port][/db[/prefix...]]`. The database
    /// is 0 and the key prefix `statewright` unless given; `/3/jobs/fraud` is database 3, keys
    /// under `jobs/fraud:`. Connects lazily: a server that is down fails the first call.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a URL that is not of this form; [`Error::Unsupported`] for
    /// `rediss://` (TLS is not built in).
    pub fn open(url: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidName {
            what: "Redis URL",
            name: redact(url),
            reason,
        };
        let parsed = url::Url::parse(url)
            .map_err(|_| invalid("not a URL (`redis://host:port/db/prefix`)"))?;
        match parsed.scheme() {
            "redis" => {}
            "rediss" => {
                return Err(Error::Unsupported {
                    backend: "redis",
                    what: "TLS connections (`rediss://`); reach the server through a TLS tunnel"
                        .into(),
                });
            }
            _ => return Err(invalid("the scheme must be `redis://`")),
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("names no host"))?;
        let mut segments: Vec<&str> = parsed
            .path_segments()
            .map(|s| s.filter(|p| !p.is_empty()).collect())
            .unwrap_or_default();
        let db = match segments.first() {
            Some(first) if first.bytes().all(|b| b.is_ascii_digit()) => {
                let db: i64 = first
                    .parse()
                    .map_err(|_| invalid("the database number is too large"))?;
                segments.remove(0);
                db
            }
            _ => 0,
        };
        let prefix = if segments.is_empty() {
            "statewright".to_owned()
        } else {
            let prefix = segments.join("/");
            validate_object_name(&prefix)?;
            prefix
        };
        let mut connect = format!("redis://{host}:{}/{db}", parsed.port().unwrap_or(6379));
        if !parsed.username().is_empty() || parsed.password().is_some() {
            connect = format!(
                "redis://{}:{}@{host}:{}/{db}",
                parsed.username(),
                parsed.password().unwrap_or_default(),
                parsed.port().unwrap_or(6379)
            );
        }
        let client =
            redis::Client::open(connect.as_str()).map_err(|_| invalid("not a Redis location"))?;
        let shown = format!(
            "redis://{host}:{}/{db}/{prefix}",
            parsed.port().unwrap_or(6379)
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                pool: Mutex::new(Vec::new()),
                prefix,
                url: shown,
                commit: redis::Script::new(COMMIT),
                delete: redis::Script::new(DELETE),
            }),
        })
    }

    /// The key prefix (`statewright` unless the URL names one).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Checks that the server answers and accepts the credentials.
    ///
    /// # Errors
    ///
    /// An I/O error naming the location: `PermissionDenied` for refused credentials,
    /// `ConnectionRefused` (after retries) for a server that is down.
    pub fn ping(&self) -> Result<()> {
        self.inner
            .call("", |c| redis::cmd("PING").query::<String>(c).map(drop))
    }

    fn head_key(&self, name: &str) -> String {
        format!("{}:o:{name}", self.inner.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:index", self.inner.prefix)
    }

    fn read_head(&self, name: &str) -> Result<Option<Head>> {
        validate_object_name(name)?;
        let key = self.head_key(name);
        let bytes: Option<Vec<u8>> = self
            .inner
            .call(name, |c| redis::cmd("GET").arg(&key).query(c))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => Head::decode(&bytes).map(Some).ok_or_else(|| {
                self.inner.io(
                    name,
                    io::ErrorKind::InvalidData,
                    "the object's head is not a statewright head",
                )
            }),
        }
    }

    /// Sets `name`'s head to the uploaded chunks; `false` when `absent` and another object has
    /// the name.
    fn commit(&self, name: &str, head: &Head, absent: bool) -> Result<bool> {
        let head_key = self.head_key(name);
        let index_key = self.index_key();
        let value = head.encode();
        let grace = REPLACED_GRACE.as_millis().to_string();
        let mode = if absent { "absent" } else { "replace" };
        let set: i64 = self.inner.call(name, |c| {
            self.inner
                .commit
                .key(&head_key)
                .key(&index_key)
                .arg(&value)
                .arg(name)
                .arg(&head.chunk_prefix)
                .arg(head.chunks)
                .arg(mode)
                .arg(&grace)
                .invoke(c)
        })?;
        Ok(set == 1)
    }

    fn upload(&self, name: &str) -> Result<Upload> {
        let counter = format!("{}:uploads", self.inner.prefix);
        let id: u64 = self
            .inner
            .call(name, |c| redis::cmd("INCR").arg(&counter).query(c))?;
        Ok(Upload {
            chunk_prefix: format!("{}:c:{id}:", self.inner.prefix),
            chunks: 0,
        })
    }

    /// Writes chunk `upload.chunks` (expiring until a commit makes it permanent).
    fn put_chunk(&self, name: &str, upload: &mut Upload, bytes: &[u8]) -> Result<()> {
        let key = format!("{}{}", upload.chunk_prefix, upload.chunks);
        let ttl = UPLOAD_TTL.as_millis().to_string();
        self.inner.call(name, |c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(bytes)
                .arg("PX")
                .arg(&ttl)
                .exec(c)
        })?;
        upload.chunks += 1;
        Ok(())
    }

    /// Removes the chunks of an upload that will not be committed.
    fn discard(&self, name: &str, upload: &Upload) {
        if upload.chunks == 0 {
            return;
        }
        let keys: Vec<String> = (0..upload.chunks)
            .map(|i| format!("{}{i}", upload.chunk_prefix))
            .collect();
        let _ = self
            .inner
            .call(name, |c| redis::cmd("UNLINK").arg(&keys).exec(c));
    }

    /// Reads `range` of the object `head` describes: one round trip for every chunk it
    /// touches. `None` when a chunk is gone (the object was replaced meanwhile).
    fn read_chunks(&self, name: &str, head: &Head, range: &Range<u64>) -> Result<Option<Vec<u8>>> {
        let first = range.start / head.chunk_size;
        let last = (range.end - 1) / head.chunk_size;
        let mut pipe = redis::pipe();
        for chunk in first..=last {
            let base = chunk * head.chunk_size;
            let from = range.start.max(base) - base;
            let to = range.end.min(base + head.chunk_size) - base;
            pipe.cmd("GETRANGE")
                .arg(format!("{}{chunk}", head.chunk_prefix))
                .arg(from)
                .arg(to - 1);
        }
        let parts: Vec<Vec<u8>> = self.inner.call(name, |c| pipe.query(c))?;
        let wanted = usize::try_from(range.end - range.start).map_err(|_| {
            self.inner.io(
                name,
                io::ErrorKind::InvalidInput,
                "the range does not fit in memory",
            )
        })?;
        let mut out = Vec::with_capacity(wanted);
        for (chunk, part) in (first..=last).zip(parts) {
            let base = chunk * head.chunk_size;
            let expected = range.end.min(base + head.chunk_size) - range.start.max(base);
            if part.len() as u64 != expected {
                return Ok(None);
            }
            out.extend_from_slice(&part);
        }
        Ok(Some(out))
    }
}

/// The chunks written so far of one upload.
struct Upload {
    chunk_prefix: String,
    chunks: u64,
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<not a URL>".to_owned(),
    }
}

/// Whether a failed call may succeed when tried again on a new connection.
fn transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::BusyLoading
                    | redis::ServerErrorKind::TryAgain
                    | redis::ServerErrorKind::MasterDown
            )
        )
}

/// Whether the server refused the credentials.
fn refused(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

impl Inner {
    /// Runs `f` on a pooled connection, retrying transient failures with backoff.
    fn call<T>(
        &self,
        name: &str,
        mut f: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut delay = Duration::from_millis(50);
        let mut attempt = 1;
        loop {
            let result = self.connection().and_then(|mut c| {
                let result = f(&mut c);
                // A connection that failed may be half-read: only a good one goes back.
                if result.is_ok() {
                    let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
                    if pool.len() < POOL {
                        pool.push(c);
                    }
                }
                result
            });
            match result {
                Ok(value) => return Ok(value),
                Err(e) if attempt < ATTEMPTS && transient(&e) && !refused(&e) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                Err(e) => return Err(self.error(name, &e)),
            }
        }
    }

    fn connection(&self) -> RedisResult<Connection> {
        let pooled = self
            .pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(c) = pooled {
            return Ok(c);
        }
        let c = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        c.set_read_timeout(Some(IO_TIMEOUT))?;
        c.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(c)
    }

    fn locate(&self, name: &str) -> PathBuf {
        if name.is_empty() {
            PathBuf::from(&self.url)
        } else {
            PathBuf::from(format!("{}/{name}", self.url))
        }
    }

    fn io(&self, name: &str, kind: io::ErrorKind, message: &str) -> Error {
        Error::Io {
            path: self.locate(name),
            source: io::Error::new(kind, message.to_owned()),
        }
    }

    /// A Redis error as an I/O error naming the object.
    fn error(&self, name: &str, e: &RedisError) -> Error {
        let kind = if refused(e) {
            io::ErrorKind::PermissionDenied
        } else if e.is_connection_refusal() {
            io::ErrorKind::ConnectionRefused
        } else if e.is_timeout() {
            io::ErrorKind::TimedOut
        } else {
            io::ErrorKind::Other
        };
        Error::Io {
            path: self.locate(name),
            source: io::Error::new(kind, format!("Redis: {e}")),
        }
    }
}

impl CheckpointStore for RedisStore {
    fn locate(&self, name: &str) -> PathBuf {
        self.inner.locate(name)
    }

    fn create(&self, name: &str) -> Result<Box<dyn ObjectWriter>> {
        validate_object_name(name)?;
        Ok(Box::new(ChunkWriter {
            store: self.clone(),
            name: name.to_owned(),
            buf: Vec::new(),
            upload: None,
            bytes: 0,
            failed: false,
        }))
    }

    fn put_file(&self, name: &str, from: &Path) -> Result<u64> {
        upload_file(self, name, from)
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        validate_object_name(name)?;
        // Checked first so that a losing writer uploads nothing; the commit checks again.
        if self.read_head(name)?.is_some() {
            return Ok(false);
        }
        let mut upload = self.upload(name)?;
        for chunk in bytes.chunks(CHUNK_SIZE) {
            if let Err(e) = self.put_chunk(name, &mut upload, chunk) {
                self.discard(name, &upload);
                return Err(e);
            }
        }
        let head = Head {
            len: bytes.len() as u64,
            chunk_size: CHUNK_SIZE as u64,
            chunks: upload.chunks,
            chunk_prefix: upload.chunk_prefix.clone(),
        };
        let committed = self.commit(name, &head, true);
        if !matches!(committed, Ok(true)) {
            self.discard(name, &upload);
        }
        committed
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Vec<u8>> {
        if range.end < range.start {
            return Err(self.inner.io(
                name,
                io::ErrorKind::InvalidInput,
                "the range ends before it starts",
            ));
        }
        // A reader racing a replacement may find the old chunks gone: it reads the new head.
        for _ in 0..3 {
            let head = self.read_head(name)?.ok_or_else(|| {
                self.inner
                    .io(name, io::ErrorKind::NotFound, "no such object")
            })?;
            if range.end > head.len {
                return Err(self.inner.io(
                    name,
                    io::ErrorKind::UnexpectedEof,
                    &format!(
                        "bytes {}..{} of an object of {} bytes: the range ends past the object",
                        range.start, range.end, head.len
                    ),
                ));
            }
            if range.is_empty() {
                return Ok(Vec::new());
            }
            if let Some(bytes) = self.read_chunks(name, &head, &range)? {
                return Ok(bytes);
            }
        }
        Err(self.inner.io(
            name,
            io::ErrorKind::NotFound,
            "a chunk of the object is missing",
        ))
    }

    fn head(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.read_head(name)?.map(|h| h.len))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let (min, max) = match prefix.strip_suffix('/') {
            Some(p) => {
                validate_object_name(p)?;
                // Names are ASCII: every name under the prefix sorts before `prefix` + 0xFF.
                let mut max = format!("({prefix}").into_bytes();
                max.push(0xFF);
                (format!("[{prefix}").into_bytes(), max)
            }
            None if prefix.is_empty() => (b"-".to_vec(), b"+".to_vec()),
            None => {
                return Err(Error::InvalidName {
                    what: "object prefix",
                    name: prefix.to_owned(),
                    reason: "must be empty or end with `/`",
                });
            }
        };
        let index = self.index_key();
        let names: Vec<String> = self.inner.call(prefix, |c| {
            redis::cmd("ZRANGEBYLEX")
                .arg(&index)
                .arg(&min)
                .arg(&max)
                .query(c)
        })?;
        Ok(names
            .into_iter()
            .filter(|n| validate_object_name(n).is_ok())
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        validate_object_name(name)?;
        let head_key = self.head_key(name);
        let index_key = self.index_key();
        self.inner.call(name, |c| {
            self.inner
                .delete
                .key(&head_key)
                .key(&index_key)
                .arg(name)
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn local_path(&self, _name: &str) -> Option<PathBuf> {
        None
    }
}

/// An object being written, a chunk at a time; dropped unfinished, its chunks are removed
/// (and would expire anyway).
struct ChunkWriter {
    store: RedisStore,
    name: String,
    buf: Vec<u8>,
    upload: Option<Upload>,
    bytes: u64,
    /// A chunk failed to upload: the object can no longer be finished.
    failed: bool,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> Result<()> {
        if self.failed {
            return Err(self.store.inner.io(
                &self.name,
                io::ErrorKind::Other,
                "an earlier chunk of this object failed to upload",
            ));
        }
        let mut upload = match self.upload.take() {
            Some(upload) => upload,
            None => self.store.upload(&self.name)?,
        };
        let result = self.store.put_chunk(&self.name, &mut upload, &self.buf);
        self.upload = Some(upload);
        self.buf.clear();
        self.failed = result.is_err();
        result
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK_SIZE - self.buf.len());
        if self.buf.capacity() == 0 {
            self.buf.reserve(CHUNK_SIZE);
        }
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        if self.buf.len() == CHUNK_SIZE {
            self.flush_chunk().map_err(io::Error::other)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for ChunkWriter {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        if self.failed {
            return Err(self.store.inner.io(
                &self.name,
                io::ErrorKind::Other,
                "a chunk of this object failed to upload",
            ));
        }
        if !self.buf.is_empty() || self.upload.is_none() {
            if self.buf.is_empty() {
                // An empty object: an upload of no chunks.
                self.upload = Some(self.store.upload(&self.name)?);
            } else {
                self.flush_chunk()?;
            }
        }
        let Some(upload) = self.upload.take() else {
            return Err(self.store.inner.io(
                &self.name,
                io::ErrorKind::Other,
                "the upload was not started",
            ));
        };
        let head = Head {
            len: self.bytes,
            chunk_size: CHUNK_SIZE as u64,
            chunks: upload.chunks,
            chunk_prefix: upload.chunk_prefix.clone(),
        };
        match self.store.commit(&self.name, &head, false) {
            Ok(_) => Ok(self.bytes),
            Err(e) => {
                self.store.discard(&self.name, &upload);
                Err(e)
            }
        }
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            self.store.discard(&self.name, &upload);
        }
    }
}

/// Opens a checkpoint storage in Redis at `url` (see [`RedisStore::open`]).
///
/// # Errors
///
/// As [`RedisStore::open`].
pub fn open_url(url: &str) -> Result<CheckpointStorage> {
    Ok(CheckpointStorage::from_store(Arc::new(RedisStore::open(
        url,
    )?)))
}

/// What the tests against a real Redis server share. `bash .ci/test` starts the server
/// (Debian's `redis-server` on 127.0.0.1) and sets `STATEWRIGHT_REDIS_URL`, and
/// `STATEWRIGHT_REQUIRE_REDIS` so that a missing server fails the tests instead of skipping.
#[doc(hidden)]
pub mod testing {
    /// The server's URL; `Ok(None)` where the tests may skip (said on standard error), `Err`
    /// where they must not.
    ///
    /// # Errors
    ///
    /// When `STATEWRIGHT_REQUIRE_REDIS` is set and `STATEWRIGHT_REDIS_URL` is not.
    pub fn redis_url() -> Result<Option<String>, String> {
        match std::env::var("STATEWRIGHT_REDIS_URL") {
            Ok(u) if !u.is_empty() => Ok(Some(u.trim_end_matches('/').to_owned())),
            _ if std::env::var_os("STATEWRIGHT_REQUIRE_REDIS").is_some() => Err(
                "STATEWRIGHT_REQUIRE_REDIS is set but STATEWRIGHT_REDIS_URL is not: the Redis \
                 server did not start (see `bash .ci/test`)"
                    .into(),
            ),
            _ => {
                eprintln!("skipped: STATEWRIGHT_REDIS_URL is not set (`bash .ci/test` sets it)");
                Ok(None)
            }
        }
    }

    /// A location on the server at `base` (`redis://127.0.0.1:6390`) no other test or run uses.
    #[must_use]
    pub fn unique_url(base: &str, name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{base}/0/tests/{name}-{}-{nanos}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_and_reject_what_does_not_add_up() {
        let head = Head {
            len: 3 * CHUNK_SIZE as u64 + 5,
            chunk_size: CHUNK_SIZE as u64,
            chunks: 4,
            chunk_prefix: "p:c:7:".into(),
        };
        assert_eq!(Head::decode(head.encode().as_bytes()), Some(head));
        assert_eq!(
            Head::decode(b"sw1 10 4 2 p:c:1:"),
            None,
            "10 bytes need 3 chunks"
        );
        assert_eq!(Head::decode(b"sw1 10 0 0 p:c:1:"), None);
        assert_eq!(Head::decode(b"sw2 0 4 0 p:c:1:"), None);
        assert!(Head::decode(b"sw1 0 4 0 p:c:1:").is_some());
    }

    #[test]
    fn urls_name_the_database_and_prefix_and_hide_the_password() -> Result<()> {
        let store = RedisStore::open("redis://:secret@127.0.0.1:6390/3/jobs/fraud")?;
        assert_eq!(store.prefix(), "jobs/fraud");
        let located = store.locate("manifests/1").display().to_string();
        assert_eq!(located, "redis://127.0.0.1:6390/3/jobs/fraud/manifests/1");
        assert_eq!(
            RedisStore::open("redis://localhost")?.prefix(),
            "statewright"
        );
        assert_eq!(RedisStore::open("redis://localhost/jobs")?.prefix(), "jobs");
        assert!(matches!(
            RedisStore::open("rediss://localhost"),
            Err(Error::Unsupported { .. })
        ));
        match RedisStore::open("http://:secret@localhost/0") {
            Err(Error::InvalidName { name, .. }) => assert!(!name.contains("secret"), "{name}"),
            other => panic!("expected an invalid name, got {other:?}"),
        }
        assert!(matches!(
            RedisStore::open("redis://localhost/0/bad name"),
            Err(Error::InvalidName { .. })
        ));
        Ok(())
    }
}
