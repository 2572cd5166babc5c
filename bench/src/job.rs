//! The `job_value_rmw` workload: `value_rmw` (WORKLOAD.md's key sequence, a read-modify-write
//! counter per key) as a timely-dataflow job (a generated source of the records, 1,024 to a
//! unit of time, keyed by key, a discarding sink, a checkpoint after `N / 2` records and a final one, to a
//! local directory) on one
//! process with 1 and with 2 workers, against the same records applied by a plain `Bound`
//! loop in the same run.
//!
//! Lines: `<backend> job_value_rmw_loop` (the plain loop), `job_value_rmw_1w`,
//! `job_value_rmw_2w` (the job, from its start until every worker has processed its input,
//! the middle checkpoint included; the ratio over the loop is its `vs_raw`),
//! `job_value_rmw_<w>w_total` (until the final checkpoint is committed), and for each job
//! `job_value_rmw_<w>w_pause` (`secs`: the longest synchronous capture of a checkpoint part
//! on any worker) and `job_value_rmw_<w>w_checkpoint` (`secs`: the longest time from a
//! checkpoint's first capture to its commit).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use statewright::prelude::*;
use statewright::{RocksDbBackend, RocksDbOptions};
use statewright_timely::{GeneratedSource, Job, JobConfig, JobStats, timely};

use crate::{Line, Params};

/// Records per unit of time.
const PER_TIME: u64 = 1_024;

/// The workload of this module.
pub const JOB_WORKLOADS: &[&str] = &["job_value_rmw"];

#[derive(StatefulOperator, Default)]
#[operator(name = "job-rmw", key = u64)]
struct Rmw {
    value: ValueState<i64>,
}

fn err(message: String) -> statewright::Error {
    statewright::Error::Backend {
        backend: "statebench",
        message,
    }
}

fn rmw<B: AnyBackend>(op: &mut Bound<Rmw, B>, key: u64) -> statewright::Result<u64> {
    let mut st = op.key(&key)?;
    let c = st.value().get_owned()?.unwrap_or(0) + 1;
    st.value().set(&c)?;
    Ok(c as u64)
}

/// The plain loop: every record applied to one `Bound`.
fn plain(kind: &str, p: Params, dir: &std::path::Path) -> statewright::Result<(f64, u64)> {
    match kind {
        "heap" => plain_on(Rmw::default().bind(HeapBackend::new())?, p),
        "rocksdb" => plain_on(
            Rmw::default().bind(RocksDbBackend::open(
                dir.join("plain"),
                RocksDbOptions::default(),
            )?)?,
            p,
        ),
        other => Err(err(format!(
            "job_value_rmw runs on heap or rocksdb, not `{other}`"
        ))),
    }
}

fn plain_on<B: AnyBackend>(mut op: Bound<Rmw, B>, p: Params) -> statewright::Result<(f64, u64)> {
    let start = Instant::now();
    let mut checksum = 0u64;
    for i in 0..p.n {
        checksum = checksum.wrapping_add(rmw(&mut op, p.key(i))?);
    }
    Ok((start.elapsed().as_secs_f64(), checksum))
}

/// What a job run measured.
struct JobRun {
    /// From the start to the end of the records' processing on every worker.
    secs: f64,
    /// From the start to the final checkpoint's commit.
    total_secs: f64,
    checksum: u64,
    max_pause: Duration,
    max_checkpoint: Duration,
}

fn job(
    kind: &str,
    p: Params,
    workers: usize,
    dir: &std::path::Path,
) -> statewright::Result<JobRun> {
    let storage = CheckpointStorage::open(dir.join(format!("checkpoints-{workers}")))?;
    // Each partition holds every `partitions`-th record; a record's time is its index / 1,024
    // (records of one time travel together), and a checkpoint every N / 2 records: one in
    // the middle, and the final one.
    let partitions = workers as u32;
    let interval = (p.n / 2 / PER_TIME).max(1);
    let config = JobConfig::new(storage).checkpoint_every(interval).fresh();
    let kind = kind.to_owned();
    let dir = dir.to_owned();
    let stats = Arc::new(Mutex::new((
        Duration::ZERO,
        Duration::ZERO,
        None::<Instant>,
    )));
    let worker_stats = Arc::clone(&stats);
    let start = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let index = worker.index();
        let (checksum, stats) = match kind.as_str() {
            "heap" => dataflow(worker, &config, p, partitions, HeapBackend::new())?,
            _ => dataflow(
                worker,
                &config,
                p,
                partitions,
                RocksDbBackend::open(
                    dir.join(format!("job-{workers}-{index}")),
                    RocksDbOptions::default(),
                )?,
            )?,
        };
        if let Ok(mut all) = worker_stats.lock() {
            all.0 = all.0.max(stats.max_pause);
            all.1 = all.1.max(stats.max_checkpoint);
            all.2 = all.2.max(stats.input_ended);
        }
        Ok::<_, statewright::Error>(checksum)
    })
    .map_err(err)?;
    let mut checksum = 0u64;
    for result in guards.join() {
        checksum = checksum.wrapping_add(result.map_err(err)??);
    }
    let total_secs = start.elapsed().as_secs_f64();
    let (max_pause, max_checkpoint, ended) = stats.lock().map(|s| *s).unwrap_or_default();
    let secs = ended.map_or(total_secs, |t| (t - start).as_secs_f64());
    Ok(JobRun {
        secs,
        total_secs,
        checksum,
        max_pause,
        max_checkpoint,
    })
}

