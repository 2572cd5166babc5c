//! statebench reproduces `WORKLOAD.md`: its test vectors and the reference checksums of the
//! small run, on every backend.
#![allow(missing_docs, clippy::unwrap_used)]

use statewright_bench::{BACKENDS, Params, WORKLOADS, run};

const SMALL: Params = Params {
    k: 1000,
    n: 10_000,
    seed: 42,
    m: 10,
};

#[test]
fn key_sequence_matches_the_test_vectors() {
    let p = Params {
        k: 1_000_000,
        ..SMALL
    };
    let vectors: [(u64, u64, u64); 8] = [
        (13_679_457_532_755_275_413, 275_413, 2),
        (2_949_826_092_126_892_291, 892_291, 7),
        (5_139_283_748_462_763_858, 763_858, 3),
        (6_349_198_060_258_255_764, 255_764, 1),
        (701_532_786_141_963_250, 963_250, 0),
        (16_015_981_125_662_989_062, 989_062, 4),
        (4_028_864_712_777_624_925, 624_925, 4),
        (14_769_051_326_987_775_908, 775_908, 6),
    ];
    for (i, (r, key, sub)) in vectors.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!((p.r(i), p.key(i), p.sub(i)), (r, key, sub), "i = {i}");
    }
}

#[test]
fn small_run_reproduces_the_reference_checksums() {
    let reference = [
        ("value_update", 0u64, 8_946_517u64),
        ("value_get", 5_028_934, 499_500),
        ("value_rmw", 60_364, 10_000),
        ("map_put", 0, 36_546_916),
        ("map_get", 50_334_338, 49_995_000),
        ("list_add", 0, 49_995_000),
    ];
    assert_eq!(reference.len(), WORKLOADS.len());
    for backend in BACKENDS {
        for (workload, checksum, verify) in reference {
            let lines = run(backend, workload, SMALL).unwrap();
            let last = lines.last().unwrap();
            assert_eq!(
                (last.checksum, last.verify),
                (checksum, verify),
                "{backend} {workload}"
            );
        }
    }
}

#[test]
fn the_snapshot_workload_restores_exactly_on_every_statewright_backend() {
    let p = Params { k: 5_000, ..SMALL };
    for backend in ["heap", "rocksdb", "ttl-heap", "ttl-rocksdb"] {
        let lines = statewright_bench::snapshot::run(backend, p).unwrap();
        let names: Vec<&str> = lines.iter().map(|l| l.workload.as_str()).collect();
        for expected in ["snapshot_full", "snapshot_incr_delta", "restore_incr"] {
            assert!(names.contains(&expected), "{backend}: {names:?}");
        }
        let restores: Vec<_> = lines.iter().filter(|l| l.verify_bad.is_some()).collect();
        assert!(!restores.is_empty(), "{backend}: {names:?}");
        for l in restores {
            assert_eq!(l.verify_bad, Some(0), "{l}");
        }
        let full = lines
            .iter()
            .find(|l| l.workload == "snapshot_full")
            .unwrap();
        let delta = lines
            .iter()
            .find(|l| l.workload == "snapshot_incr_delta")
            .unwrap();
        assert!(
            delta.checkpointed_bytes < full.checkpointed_bytes,
            "{delta}"
        );
    }
    assert!(statewright_bench::snapshot::run("raw-hashmap", p).is_err());
}

#[test]
fn the_large_state_workload_restores_exactly_and_reports_its_memory() {
    let p = Params { k: 20_000, ..SMALL };
    let lines = statewright_bench::large::run(p, None).unwrap();
    let steps: Vec<&str> = lines.iter().map(|l| l.step).collect();
    assert_eq!(
        steps,
        ["large_populate", "large_checkpoint", "large_restore"]
    );
    let restore = &lines[2];
    assert_eq!(restore.verify_bad, Some(0), "{restore}");
    // 256 incompressible bytes a key, plus the key and framing.
    let bytes = restore.snapshot_bytes;
    assert!(
        bytes > 256 * p.k && bytes < 300 * p.k,
        "{bytes} snapshot bytes for {} keys",
        p.k
    );
    if cfg!(target_os = "linux") {
        assert!(lines.iter().all(|l| l.peak_rss.is_some()));
    }
}

