//! Crash proof for timers: a child process registers timers, fires those the watermark passes
//! (each firing counted in the key's state) and checkpoints after every round, and is killed
//! with SIGKILL at random points. After each kill every retained checkpoint restores to
//! exactly the timers of its round: none lost (every timer registered and not fired before the
//! checkpoint is pending), none fired twice (a timer fired before the checkpoint is counted
//! once and pending no more), and each pending timer fires exactly once after the restore.
//!
//! `STATEWRIGHT_CRASH_POINTS` sets the number of kills (default 20);
//! `STATEWRIGHT_CRASH_SEED` replays a run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;

const KEYS: u64 = 400;
const CHILD_ENV: &str = "STATEWRIGHT_TIMER_CRASH_CHILD_DIR";

#[derive(StatefulOperator, Default)]
#[operator(name = "timer-crash", key = u64)]
struct TimerCrash {
    /// The last round completed (under key 0).
    round: ValueState<u64>,
    /// How often each key's timers fired.
    fired: ValueState<u64>,
    timers: TimerService<u8>,
}

fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig::new(dir.join("checkpoints"))
        .max_retained(3)
        .max_chain(4)
        .max_chain_ratio(100.0)
}

/// The timers round `r` registers for key `k`: (namespace, time).
fn timers_of(r: u64, k: u64) -> [(u8, i64); 2] {
    let base = (r * 1_000) as i64;
    [
        ((k % 3) as u8, base + (k % 997) as i64),
        (7, base + 500 + (k % 13) as i64),
    ]
}

/// The watermark after round `r`: two rounds behind.
fn watermark_after(r: u64) -> i64 {
    (r as i64 - 2) * 1_000 + 500
}

/// The child: rounds of registrations and firings, a checkpoint after each round.
#[test]
#[ignore = "the child process of `sigkill_with_pending_timers`, which runs it"]
fn timer_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut checkpointer = Checkpointer::new(config(dir)).unwrap();
        let mut op = TimerCrash::default().bind(HeapBackend::new()).unwrap();
        if checkpointer.storage().list().unwrap().last().is_some() {
            op.restore_from(checkpointer.storage(), RestorePoint::Latest)
                .unwrap();
        }
        let mut round = op
            .key(&0)
            .unwrap()
            .round()
            .get_owned()
            .unwrap()
            .unwrap_or(0);
        let mut out = std::io::stdout();
        loop {
            round += 1;
            for k in 0..KEYS {
                let mut st = op.key(&k).unwrap();
                for (ns, ts) in timers_of(round, k) {
                    st.timers().register_event_time_in(&ns, ts).unwrap();
                }
            }
            op.advance_watermark(watermark_after(round), |_, mut st| {
                st.fired().update(|f| f.unwrap_or(0) + 1)
            })
            .unwrap();
            op.key(&0).unwrap().round().set(&round).unwrap();
            checkpointer.trigger(&mut [&mut op]).unwrap();
            let report = checkpointer.wait().await.unwrap().unwrap();
            writeln!(out, "committed {} {round}", report.info.id).unwrap();
            out.flush().unwrap();
        }
    });
}

/// Every timer registered up to round `round`: (time, key, namespace).
fn registered(round: u64) -> BTreeSet<(i64, u64, u8)> {
    let mut all = BTreeSet::new();
    for r in 1..=round {
        for k in 0..KEYS {
            for (ns, ts) in timers_of(r, k) {
                all.insert((ts, k, ns));
            }
        }
    }
    all
}

/// Restores `info` and checks its timers against the model; returns its round.
fn check(storage: &CheckpointStorage, info: &statewright::CheckpointInfo) -> u64 {
    let mut op = TimerCrash::default()
        .restore(HeapBackend::new(), storage, RestorePoint::Id(info.id))
        .unwrap();
    let round = op.key(&0).unwrap().round().get_owned().unwrap().unwrap();
    let watermark = watermark_after(round);
    assert_eq!(op.watermark(), Some(watermark));
    let all = registered(round);
    let (fired, pending): (Vec<&(i64, u64, u8)>, Vec<_>) =
        all.iter().partition(|t| t.0 <= watermark);
    assert_eq!(
        op.timer_count(TimeDomain::EventTime).unwrap(),
        pending.len(),
        "checkpoint {} (round {round})",
        info.id
    );
    for k in 0..KEYS {
        let mut st = op.key(&k).unwrap();
        let expected_fired = fired.iter().filter(|t| t.1 == k).count() as u64;
        assert_eq!(
            st.fired().get_owned().unwrap().unwrap_or(0),
            expected_fired,
            "key {k}: fired before checkpoint {} (round {round})",
            info.id
        );
        let listed: Vec<(i64, u8)> = st
            .timers()
            .list()
            .unwrap()
            .into_iter()
            .map(|(_, ts, ns)| (ts, ns))
            .collect();
        let mut expected: Vec<(i64, u8)> = pending
            .iter()
            .filter(|t| t.1 == k)
            .map(|t| (t.0, t.2))
            .collect();
        expected.sort_unstable();
        assert_eq!(listed, expected, "key {k}");
    }
    // After the restore, every pending timer fires exactly once, in order.
    let mut after = Vec::new();
    op.advance_watermark(i64::MAX, |t, _| {
        after.push((t.timestamp, t.key, t.namespace));
        Ok(())
    })
    .unwrap();
    let pending: Vec<(i64, u64, u8)> = pending.into_iter().copied().collect();
    assert_eq!(after, pending);
    round
}

fn next(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn sigkill_with_pending_timers() {
    let points: u32 = std::env::var("STATEWRIGHT_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::env::var("STATEWRIGHT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("timer crash test seed {seed} ({points} kills)");
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_reported = 0u64;
    for point in 0..points {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "timer_crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let wait_for = 1 + next(&mut seed) % 3;
        let mut seen = 0;
        while seen < wait_for {
            let line = lines.next().expect("child ended early").unwrap();
            if let Some(rest) = line.strip_prefix("committed ") {
                let round: u64 = rest.split(' ').nth(1).unwrap().parse().unwrap();
                assert!(round > last_reported);
                last_reported = round;
                seen += 1;
            }
        }
        // Kill somewhere in the next round: registering, firing, capturing or committing.
        std::thread::sleep(Duration::from_micros(next(&mut seed) % 10_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let storage = CheckpointStorage::open(dir.path().join("checkpoints")).unwrap();
        let retained = storage.list().unwrap();
        assert!(!retained.is_empty());
        for (i, info) in retained.iter().enumerate() {
            let round = check(&storage, info);
            if i + 1 == retained.len() {
                assert!(
                    round >= last_reported,
                    "point {point}: latest checkpoint has round {round}, round {last_reported} was committed"
                );
                last_reported = round;
            }
        }
    }
}
