//! The Redis store against a real Redis server: Debian's `redis-server` on 127.0.0.1, which
//! `bash .ci/test` starts and stops. Its URL comes from `STATEWRIGHT_REDIS_URL`; where
//! `STATEWRIGHT_REQUIRE_REDIS` is set (the test command sets it), a missing server fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use statewright::Error;
use statewright::keygroup::KeyGroupRange;
use statewright::prelude::*;
use statewright::store::CheckpointStore;
use statewright_redis::{CHUNK_SIZE, RedisStore, open_url, testing};

fn server() -> Option<String> {
    testing::redis_url().unwrap()
}

fn storage(base: &str, name: &str) -> (RedisStore, CheckpointStorage) {
    let url = testing::unique_url(base, name);
    (RedisStore::open(&url).unwrap(), open_url(&url).unwrap())
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = u64)]
struct Sessions {
    clicks: ValueState<u64>,
    pages: MapState<String, u32>,
}

fn fill(op: &mut Bound<Sessions, HeapBackend>, keys: std::ops::Range<u64>, round: u32) {
    for k in keys {
        let Ok(mut st) = op.key(&k) else { continue };
        st.clicks().update(|c| c.unwrap_or(0) + 1).unwrap();
        st.pages().put(&format!("p{}", k % 5), &round).unwrap();
    }
}

/// A key, its clicks and its pages.
type Row = (u64, u64, Vec<(String, u32)>);

fn image(op: &mut Bound<Sessions, HeapBackend>, keys: std::ops::Range<u64>) -> Vec<Row> {
    let range = op.key_groups();
    let mut out = Vec::new();
    for k in keys {
        if !range.contains(statewright::keygroup::key_group(&k.to_be_bytes(), 128)) {
            continue;
        }
        let mut st = op.key(&k).unwrap();
        let clicks = st.clicks().get_owned().unwrap().unwrap_or(0);
        let mut pages: Vec<(String, u32)> = st
            .pages()
            .entries()
            .unwrap()
            .map(|e| e.map(|(p, r)| (p, r.to_native())))
            .collect::<statewright::Result<_>>()
            .unwrap();
        pages.sort();
        out.push((k, clicks, pages));
    }
    out
}

/// A raw connection, to look at the keys the store writes.
fn raw(url: &str) -> redis::Connection {
    let connect = url.split("/0/").next().unwrap();
    redis::Client::open(connect)
        .unwrap()
        .get_connection()
        .unwrap()
}

#[test]
fn the_store_keeps_the_contract_on_redis() {
    let Some(base) = server() else { return };
    let (s, _) = storage(&base, "contract");
    let data: Vec<u8> = (0..=255).collect();
    assert_eq!(s.put("chk-1/a.snap", &data).unwrap(), 256);
    assert_eq!(s.head("chk-1/a.snap").unwrap(), Some(256));
    assert_eq!(
        s.get_range("chk-1/a.snap", 10..14).unwrap(),
        [10, 11, 12, 13]
    );
    let err = s.get_range("chk-1/a.snap", 250..300).unwrap_err();
    assert!(err.to_string().contains("chk-1/a.snap"), "{err}");
    assert_eq!(s.head("chk-1/missing").unwrap(), None);
    let err = s.get_range("chk-1/missing", 0..1).unwrap_err();
    assert!(err.to_string().contains("chk-1/missing"), "{err}");
    // An empty object.
    s.put("chk-1/empty", b"").unwrap();
    assert_eq!(s.head("chk-1/empty").unwrap(), Some(0));
    assert!(s.get_range("chk-1/empty", 0..0).unwrap().is_empty());
    // A large object goes in chunks; its bytes read back across chunk boundaries.
    let big: Vec<u8> = (0..CHUNK_SIZE * 3 + 12_345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut w = s.create("chk-1/big.snap").unwrap();
    for part in big.chunks(100_000) {
        w.write_all(part).unwrap();
    }
    assert_eq!(
        s.head("chk-1/big.snap").unwrap(),
        None,
        "visible before finish"
    );
    assert_eq!(w.finish().unwrap(), big.len() as u64);
    let edge = CHUNK_SIZE as u64;
    assert_eq!(
        s.get_range("chk-1/big.snap", edge - 3..2 * edge + 3)
            .unwrap(),
        big[CHUNK_SIZE - 3..2 * CHUNK_SIZE + 3]
    );
    assert_eq!(
        s.get_range("chk-1/big.snap", 0..big.len() as u64).unwrap(),
        big
    );
    // Replacing an object: the new bytes are read, the old chunks expire.
    s.put("chk-1/a.snap", b"new").unwrap();
    assert_eq!(s.get_range("chk-1/a.snap", 0..3).unwrap(), b"new");
    // An unfinished object is never seen, and leaves no chunk behind.
    let mut w = s.create("chk-1/dropped.snap").unwrap();
    w.write_all(&big[..CHUNK_SIZE + 10]).unwrap();
    drop(w);
    assert_eq!(s.head("chk-1/dropped.snap").unwrap(), None);
    // put-if-absent: one winner among racing writers, and its bytes.
    let winners: Vec<u8> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6u8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || s.put_if_absent("manifests/1", &[i]).unwrap().then_some(i))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(winners.len(), 1);
    assert_eq!(s.get_range("manifests/1", 0..1).unwrap(), winners);
    // Listing by prefix, deleting one and a prefix.
    assert_eq!(
        s.list("").unwrap(),
        [
            "chk-1/a.snap",
            "chk-1/big.snap",
            "chk-1/empty",
            "manifests/1"
        ]
    );
    assert_eq!(
        s.list("chk-1/").unwrap(),
        ["chk-1/a.snap", "chk-1/big.snap", "chk-1/empty"]
    );
    assert!(s.list("chk-").is_err(), "a prefix ends at a `/`");
    s.delete("chk-1/a.snap").unwrap();
    s.delete("chk-1/a.snap").unwrap();
    s.delete_prefix("chk-1/").unwrap();
    assert_eq!(s.list("").unwrap(), ["manifests/1"]);
    assert!(matches!(
        s.put("../x", b"x"),
        Err(Error::InvalidName { .. })
    ));
    // Nothing is left but the manifest, its chunk, the index and the upload counter (the
    // replaced chunk of `a.snap` may still be in its grace period).
    s.delete("manifests/1").unwrap();
    let mut c = raw(&base);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", s.prefix()))
        .query(&mut c)
        .unwrap();
    let persistent: Vec<&String> = keys
        .iter()
        .filter(|k| redis::cmd("PTTL").arg(k).query::<i64>(&mut c).unwrap() == -1)
        .collect();
    assert_eq!(persistent, [&format!("{}:uploads", s.prefix())], "{keys:?}");
}

