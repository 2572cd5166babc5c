//! The S3 server stopped in the middle of an upload and started again: a SeaweedFS server of
//! this test's own (other ports, its own data directory), so the tests sharing the main server
//! go on. The `weed` binary comes from `STATEWRIGHT_WEED`, which `bash .ci/test` sets.
#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use statewright::prelude::*;
use statewright_object_store::{PART_SIZE, open_url, testing};

/// Ports no other server of the test run uses.
const S3: u16 = 8433;
const MASTER: u16 = 9433;
const FILER: u16 = 8988;

fn weed() -> Option<PathBuf> {
    testing::s3_endpoint().unwrap()?;
    match std::env::var_os("STATEWRIGHT_WEED") {
        Some(w) => Some(PathBuf::from(w)),
        None if std::env::var_os("STATEWRIGHT_REQUIRE_S3").is_some() => {
            panic!(
                "STATEWRIGHT_REQUIRE_S3 is set but STATEWRIGHT_WEED is not (see `bash .ci/test`)"
            )
        }
        None => {
            eprintln!("skipped: STATEWRIGHT_WEED is not set");
            None
        }
    }
}

/// A `weed mini` on 127.0.0.1 at the ports above, its data in `dir`.
struct Server {
    child: Child,
}

impl Server {
    fn start(weed: &Path, dir: &Path) -> Self {
        let port = |flag: &str, port: u16| format!("-{flag}={port}");
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-bucket=statewright"])
            .args(["-admin.ui=false", "-master.telemetry=false"])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(port("s3.port", S3))
            .arg(port("s3.port.grpc", S3 + 10_000))
            .arg(port("master.port", MASTER))
            .arg(port("master.port.grpc", MASTER + 10_000))
            .arg(port("volume.port", 9440))
            .arg(port("volume.port.grpc", 19_440))
            .arg(port("filer.port", FILER))
            .arg(port("filer.port.grpc", FILER + 10_000))
            .arg(port("webdav.port", 7433))
            .arg(port("admin.port", 23_746))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { child };
        // Writable when the master assigns a file id, the filer answers and the bucket exists
        // (an unsigned request for it is refused: 403, not 404 or 503).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let assigns = get(MASTER, "/dir/assign").is_some_and(|b| b.contains("fid"));
            let bucket =
                get(S3, "/statewright").is_some_and(|r| r.split_whitespace().nth(1) == Some("403"));
            if assigns && get(FILER, "/").is_some() && bucket {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the second S3 server did not start"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of an HTTP GET on 127.0.0.1, `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/").then_some(response)
}

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
struct Counts {
    count: ValueState<u64>,
}

#[test]
fn an_upload_survives_a_restart_of_the_s3_server() {
    let Some(weed) = weed() else { return };
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(&weed, dir.path());
    let url = testing::unique_url("restart");
    let endpoint = format!("http://127.0.0.1:{S3}");
    let storage = open_url(
        &url,
        [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
        ],
    )
    .unwrap();
    // The bucket is created after the ports open: wait until a write goes through.
    let deadline = Instant::now() + Duration::from_secs(120);
    while storage.store().put("ready", b"x").is_err() {
        assert!(
            Instant::now() < deadline,
            "the second S3 server takes no writes"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut op = Counts::default().bind(HeapBackend::new()).unwrap();
    for k in 0..1_000u64 {
        op.key(&k).unwrap().count().set(&k).unwrap();
    }
    let committed = op.checkpoint(&storage).unwrap();

    // Two parts go up; the server dies; the third part and the completion wait for it.
    let big: Vec<u8> = (0..PART_SIZE * 3 + 1_000)
        .map(|i| (i % 251) as u8)
        .collect();
    let s = storage.store();
    let mut w = s.create("chk-9/big.snap").unwrap();
    w.write_all(&big[..PART_SIZE * 2]).unwrap();
    first.kill();
    let restarted = std::thread::spawn({
        let (weed, dir) = (weed.clone(), dir.path().to_owned());
        move || {
            std::thread::sleep(Duration::from_secs(1));
            Server::start(&weed, &dir)
        }
    });
    w.write_all(&big[PART_SIZE * 2..]).unwrap();
    assert_eq!(w.finish().unwrap(), big.len() as u64);
    let second = restarted.join().unwrap();
    assert_eq!(
        s.get_range("chk-9/big.snap", 0..big.len() as u64).unwrap(),
        big
    );
    // What was committed before the restart restores.
    let mut restored = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Id(committed.id))
        .unwrap();
    assert_eq!(
        restored.key(&999).unwrap().count().get_owned().unwrap(),
        Some(999)
    );
    second.kill();
}
