//! The `page_views` job as real processes on loopback: killed with SIGKILL in the middle of
//! an epoch, restarted with another number of processes, and compared with a
//! single-threaded reference (state exactly once, the sink's files exactly once).
#![allow(
    missing_docs,
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use statewright::prelude::*;

#[path = "../examples/page_views.rs"]
mod page_views;

use page_views::Options;

const CHILD: &str = "STATEWRIGHT_TIMELY_JOB";

/// One process of a job, started by the tests below with its options in the environment.
#[test]
#[ignore = "a process of a multi-process job: the tests in this file start it"]
fn job_process() {
    let Ok(spec) = std::env::var(CHILD) else {
        return;
    };
    let f: Vec<&str> = spec.split('|').collect();
    let options = Options {
        processes: f[0].parse().unwrap(),
        process: f[1].parse().unwrap(),
        workers: f[2].parse().unwrap(),
        port: f[3].parse().unwrap(),
        per_partition: f[4].parse().unwrap(),
        checkpoints: f[5].to_owned(),
        output: f[6].into(),
        interval: f[7].parse().unwrap(),
        pace_us: f[8].parse().unwrap(),
    };
    page_views::run(&options).unwrap();
}

/// `n` consecutive free ports on 127.0.0.1.
fn free_ports(n: u16) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for attempt in 0..200u64 {
        let base = 20_000 + ((seed.wrapping_mul(31).wrapping_add(attempt * 7_919)) % 30_000) as u16;
        let free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free ports on 127.0.0.1");
}

fn spawn(options: &Options) -> Vec<Child> {
    let exe = std::env::current_exe().unwrap();
    (0..options.processes)
        .map(|p| {
            let spec = format!(
                "{}|{p}|{}|{}|{}|{}|{}|{}|{}",
                options.processes,
                options.workers,
                options.port,
                options.per_partition,
                options.checkpoints,
                options.output.display(),
                options.interval,
                options.pace_us
            );
            let mut cmd = Command::new(&exe);
            cmd.args(["job_process", "--exact", "--ignored", "--nocapture"])
                .env(CHILD, spec)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(endpoint) = std::env::var("STATEWRIGHT_S3_ENDPOINT") {
                cmd.env("AWS_ENDPOINT", endpoint);
            }
            cmd.spawn().unwrap()
        })
        .collect()
}

fn wait_all(children: &mut [Child], limit: Duration) {
    let start = Instant::now();
    for child in children.iter_mut() {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "a job process failed: {status}");
                break;
            }
            assert!(start.elapsed() < limit, "the job did not end in {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn storage(options: &Options) -> CheckpointStorage {
    if options.checkpoints.contains("://") {
        let endpoint = std::env::var("STATEWRIGHT_S3_ENDPOINT").unwrap();
        statewright::store::open_url(
            &options.checkpoints,
            [
                ("aws_endpoint", endpoint.as_str()),
                ("aws_allow_http", "true"),
            ],
        )
        .unwrap()
    } else {
        CheckpointStorage::open(&options.checkpoints).unwrap()
    }
}

fn latest(options: &Options) -> u64 {
    storage(options).latest().unwrap().map_or(0, |c| c.id.0)
}

/// Waits until checkpoint `id` is committed, then kills one process with SIGKILL and the
/// others after it (a worker's failure stops the job: it restarts as a whole).
fn kill_after(children: &mut [Child], options: &Options, id: u64, victim: usize) -> u64 {
    let start = Instant::now();
    while latest(options) < id {
        for child in children.iter_mut() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a job process ended before checkpoint {id}"
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint {id}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // In the middle of the next epoch.
    std::thread::sleep(Duration::from_millis(30));
    children[victim].kill().unwrap();
    children[victim].wait().unwrap();
    for child in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    latest(options)
}

fn options(dir: &Path, processes: usize, workers: usize, pace_us: u64) -> Options {
    Options {
        processes,
        process: 0,
        workers,
        port: free_ports(processes as u16),
        per_partition: 6_000,
        checkpoints: dir.join("checkpoints").display().to_string(),
        output: dir.join("output"),
        interval: 100,
        pace_us,
    }
}

fn committed_files(options: &Options) -> usize {
    std::fs::read_dir(&options.output)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "txt"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn killed_then_restarted_on_another_number_of_processes_equals_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let expected = page_views::reference(6_000);

    // 2 processes, 2 workers each; one process is killed after checkpoint 5.
    let first = options(dir.path(), 2, 2, 20_000);
    let mut children = spawn(&first);
    let after_first = kill_after(&mut children, &first, 5, 1);
    assert!(after_first >= 5);
    // Every committed checkpoint restores; nothing partial is listed.
    let listed = storage(&first).list().unwrap();
    assert!(
        listed.iter().all(|c| c.files.len() == 4 + 4 + 1),
        "{listed:?}"
    );
    let partial = page_views::results(&first).unwrap();
    assert!(partial.lines.len() < expected.lines.len());

    // 3 processes, 1 worker each: restores from the latest checkpoint, killed again.
    let second = options(dir.path(), 3, 1, 20_000);
    let mut children = spawn(&second);
    let after_second = kill_after(&mut children, &second, after_first + 5, 0);
    assert!(after_second > after_first);

    // 1 process, 1 worker, to the end.
    let third = options(dir.path(), 1, 1, 0);
    let mut children = spawn(&third);
    wait_all(&mut children, Duration::from_secs(120));

    let actual = page_views::results(&third).unwrap();
    assert_eq!(actual.users, expected.users, "users' state");
    assert_eq!(actual.pages, expected.pages, "pages' state");
    // Every window's count once: none lost, none written twice across the restarts.
    assert_eq!(actual.lines, expected.lines, "the sink's lines");
    // Every file of a committed checkpoint has its final name; none is left pending.
    let last = latest(&third);
    assert!(committed_files(&third) > 0);
    for e in std::fs::read_dir(&third.output).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(id) = name.strip_suffix(".pending") {
            assert!(
                id.parse::<u64>().unwrap() > last,
                "{name} was committed but not renamed"
            );
        }
    }
}

#[test]
fn one_process_with_more_workers_than_partitions_equals_the_reference() {
    // 8 workers, 6 source partitions: two workers read nothing, and still write their parts.
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        per_partition: 2_000,
        ..options(dir.path(), 1, 8, 0)
    };
    page_views::run(&options).unwrap();
    let expected = page_views::reference(2_000);
    let actual = page_views::results(&options).unwrap();
    assert_eq!(actual, expected);
    let info = storage(&options).latest().unwrap().unwrap();
    // 8 parts of each operator and the sources' positions.
    assert_eq!(info.files.len(), 8 + 8 + 1);
}

#[test]
fn two_processes_checkpoint_to_s3() {
    if std::env::var("STATEWRIGHT_S3_ENDPOINT").is_err() {
        assert!(
            std::env::var_os("STATEWRIGHT_REQUIRE_S3").is_none(),
            "STATEWRIGHT_REQUIRE_S3 is set but STATEWRIGHT_S3_ENDPOINT is not"
        );
        eprintln!("skipped: STATEWRIGHT_S3_ENDPOINT is not set (`bash .ci/test` sets it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let options = Options {
        per_partition: 2_000,
        checkpoints: format!(
            "s3://statewright/tests/timely-{}-{nanos}",
            std::process::id()
        ),
        ..options(dir.path(), 2, 1, 0)
    };
    let mut children = spawn(&options);
    wait_all(&mut children, Duration::from_secs(120));
    let expected = page_views::reference(2_000);
    let actual = page_views::results_in(&storage(&options), &options.output).unwrap();
    assert_eq!(actual, expected);
}