#[test]
fn chunks_of_an_upload_that_never_finishes_expire() {
    let Some(base) = server() else { return };
    let (s, _) = storage(&base, "abandoned");
    // A writer killed in the middle of an upload: its chunks are written, never committed.
    let mut w = s.create("chk-1/big.snap").unwrap();
    w.write_all(&vec![7u8; CHUNK_SIZE * 2]).unwrap();
    std::mem::forget(w);
    let mut c = raw(&base);
    let chunks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:c:*", s.prefix()))
        .query(&mut c)
        .unwrap();
    assert_eq!(chunks.len(), 2);
    for chunk in &chunks {
        let ttl: i64 = redis::cmd("PTTL").arg(chunk).query(&mut c).unwrap();
        assert!(ttl > 0, "{chunk} would never expire");
    }
    assert!(s.list("").unwrap().is_empty());
    // A committed object's chunks are permanent.
    s.put("chk-1/small", b"x").unwrap();
    let chunks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:c:*", s.prefix()))
        .query(&mut c)
        .unwrap();
    let permanent = chunks
        .iter()
        .filter(|k| redis::cmd("PTTL").arg(k).query::<i64>(&mut c).unwrap() == -1)
        .count();
    assert_eq!(permanent, 1);
}

#[test]
fn checkpoints_in_redis_restore_at_any_parallelism() {
    let Some(base) = server() else { return };
    let (_, storage) = storage(&base, "rescale");
    let ranges: Vec<KeyGroupRange> = (0..2)
        .map(|i| KeyGroupRange::for_instance(128, 2, i).unwrap())
        .collect();
    let mut ops: Vec<_> = ranges
        .iter()
        .map(|&r| {
            Sessions::default()
                .bind(HeapBackend::new())
                .unwrap()
                .with_key_groups(r)
                .unwrap()
        })
        .collect();
    let config = CheckpointConfig::on_store(Arc::clone(storage.store()))
        .max_chain(5)
        .max_retained(2);
    let mut checkpointer = Checkpointer::new(config).unwrap();
    for round in 0..4 {
        let keys = if round == 0 { 0..3_000 } else { 0..300 };
        for op in &mut ops {
            fill(op, keys.clone(), round);
        }
        let [a, b] = &mut ops[..] else { unreachable!() };
        checkpointer.checkpoint_now(&mut [a, b]).unwrap();
    }
    let listed = storage.list().unwrap();
    assert_eq!(listed.len(), 2, "retention keeps two");
    let mut want = Vec::new();
    for op in &mut ops {
        want.extend(image(op, 0..3_000));
    }
    want.sort();
    let mut got = Vec::new();
    for i in 0..3 {
        let mut op = Sessions::default()
            .bind(HeapBackend::new())
            .unwrap()
            .with_key_groups(KeyGroupRange::for_instance(128, 3, i).unwrap())
            .unwrap();
        op.restore_from(&storage, RestorePoint::Latest).unwrap();
        got.extend(image(&mut op, 0..3_000));
    }
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn two_writers_in_redis_never_both_commit() {
    let Some(base) = server() else { return };
    let (_, storage) = storage(&base, "race");
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0..100, 1);
    let base_checkpoint = op.checkpoint(&storage).unwrap();
    let mut first = storage.begin().unwrap();
    first.add(&op).unwrap();
    fill(&mut op, 0..100, 2);
    let second = op.checkpoint(&storage).unwrap();
    let err = first.commit().unwrap_err();
    assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
    let ids: Vec<_> = storage.list().unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, [base_checkpoint.id, second.id]);
    let loser = format!("chk-{:010}/", ids[0].0 + 1);
    assert!(
        storage
            .store()
            .list("")
            .unwrap()
            .iter()
            .all(|n| !n.starts_with(&loser))
    );
    let mut restored = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(image(&mut restored, 0..100), image(&mut op, 0..100));
}

