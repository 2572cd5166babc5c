//! The timer and window workloads: `timer_register` (N event-time timers over K keys),
//! `timer_fire` (N timers, then every one fired in order), `window_add` (a windowed
//! `ReducingState` add, the window moving on every 1,000 records) and `window_add_spread`
//! (the same add, each record's window drawn at random from 2,000), on the heap and RocksDB
//! against raw baselines in the same run: for timers a `BTreeSet<(i64, u64)>`
//! (`raw-hashmap`, the plain Rust structure) and raw RocksDB on the same key and timestamp
//! bytes in time order (`raw-rocksdb`); for `window_add` a `HashMap<(u64, i64), i64>` and raw
//! RocksDB reads and writes of the same bytes.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use statewright::prelude::*;
use statewright::window::TimeWindow;
use statewright::{RocksDbBackend, RocksDbOptions, StateKey};

use crate::{Line, Params};

/// The workloads of this module.
pub const TIMER_WORKLOADS: &[&str] = &[
    "timer_register",
    "timer_fire",
    "window_add",
    "window_add_spread",
];

#[derive(StatefulOperator, Default)]
#[operator(name = "timers", key = u64)]
struct TimerOp {
    timers: TimerService,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "windows", key = u64)]
struct WindowOp {
    #[state(namespace = TimeWindow, reduce = sum)]
    sum: ReducingState<i64>,
}

/// The `i`-th timer's time: spread over a billion milliseconds.
fn timestamp(p: &Params, i: u64) -> i64 {
    ((p.r(i) >> 16) % 1_000_000_000) as i64
}

/// The `i`-th record's window: the window moves on every 1,000 records (`window_add`), as
/// records in time order fill one window after the other, or is one of 2,000 drawn at random
/// (`window_add_spread`), as many windows open at once (records far out of order, or sliding
/// windows that overlap by the thousand) spread them.
fn window(p: &Params, spread: bool, i: u64) -> TimeWindow {
    let start = if spread {
        (p.r(i | 1 << 62) % 2_000 * 1_000) as i64
    } else {
        (i / 1_000 * 1_000) as i64
    };
    TimeWindow::new(start, start + 1_000)
}

/// Folds a fired timer into an order-sensitive checksum.
fn fold(sum: u64, ts: i64, key: u64) -> u64 {
    sum.wrapping_mul(31).wrapping_add(ts as u64 ^ key)
}

fn err(message: String) -> statewright::Error {
    statewright::Error::Backend {
        backend: "statebench",
        message,
    }
}

fn rocks_err(e: &rocksdb::Error) -> statewright::Error {
    err(e.to_string())
}

/// Raw RocksDB with one column family, WAL off, statewright's options.
struct Raw {
    db: rocksdb::DB,
    write: rocksdb::WriteOptions,
    _dir: tempfile::TempDir,
}

impl Raw {
    fn open() -> statewright::Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| statewright::Error::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
        let options = RocksDbOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_size);
        let cfs = [rocksdb::ColumnFamilyDescriptor::new(
            "t",
            options.rocksdb_cf_options(&cache),
        )];
        let db = rocksdb::DB::open_cf_descriptors(&options.rocksdb_db_options(), dir.path(), cfs)
            .map_err(|e| rocks_err(&e))?;
        let mut write = rocksdb::WriteOptions::default();
        write.disable_wal(true);
        Ok(Self {
            db,
            write,
            _dir: dir,
        })
    }

    fn cf(&self) -> statewright::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle("t")
            .ok_or_else(|| err("no column family".into()))
    }
}

/// A timer's raw key in time order: timestamp (order-preserving), then the key.
fn timer_key(ts: i64, key: u64, out: &mut Vec<u8>) {
    out.clear();
    ts.encode_key(out);
    out.extend_from_slice(&key.to_be_bytes());
}

/// A window entry's raw key as statewright lays it out: key group, length, key, window.
fn window_key(key: u64, w: &TimeWindow, out: &mut Vec<u8>) {
    let canonical = key.to_be_bytes();
    let kg = statewright::keygroup::key_group(&canonical, 128);
    out.clear();
    out.extend_from_slice(&kg.to_be_bytes());
    out.push(8);
    out.extend_from_slice(&canonical);
    w.encode_key(out);
}

