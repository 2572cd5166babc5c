//! Jobs in one process: a worker that receives no record, a file source resumed at its
//! recorded position after a failure, timers and processing time, and the checks a job makes
//! before it starts.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use statewright::prelude::*;
use statewright::{CheckpointId, Error};
use statewright_timely::{Emit, FileSource, GeneratedSource, Job, JobConfig, timely};

#[derive(StatefulOperator, Default)]
#[operator(name = "counts", key = u64)]
struct Counts {
    count: ValueState<u64>,
    /// A reminder at the end of each 100 units of time in which the key was seen.
    timers: TimerService,
}

fn count<B: AnyBackend>(op: &mut Bound<Counts, B>, key: u64) -> Option<u64> {
    op.key(&key).unwrap().count().get_owned().unwrap()
}

/// Runs a job counting records per key on `workers` workers of one process; `fail_at` makes
/// the record with that value fail the job the first time it is seen.
fn count_job<S>(
    config: JobConfig,
    workers: usize,
    source: impl Fn() -> S + Send + Sync + 'static,
    fail: Option<(u64, Arc<AtomicBool>)>,
) -> Result<Vec<(u64, u64, u64)>, Error>
where
    S: statewright_timely::Source<Item = (u64, u64)>,
{
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let fired = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = std::rc::Rc::clone(&fired);
        let fail = fail.clone();
        let handle = worker.dataflow::<u64, _, _>(|scope| {
            let mut job = Job::new(scope, &config)?;
            let records = job.source("records", source())?;
            let reminders = job.stateful(
                records,
                Counts::default(),
                HeapBackend::new(),
                |(key, _value): &(u64, u64)| *key,
                move |mut st, (_key, value), out: &mut Emit<'_, (u64, u64, u64)>| {
                    if let Some((at, armed)) = &fail
                        && value == *at
                        && armed.swap(false, Ordering::SeqCst)
                    {
                        return Err(Error::Backend {
                            backend: "test",
                            message: format!("record {value} fails once"),
                        });
                    }
                    st.count().update(|c| c.unwrap_or(0) + 1)?;
                    let t = i64::try_from(out.time()).unwrap();
                    st.timers().register_event_time(t / 100 * 100 + 99)?;
                    Ok(())
                },
                |timer, mut st, out| {
                    let n = st.count().get_owned()?.unwrap_or(0);
                    out.emit((timer.key, timer.timestamp as u64, n));
                    Ok(())
                },
            )?;
            use timely::dataflow::operators::Inspect;
            reminders.inspect(move |r| seen.borrow_mut().push(*r));
            Ok::<_, Error>(job.finish(|_| {}))
        })?;
        handle.run(worker)?;
        let out = fired.borrow().clone();
        Ok::<_, Error>(out)
    })
    .map_err(|e| Error::Backend {
        backend: "test",
        message: e,
    })?;
    let mut all = Vec::new();
    for r in guards.join() {
        all.extend(r.map_err(|e| Error::Backend {
            backend: "test",
            message: e,
        })??);
    }
    Ok(all)
}

#[test]
fn a_worker_that_receives_no_record_still_writes_its_part() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let config = JobConfig::new(storage.clone()).checkpoint_every(50);
    // Every record has key 7: one worker of four holds all the state.
    count_job(
        config,
        4,
        || GeneratedSource::new(2, 500, |_p, i| (i, (7, i))),
        None,
    )
    .unwrap();
    let checkpoints = storage.list().unwrap();
    assert!(!checkpoints.is_empty());
    for c in &checkpoints {
        // Four parts of `counts`, covering every key group, and the sources' positions.
        let parts: Vec<_> = c.files.iter().filter(|f| f.operator == "counts").collect();
        assert_eq!(parts.len(), 4, "checkpoint {}", c.id);
        let covered: u32 = parts
            .iter()
            .map(|f| u32::from(f.last_key_group) - u32::from(f.first_key_group) + 1)
            .sum();
        assert_eq!(covered, 128);
        assert!(c.files.iter().any(|f| f.operator == "sources"));
    }
    let mut op = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert_eq!(count(&mut op, 7), Some(1_000));
}