#[test]
fn a_damaged_object_in_redis_is_reported_by_its_key() {
    let Some(base) = server() else { return };
    let (s, storage) = storage(&base, "damaged");
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0..500, 1);
    let good = op.checkpoint(&storage).unwrap();
    fill(&mut op, 0..500, 2);
    let bad = op.checkpoint(&storage).unwrap();
    let name = &bad.files[0].path;
    let len = s.head(name).unwrap().unwrap();
    let mut bytes = s.get_range(name, 0..len).unwrap();
    bytes[len as usize / 2] ^= 0x40;
    s.put(name, &bytes).unwrap();
    let err = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .err()
        .unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains(name.as_str()), "{err}");
    Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Id(good.id))
        .unwrap();
}

#[test]
fn wrong_credentials_and_a_missing_server_are_typed_errors_not_hangs() {
    let Some(base) = server() else { return };
    let started = Instant::now();
    // The test server requires a password; a wrong one is refused.
    let host = base
        .trim_start_matches("redis://")
        .rsplit('@')
        .next()
        .unwrap();
    let wrong = format!("redis://:not-the-password@{host}");
    let storage = open_url(&testing::unique_url(&wrong, "credentials")).unwrap();
    match storage.list().unwrap_err() {
        Error::Io { source, path } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied,
                "{source}"
            );
            assert!(!path.display().to_string().contains("not-the-password"));
        }
        other => panic!("{other}"),
    }
    // Nothing listens on port 1: refused after a few retries.
    let storage = open_url("redis://127.0.0.1:1/0/x").unwrap();
    match storage.list().unwrap_err() {
        Error::Io { source, .. } => {
            assert_eq!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{source}"
            );
        }
        other => panic!("{other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// A Redis server of this test's own on a free port, keeping its data in `dir` (append-only
/// log, so a restart keeps what it acknowledged).
struct OwnServer {
    child: Child,
}

impl OwnServer {
    fn start(dir: &std::path::Path, port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on the PATH (`bash .ci/test` installs it)");
        let server = Self { child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The server is killed in the middle of an upload and comes back: the writer reconnects,
/// finishes, and the object reads back whole.
#[test]
fn an_upload_survives_a_restart_of_the_server() {
    let Some(_) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = OwnServer::start(dir.path(), port);
    let url = format!("redis://127.0.0.1:{port}/0/restart");
    let s = RedisStore::open(&url).unwrap();
    let storage = open_url(&url).unwrap();
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0..1_000, 1);
    let committed = op.checkpoint(&storage).unwrap();

    let big: Vec<u8> = (0..CHUNK_SIZE * 4).map(|i| (i % 253) as u8).collect();
    let mut w = s.create("chk-9/big.snap").unwrap();
    w.write_all(&big[..CHUNK_SIZE * 2]).unwrap();
    // SIGKILL: the append-only log (fsynced at every write) keeps what was acknowledged.
    first.stop();
    let restarted = std::thread::spawn({
        let dir = dir.path().to_owned();
        move || {
            std::thread::sleep(Duration::from_millis(700));
            OwnServer::start(&dir, port)
        }
    });
    w.write_all(&big[CHUNK_SIZE * 2..]).unwrap();
    assert_eq!(w.finish().unwrap(), big.len() as u64);
    let second = restarted.join().unwrap();
    assert_eq!(
        s.get_range("chk-9/big.snap", 0..big.len() as u64).unwrap(),
        big
    );
    // The checkpoint committed before the restart restores.
    let mut restored = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Id(committed.id))
        .unwrap();
    assert_eq!(image(&mut restored, 0..1_000), image(&mut op, 0..1_000));
    second.stop();
}