/// Runs one timer or window workload on a fresh backend (`heap`, `rocksdb`, `raw-hashmap`,
/// `raw-rocksdb`); returns its result lines (populate first).
///
/// # Errors
///
/// An unknown backend or workload, or a state error.
pub fn run(backend: &str, workload: &str, p: Params) -> statewright::Result<Vec<Line>> {
    crate::large::reset_peak();
    let line = |workload: &str, n: u64, secs: f64, checksum: u64, verify: u64| Line {
        backend: backend.to_owned(),
        workload: workload.to_owned(),
        k: p.k,
        n,
        secs,
        checksum,
        verify,
        peak_rss: None,
        vs_raw: None,
    };
    let mut lines = Vec::new();
    let spread = workload == "window_add_spread";
    let (secs, checksum, verify) = match (workload, backend) {
        ("timer_register" | "timer_fire", "heap") => timers(
            TimerOp::default().bind(HeapBackend::new())?,
            workload,
            p,
            &mut lines,
            &line,
        )?,
        ("timer_register" | "timer_fire", "rocksdb") => timers(
            TimerOp::default().bind(RocksDbBackend::open_temporary(RocksDbOptions::default())?)?,
            workload,
            p,
            &mut lines,
            &line,
        )?,
        // RocksDB with every timer in memory (`RocksDbOptions::timers_in_memory`, Flink's
        // HEAP timer service) instead of read in time order from RocksDB.
        ("timer_register" | "timer_fire", "rocksdb-timers-in-memory") => timers(
            TimerOp::default().bind(RocksDbBackend::open_temporary(
                RocksDbOptions::default().timers_in_memory(true),
            )?)?,
            workload,
            p,
            &mut lines,
            &line,
        )?,
        ("timer_register" | "timer_fire", "raw-hashmap") => {
            let mut set = BTreeSet::new();
            let start = Instant::now();
            for i in 0..p.n {
                set.insert((timestamp(&p, i), p.key(i)));
            }
            let register = start.elapsed().as_secs_f64();
            if workload == "timer_register" {
                (register, set.len() as u64, set.len() as u64)
            } else {
                lines.push(line("timer_fire_populate", p.n, register, 0, 0));
                let start = Instant::now();
                let mut sum = 0u64;
                let mut fired = 0u64;
                while let Some((ts, key)) = set.pop_first() {
                    sum = fold(sum, ts, key);
                    fired += 1;
                }
                (start.elapsed().as_secs_f64(), sum, fired)
            }
        }
        ("timer_register" | "timer_fire", "raw-rocksdb") => {
            let raw = Raw::open()?;
            let cf = raw.cf()?;
            let mut k = Vec::new();
            let start = Instant::now();
            for i in 0..p.n {
                timer_key(timestamp(&p, i), p.key(i), &mut k);
                raw.db
                    .put_cf_opt(cf, &k, [], &raw.write)
                    .map_err(|e| rocks_err(&e))?;
            }
            let register = start.elapsed().as_secs_f64();
            let count = |raw: &Raw| -> statewright::Result<u64> {
                let mut n = 0;
                for item in raw.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                    item.map_err(|e| rocks_err(&e))?;
                    n += 1;
                }
                Ok(n)
            };
            if workload == "timer_register" {
                let n = count(&raw)?;
                (register, n, n)
            } else {
                lines.push(line("timer_fire_populate", p.n, register, 0, 0));
                let start = Instant::now();
                let mut sum = 0u64;
                let mut fired = 0u64;
                let mut it = raw.db.raw_iterator_cf(cf);
                it.seek_to_first();
                while let (Some(k), true) = (it.key(), it.valid()) {
                    let mut input = k;
                    let ts = i64::decode_key(&mut input)?;
                    let key = u64::from_be_bytes(
                        input
                            .try_into()
                            .map_err(|_| err("a raw timer key of another length".into()))?,
                    );
                    sum = fold(sum, ts, key);
                    fired += 1;
                    raw.db
                        .delete_cf_opt(cf, k, &raw.write)
                        .map_err(|e| rocks_err(&e))?;
                    it.next();
                }
                it.status().map_err(|e| rocks_err(&e))?;
                (start.elapsed().as_secs_f64(), sum, fired)
            }
        }
        ("window_add" | "window_add_spread", "heap") => {
            windows(WindowOp::default().bind(HeapBackend::new())?, p, spread)?
        }
        ("window_add" | "window_add_spread", "rocksdb") => windows(
            WindowOp::default().bind(RocksDbBackend::open_temporary(RocksDbOptions::default())?)?,
            p,
            spread,
        )?,
        ("window_add" | "window_add_spread", "raw-hashmap") => {
            let mut map: HashMap<(u64, i64), i64, foldhash::fast::RandomState> = HashMap::default();
            let start = Instant::now();
            for i in 0..p.n {
                *map.entry((p.key(i), window(&p, spread, i).start))
                    .or_insert(0) += 1;
            }
            let secs = start.elapsed().as_secs_f64();
            let mut verify = 0u64;
            for i in 0..p.n.min(10_000) {
                let v = map
                    .get(&(p.key(i), window(&p, spread, i).start))
                    .copied()
                    .unwrap_or(0);
                verify = verify.wrapping_add(v as u64);
            }
            (secs, 0, verify)
        }
        ("window_add" | "window_add_spread", "raw-rocksdb") => {
            let raw = Raw::open()?;
            let cf = raw.cf()?;
            let mut k = Vec::new();
            let get = |raw: &Raw, k: &[u8]| -> statewright::Result<i64> {
                let v = raw.db.get_pinned_cf(cf, k).map_err(|e| rocks_err(&e))?;
                Ok(v.and_then(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map_or(0, i64::from_le_bytes))
            };
            let start = Instant::now();
            for i in 0..p.n {
                window_key(p.key(i), &window(&p, spread, i), &mut k);
                let c = get(&raw, &k)? + 1;
                raw.db
                    .put_cf_opt(cf, &k, c.to_le_bytes(), &raw.write)
                    .map_err(|e| rocks_err(&e))?;
            }
            let secs = start.elapsed().as_secs_f64();
            let mut verify = 0u64;
            for i in 0..p.n.min(10_000) {
                window_key(p.key(i), &window(&p, spread, i), &mut k);
                verify = verify.wrapping_add(get(&raw, &k)? as u64);
            }
            (secs, 0, verify)
        }
        (w, b) => {
            return Err(err(format!(
                "the timer workloads {TIMER_WORKLOADS:?} run on heap, rocksdb, raw-hashmap and raw-rocksdb, not `{w}` on `{b}`"
            )));
        }
    };
    lines.push(Line {
        peak_rss: crate::large::peak_rss(),
        ..line(workload, p.n, secs, checksum, verify)
    });
    Ok(lines)
}