/// The store workload restores every value, and a restore at three instances reads about a
/// third of the checkpoint each: locally, and on the S3 server where the test command runs one.
#[test]
fn the_store_workload_restores_exactly_and_a_rescale_reads_its_share() {
    let p = Params { k: 30_000, ..SMALL };
    let s3 = statewright_object_store::testing::s3_endpoint().unwrap();
    let url = s3
        .as_ref()
        .map(|_| statewright_object_store::testing::unique_url("bench"));
    let options: Vec<(&str, &str)> = s3
        .as_deref()
        .map(|e| vec![("aws_endpoint", e), ("aws_allow_http", "true")])
        .unwrap_or_default();
    let lines = statewright_bench::store::run("heap", p, url.as_deref(), &options).unwrap();
    let stores = if s3.is_some() { 2 } else { 1 };
    assert_eq!(lines.len(), 3 * stores, "{lines:#?}");
    for line in &lines {
        let fields: std::collections::HashMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .collect();
        if let Some(bad) = fields.get("verify_bad") {
            assert_eq!(*bad, "0", "{line}");
        }
        if let Some(share) = fields.get("of_a_third") {
            let share: f64 = share.parse().unwrap();
            assert!(
                share <= 1.2,
                "a rescaled instance read {share} × a third: {line}"
            );
        }
        assert!(fields["bytes"].parse::<u64>().unwrap() > 0, "{line}");
    }
}

/// Each line carries the process's peak RSS, and a backend's line its ratio to the raw
/// baseline of the same run.
#[test]
fn lines_carry_peak_rss_and_the_ratio_to_their_baseline() {
    let mut lines = run("heap", "value_rmw", SMALL).unwrap();
    lines.extend(run("raw-hashmap", "value_rmw", SMALL).unwrap());
    lines.extend(run("rocksdb", "value_rmw", SMALL).unwrap());
    statewright_bench::with_ratios(&mut lines);
    let heap = lines.iter().find(|l| l.backend == "heap").unwrap();
    let raw = lines.iter().find(|l| l.backend == "raw-hashmap").unwrap();
    let ratio = heap.vs_raw.unwrap();
    assert!((ratio - heap.ops_per_s() / raw.ops_per_s()).abs() < 1e-9);
    assert!(heap.peak_rss.unwrap() > 0);
    assert!(heap.to_string().contains(" vs_raw="), "{heap}");
    // No raw-rocksdb in this run: no ratio for rocksdb, and none for a baseline itself.
    let rocks = lines.iter().find(|l| l.backend == "rocksdb").unwrap();
    assert_eq!(rocks.vs_raw, None);
    assert_eq!(raw.vs_raw, None);
}

#[test]
fn the_timer_workloads_agree_on_every_backend() {
    use statewright_bench::timers::{TIMER_WORKLOADS, run};
    let p = Params {
        k: 2_000,
        n: 20_000,
        ..SMALL
    };
    for workload in TIMER_WORKLOADS {
        let mut seen = Vec::new();
        for backend in ["heap", "rocksdb", "raw-hashmap", "raw-rocksdb"] {
            let lines = run(backend, workload, p).unwrap();
            let last = lines.last().unwrap();
            assert_eq!(last.workload, *workload);
            seen.push((backend, last.checksum, last.verify));
        }
        // Timers fire in the same order everywhere; windows hold the same counts.
        assert!(
            seen.iter().all(|s| (s.1, s.2) == (seen[0].1, seen[0].2)),
            "{workload}: {seen:?}"
        );
        // Every registered timer fired (or is held), and windowed adds counted something.
        assert!(seen[0].2 > 0, "{workload}: {seen:?}");
    }
}