/// Builds the job on one worker and runs it; returns the worker's checksum and statistics.
fn dataflow<B: AnyBackend + 'static>(
    worker: &mut timely::worker::Worker,
    config: &JobConfig,
    p: Params,
    partitions: u32,
    backend: B,
) -> statewright::Result<(u64, JobStats)> {
    let checksum = Rc::new(Cell::new(0u64));
    let sum = Rc::clone(&checksum);
    let handle = worker.dataflow::<u64, _, _>(|scope| {
        let mut job = Job::new(scope, config)?;
        let per = p.n.div_ceil(u64::from(partitions));
        let records = job.source(
            "records",
            GeneratedSource::new(partitions, per, move |part, j| {
                let i = j * u64::from(partitions) + u64::from(part);
                (i / PER_TIME, if i < p.n { p.key(i) } else { u64::MAX })
            }),
        )?;
        job.stateful(
            records,
            Rmw::default(),
            backend,
            |key: &u64| *key,
            move |mut st, key, _out: &mut statewright_timely::Emit<'_, ()>| {
                if key == u64::MAX {
                    return Ok(());
                }
                let c = st.value().get_owned()?.unwrap_or(0) + 1;
                st.value().set(&c)?;
                sum.set(sum.get().wrapping_add(c as u64));
                Ok(())
            },
            |_timer, _st, _out| Ok(()),
        )?;
        Ok::<_, statewright::Error>(job.finish(|_| {}))
    })?;
    let stats = handle.stats();
    handle.run(worker)?;
    Ok((checksum.get(), stats.get()))
}

/// Runs `job_value_rmw` on `kind` (`heap` or `rocksdb`).
///
/// # Errors
///
/// Another backend, a state or checkpoint error, or checksums that differ between the loop
/// and a job (a record lost or applied twice).
pub fn run(kind: &str, p: Params) -> statewright::Result<Vec<Line>> {
    let dir = tempfile::tempdir().map_err(|e| statewright::Error::Io {
        path: "tempdir".into(),
        source: e,
    })?;
    let line = |workload: String, n: u64, secs: f64, checksum: u64| Line {
        backend: kind.to_owned(),
        workload,
        k: p.k,
        n,
        secs,
        checksum,
        verify: 0,
        peak_rss: None,
        vs_raw: None,
    };
    let (loop_secs, expected) = plain(kind, p, dir.path())?;
    let mut lines = vec![line("job_value_rmw_loop".into(), p.n, loop_secs, expected)];
    for workers in [1usize, 2] {
        let r = job(kind, p, workers, dir.path())?;
        if r.checksum != expected {
            return Err(err(format!(
                "job_value_rmw with {workers} workers: checksum {} differs from the loop's {expected}",
                r.checksum
            )));
        }
        let mut l = line(format!("job_value_rmw_{workers}w"), p.n, r.secs, r.checksum);
        l.vs_raw = Some(loop_secs / r.secs.max(1e-9));
        lines.push(l);
        let mut l = line(
            format!("job_value_rmw_{workers}w_total"),
            p.n,
            r.total_secs,
            r.checksum,
        );
        l.vs_raw = Some(loop_secs / r.total_secs.max(1e-9));
        lines.push(l);
        lines.push(line(
            format!("job_value_rmw_{workers}w_pause"),
            1,
            r.max_pause.as_secs_f64(),
            0,
        ));
        lines.push(line(
            format!("job_value_rmw_{workers}w_checkpoint"),
            1,
            r.max_checkpoint.as_secs_f64(),
            0,
        ));
    }
    Ok(lines)
}