type LineOf<'a> = dyn Fn(&str, u64, f64, u64, u64) -> Line + 'a;

/// `timer_register` or `timer_fire` on a bound operator.
fn timers<B: StateBackend + 'static>(
    mut op: Bound<TimerOp, B>,
    workload: &str,
    p: Params,
    lines: &mut Vec<Line>,
    line: &LineOf<'_>,
) -> statewright::Result<(f64, u64, u64)> {
    let start = Instant::now();
    for i in 0..p.n {
        op.key(&p.key(i))?
            .timers()
            .register_event_time(timestamp(&p, i))?;
    }
    let register = start.elapsed().as_secs_f64();
    let held = op.timer_count(TimeDomain::EventTime)? as u64;
    if workload == "timer_register" {
        return Ok((register, held, held));
    }
    lines.push(line("timer_fire_populate", p.n, register, 0, 0));
    let start = Instant::now();
    let mut sum = 0u64;
    let fired = op.advance_watermark(i64::MAX, |t, _| {
        sum = fold(sum, t.timestamp, t.key);
        Ok(())
    })?;
    Ok((start.elapsed().as_secs_f64(), sum, fired as u64))
}

/// `window_add` (or, `spread`, `window_add_spread`) on a bound operator.
fn windows<B: StateBackend>(
    mut op: Bound<WindowOp, B>,
    p: Params,
    spread: bool,
) -> statewright::Result<(f64, u64, u64)> {
    let start = Instant::now();
    for i in 0..p.n {
        op.key(&p.key(i))?.sum(&window(&p, spread, i)).add(&1)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut verify = 0u64;
    for i in 0..p.n.min(10_000) {
        let v = op
            .key(&p.key(i))?
            .sum(&window(&p, spread, i))
            .get_owned()?
            .unwrap_or(0);
        verify = verify.wrapping_add(v as u64);
    }
    Ok((secs, 0, verify))
}