fn write_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    // Two files of "time,key" lines: 30,000 lines each, keys 0..40.
    (0..2u64)
        .map(|f| {
            let path = dir.join(format!("input-{f}.txt"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            for i in 0..30_000u64 {
                writeln!(out, "{},{}", i / 3, (i * 7 + f * 13) % 40).unwrap();
            }
            path
        })
        .collect()
}

fn file_source(
    paths: Vec<std::path::PathBuf>,
) -> impl statewright_timely::Source<Item = (u64, u64)> {
    FileSource::new(paths, |line: &str| {
        let (time, key) = line.split_once(',').ok_or("no comma")?;
        let time: u64 = time.parse().map_err(|e| format!("{e}"))?;
        let key: u64 = key.parse().map_err(|e| format!("{e}"))?;
        // The value is the line's identity, to fail on one.
        Ok((time, (key, time * 1_000 + key)))
    })
}

#[test]
fn a_failed_job_restarts_from_its_checkpoint_and_reads_each_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_files(dir.path());
    let mut expected: BTreeMap<u64, u64> = BTreeMap::new();
    for f in 0..2u64 {
        for i in 0..30_000u64 {
            *expected.entry((i * 7 + f * 13) % 40).or_default() += 1;
        }
    }
    let storage = CheckpointStorage::open(dir.path().join("checkpoints")).unwrap();
    // The first run fails at time 7,000 (key 0 of file 0 there), after some checkpoints.
    let armed = Arc::new(AtomicBool::new(true));
    let p = paths.clone();
    let first = count_job(
        JobConfig::new(storage.clone()).checkpoint_every(100),
        1,
        move || file_source(p.clone()),
        // Line 21,000 of file 0: time 7,000, key 21,000 * 7 % 40 = 0.
        Some((7_000_000, Arc::clone(&armed))),
    );
    assert!(first.is_err(), "the first run fails");
    assert!(!armed.load(Ordering::SeqCst));
    let restored = storage
        .latest()
        .unwrap()
        .expect("a checkpoint before the failure");
    assert!(restored.id <= CheckpointId(70), "{}", restored.id);

    // The second run resumes from it, on two workers.
    let p = paths.clone();
    let fired = count_job(
        JobConfig::new(storage.clone()).checkpoint_every(100),
        2,
        move || file_source(p.clone()),
        None,
    )
    .unwrap();
    let mut op = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    for (key, n) in &expected {
        assert_eq!(count(&mut op, *key), Some(*n), "key {key}");
    }
    // The reminders after the restored checkpoint fired once each, in time order per key,
    // with the count as of their time.
    let mut per_key: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (key, ts, _n) in &fired {
        per_key.entry(*key).or_default().push(*ts);
    }
    for (key, times) in per_key {
        let mut sorted = times.clone();
        sorted.dedup();
        assert_eq!(sorted, times, "key {key}: each reminder once, in order");
    }
}

#[test]
fn a_fresh_job_refuses_a_storage_with_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    count_job(
        JobConfig::new(storage.clone()).checkpoint_every(10),
        1,
        || GeneratedSource::new(1, 100, |_p, i| (i, (i % 3, i))),
        None,
    )
    .unwrap();
    let err = count_job(
        JobConfig::new(storage).fresh(),
        1,
        || GeneratedSource::new(1, 100, |_p, i| (i, (i % 3, i))),
        None,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("configured to start fresh"),
        "{err}"
    );
}

#[test]
fn a_source_whose_times_go_back_fails_the_job_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let err = count_job(
        JobConfig::new(storage.clone()).checkpoint_every(10),
        1,
        || GeneratedSource::new(1, 100, |_p, i| (if i == 50 { 3 } else { i }, (i % 3, i))),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("must not decrease"), "{err}");
    // Nothing after the failure was committed: the latest checkpoint is before time 50.
    let latest = storage.latest().unwrap().map_or(0, |c| c.id.0);
    assert!(latest <= 5, "{latest}");
}

/// A job whose operator keeps its state in RocksDB, one database per worker: its checkpoints
/// are canonical parts, which the heap restores, and which a second run on one worker
/// restores into RocksDB again before reading on.
#[cfg(feature = "rocksdb")]
#[test]
fn a_job_on_rocksdb_checkpoints_parts_any_backend_restores() {
    use statewright::{RocksDbBackend, RocksDbOptions};
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path().join("checkpoints")).unwrap();
    let run = |workers: usize, records: u64, db: &str| {
        let config = JobConfig::new(storage.clone()).checkpoint_every(100);
        let root = dir.path().join(db);
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let index = worker.index();
            let path = root.join(format!("worker-{index}"));
            let handle = worker.dataflow::<u64, _, _>(|scope| {
                let mut job = Job::new(scope, &config)?;
                let records = job.source(
                    "records",
                    GeneratedSource::new(2, records, |_p, i| (i, (i % 50, i))),
                )?;
                job.stateful(
                    records,
                    Counts::default(),
                    RocksDbBackend::open(&path, RocksDbOptions::low_memory())?,
                    |(key, _): &(u64, u64)| *key,
                    |mut st, _r, _out: &mut Emit<'_, ()>| {
                        st.count().update(|c| c.unwrap_or(0) + 1)?;
                        Ok(())
                    },
                    |_timer, _st, _out| Ok(()),
                )?;
                Ok::<_, Error>(job.finish(|_| {}))
            })?;
            handle.run(worker)
        })
        .unwrap();
        for r in guards.join() {
            r.unwrap().unwrap();
        }
    };
    run(2, 1_000, "first");
    let mut heap = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    for key in 0..50 {
        assert_eq!(count(&mut heap, key), Some(40), "key {key}");
    }
    // The source grew: a second run on one worker restores its RocksDB database from the
    // parts and reads each partition on from where the first run ended.
    run(1, 2_000, "second");
    let mut heap = Counts::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    for key in 0..50 {
        assert_eq!(count(&mut heap, key), Some(80), "key {key}");
    }
}

/// Processing-time timers fire from the worker's clock while the job runs: each key's first
/// record registers a timer 30 ms later, and the source takes far longer than that.
#[test]
fn processing_time_timers_fire_from_the_worker_clock() {
    let dir = tempfile::tempdir().unwrap();
    let storage = CheckpointStorage::open(dir.path()).unwrap();
    let config = JobConfig::new(storage).checkpoint_every(1_000);
    let guards = timely::execute(timely::Config::process(2), move |worker| {
        let fired = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let seen = std::rc::Rc::clone(&fired);
        let handle = worker.dataflow::<u64, _, _>(|scope| {
            let mut job = Job::new(scope, &config)?;
            // 10 keys, 40 records each, a millisecond apart per partition.
            let records = job.source(
                "slow",
                GeneratedSource::new(2, 200, |p, i| {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    (i, ((i + u64::from(p)) % 10, i))
                }),
            )?;
            let out = job.stateful(
                records,
                Counts::default(),
                HeapBackend::new(),
                |(key, _): &(u64, u64)| *key,
                |mut st, _r, _out: &mut Emit<'_, (u64, i64)>| {
                    let first = st.count().get_owned()?.is_none();
                    st.count().update(|c| c.unwrap_or(0) + 1)?;
                    if first {
                        let now = statewright::timers::system_time_millis();
                        st.timers().register_processing_time(now + 30)?;
                    }
                    Ok(())
                },
                |timer, _st, out| {
                    assert_eq!(timer.domain, TimeDomain::ProcessingTime);
                    out.emit((timer.key, timer.timestamp));
                    Ok(())
                },
            )?;
            use timely::dataflow::operators::Inspect;
            out.inspect(move |r| seen.borrow_mut().push(*r));
            Ok::<_, Error>(job.finish(|_| {}))
        })?;
        handle.run(worker)?;
        let out = fired.borrow().clone();
        Ok::<_, Error>(out)
    })
    .unwrap();
    let mut all = Vec::new();
    for r in guards.join() {
        all.extend(r.unwrap().unwrap());
    }
    all.sort_unstable();
    let keys: Vec<u64> = all.iter().map(|(k, _)| *k).collect();
    // Every key's timer fired once, while the job ran (the input took about 200 ms).
    assert_eq!(keys, (0..10).collect::<Vec<_>>(), "{all:?}");
}

/// Parts are incremental when the previous part is in a committed checkpoint: the changes
/// since it, on the chain of parts before it; a restore reads the chains, and `max_chain(0)`
/// writes full parts only.
#[test]
fn incremental_parts_follow_committed_ones_and_restore() {
    let run = |max_chain: usize| {
        let dir = tempfile::tempdir().unwrap();
        let storage = CheckpointStorage::open(dir.path())
            .unwrap()
            .max_retained(100);
        let config = JobConfig::new(storage.clone())
            .checkpoint_every(10)
            .max_chain(max_chain);
        let guards = timely::execute(timely::Config::process(2), move |worker| {
            let handle = worker.dataflow::<u64, _, _>(|scope| {
                let mut job = Job::new(scope, &config)?;
                // 150 records, 4 ms apart: a checkpoint every 40 ms or so, time enough for
                // the one before to commit.
                let records = job.source(
                    "slow",
                    GeneratedSource::new(1, 150, |_p, i| {
                        std::thread::sleep(std::time::Duration::from_millis(4));
                        (i, (i % 20, i))
                    }),
                )?;
                job.stateful(
                    records,
                    Counts::default(),
                    HeapBackend::new(),
                    |(key, _): &(u64, u64)| *key,
                    |mut st, _r, _out: &mut Emit<'_, ()>| {
                        st.count().update(|c| c.unwrap_or(0) + 1)?;
                        Ok(())
                    },
                    |_timer, _st, _out| Ok(()),
                )?;
                Ok::<_, Error>(job.finish(|_| {}))
            })?;
            handle.run(worker)
        })
        .unwrap();
        for r in guards.join() {
            r.unwrap().unwrap();
        }
        let incremental = storage
            .list()
            .unwrap()
            .iter()
            .flat_map(|c| c.files.clone())
            .filter(|f| f.kind == statewright::checkpoint::SnapshotKind::Incremental)
            .count();
        // Every retained checkpoint restores to the counts of its time.
        for c in storage.list().unwrap() {
            let mut op = Counts::default()
                .restore(HeapBackend::new(), &storage, RestorePoint::Id(c.id))
                .unwrap();
            let seen: u64 = (0..20).map(|k| count(&mut op, k).unwrap_or(0)).sum();
            let expected = if c.id == storage.latest().unwrap().unwrap().id {
                150
            } else {
                (c.id.0 * 10).min(150)
            };
            assert_eq!(seen, expected, "checkpoint {}", c.id);
        }
        incremental
    };
    assert!(run(10) > 0, "some parts are incremental");
    assert_eq!(run(0), 0);
}
