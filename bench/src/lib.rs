//! `statebench`: the workloads of `WORKLOAD.md` (the same key sequence other systems are
//! measured with), run against statewright's backends and against the raw limits (a plain
//! `HashMap`, raw RocksDB calls on the same bytes).

pub mod job;
pub mod large;
pub mod snapshot;
pub mod store;
pub mod timers;

use std::collections::HashMap;
use std::time::Instant;

use statewright::prelude::*;
use statewright::{RocksDbBackend, RocksDbOptions, TtlBackend};

/// SplitMix64's increment.
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
#[must_use]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The workload parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Distinct keys.
    pub k: u64,
    /// Timed operations.
    pub n: u64,
    /// Seed of the key sequence.
    pub seed: u64,
    /// Map user keys per key.
    pub m: u64,
}

impl Params {
    /// `r_i`, the `i`-th SplitMix64 output.
    #[must_use]
    pub fn r(&self, i: u64) -> u64 {
        mix64(self.seed.wrapping_add((i + 1).wrapping_mul(GAMMA)))
    }
    /// `key_i`.
    #[must_use]
    pub fn key(&self, i: u64) -> u64 {
        self.r(i) % self.k
    }
    /// `sub_i`.
    #[must_use]
    pub fn sub(&self, i: u64) -> u64 {
        (self.r(i) >> 32) % self.m
    }
}

/// One result line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Backend name.
    pub backend: String,
    /// Workload name (or `<workload>_populate`).
    pub workload: String,
    /// Keys.
    pub k: u64,
    /// Operations counted.
    pub n: u64,
    /// Seconds of the timed part.
    pub secs: f64,
    /// The workload's checksum.
    pub checksum: u64,
    /// The workload's verify sum.
    pub verify: u64,
    /// Peak resident set size of the process during this workload (populate included), bytes.
    pub peak_rss: Option<u64>,
    /// Throughput over the same run's raw baseline (`raw-hashmap` for the heap backends,
    /// `raw-rocksdb` for the RocksDB ones), when the run measured it: see [`with_ratios`].
    pub vs_raw: Option<f64>,
}

impl Line {
    /// Operations per second.
    #[must_use]
    pub fn ops_per_s(&self) -> f64 {
        self.n as f64 / self.secs.max(1e-9)
    }
}

/// The raw baseline a backend is held to.
#[must_use]
pub fn baseline_of(backend: &str) -> Option<&'static str> {
    match backend {
        "heap" | "ttl-heap" => Some("raw-hashmap"),
        "rocksdb" | "ttl-rocksdb" | "rocksdb-timers-in-memory" => Some("raw-rocksdb"),
        _ => None,
    }
}

/// Sets [`Line::vs_raw`] of every line whose baseline ran the same workload in `lines`.
pub fn with_ratios(lines: &mut [Line]) {
    let raw: Vec<(String, String, f64)> = lines
        .iter()
        .filter(|l| l.backend.starts_with("raw-"))
        .map(|l| (l.backend.clone(), l.workload.clone(), l.ops_per_s()))
        .collect();
    for line in lines.iter_mut() {
        let Some(base) = baseline_of(&line.backend) else {
            continue;
        };
        // A line whose ratio its workload set itself (against its own baseline) keeps it.
        if let Some(ratio) = raw
            .iter()
            .find(|(b, w, _)| b == base && *w == line.workload)
            .map(|(_, _, ops)| line.ops_per_s() / ops.max(1e-9))
        {
            line.vs_raw = Some(ratio);
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statewright {} {} K={} N={} ops_per_s={:.0} secs={:.3} checksum={} verify={}",
            self.backend,
            self.workload,
            self.k,
            self.n,
            self.n as f64 / self.secs.max(1e-9),
            self.secs,
            self.checksum,
            self.verify
        )?;
        if let Some(rss) = self.peak_rss {
            write!(f, " peak_rss={rss}")?;
        }
        if let Some(ratio) = self.vs_raw {
            write!(f, " vs_raw={ratio:.3}")?;
        }
        Ok(())
    }
}

/// The workloads.
pub const WORKLOADS: &[&str] = &[
    "value_update",
    "value_get",
    "value_rmw",
    "map_put",
    "map_get",
    "list_add",
];
/// The backends.
pub const BACKENDS: &[&str] = &[
    "heap",
    "rocksdb",
    "ttl-heap",
    "ttl-rocksdb",
    "raw-hashmap",
    "raw-rocksdb",
];

/// The state access a workload needs; implemented by statewright operators and the raw baselines.
trait Store {
    fn value_set(&mut self, k: u64, v: i64) -> statewright::Result<()>;
    fn value_get(&mut self, k: u64) -> statewright::Result<Option<i64>>;
    /// `value_rmw`'s step: `c = get() or 0; update(c + 1)`, returning `c + 1`. The raw
    /// baselines read and then write (two lookups); statewright's backends do both under one
    /// `set_key`, as the spec's step does.
    fn value_rmw(&mut self, k: u64) -> statewright::Result<i64> {
        let c = self.value_get(k)?.unwrap_or(0) + 1;
        self.value_set(k, c)?;
        Ok(c)
    }
    fn map_put(&mut self, k: u64, u: u64, v: i64) -> statewright::Result<()>;
    fn map_get(&mut self, k: u64, u: u64) -> statewright::Result<Option<i64>>;
    fn list_add(&mut self, k: u64, v: i64) -> statewright::Result<()>;
    fn list_sum(&mut self, k: u64) -> statewright::Result<i64>;
}

#[derive(StatefulOperator, Default)]
#[operator(name = "bench", key = u64)]
struct BenchOp {
    value: ValueState<i64>,
    map: MapState<u64, i64>,
    list: ListState<i64>,
}

/// [`BenchOp`] with a one-day TTL on every state (the `ttl-*` backends): every value, list
/// element and map entry carries a stamp, checked on every read; nothing expires during a run,
/// so the checksums equal the plain backends'.
#[derive(StatefulOperator, Default)]
#[operator(name = "bench", key = u64)]
struct TtlBenchOp {
    #[state(ttl = "1day")]
    value: ValueState<i64>,
    #[state(ttl = "1day")]
    map: MapState<u64, i64>,
    #[state(ttl = "1day")]
    list: ListState<i64>,
}

macro_rules! store_for {
    ($op:ident) => {
        impl<B: StateBackend> Store for Bound<$op, B> {
            fn value_set(&mut self, k: u64, v: i64) -> statewright::Result<()> {
                self.key(&k)?.value().set(&v)
            }
            fn value_get(&mut self, k: u64) -> statewright::Result<Option<i64>> {
                Ok(self.key(&k)?.value().get()?.map(|v| v.to_native()))
            }
            fn value_rmw(&mut self, k: u64) -> statewright::Result<i64> {
                let mut keyed = self.key(&k)?;
                let c = keyed.value().get()?.map_or(0, |v| v.to_native()) + 1;
                keyed.value().set(&c)?;
                Ok(c)
            }
            fn map_put(&mut self, k: u64, u: u64, v: i64) -> statewright::Result<()> {
                self.key(&k)?.map().put(&u, &v)
            }
            fn map_get(&mut self, k: u64, u: u64) -> statewright::Result<Option<i64>> {
                Ok(self.key(&k)?.map().get(&u)?.map(|v| v.to_native()))
            }
            fn list_add(&mut self, k: u64, v: i64) -> statewright::Result<()> {
                self.key(&k)?.list().add(&v)
            }
            fn list_sum(&mut self, k: u64) -> statewright::Result<i64> {
                let mut sum = 0i64;
                for v in self.key(&k)?.list().iter()? {
                    sum = sum.wrapping_add(v?.to_native());
                }
                Ok(sum)
            }
        }
    };
}
store_for!(BenchOp);
store_for!(TtlBenchOp);

/// The `HashMap` limit: typed values, no encoding.
#[derive(Default)]
struct RawHashMap {
    value: HashMap<u64, i64, foldhash::fast::RandomState>,
    map: HashMap<u64, HashMap<u64, i64, foldhash::fast::RandomState>, foldhash::fast::RandomState>,
    list: HashMap<u64, Vec<i64>, foldhash::fast::RandomState>,
}

impl Store for RawHashMap {
    fn value_set(&mut self, k: u64, v: i64) -> statewright::Result<()> {
        self.value.insert(k, v);
        Ok(())
    }
    fn value_get(&mut self, k: u64) -> statewright::Result<Option<i64>> {
        Ok(self.value.get(&k).copied())
    }
    fn map_put(&mut self, k: u64, u: u64, v: i64) -> statewright::Result<()> {
        self.map.entry(k).or_default().insert(u, v);
        Ok(())
    }
    fn map_get(&mut self, k: u64, u: u64) -> statewright::Result<Option<i64>> {
        Ok(self.map.get(&k).and_then(|m| m.get(&u)).copied())
    }
    fn list_add(&mut self, k: u64, v: i64) -> statewright::Result<()> {
        self.list.entry(k).or_default().push(v);
        Ok(())
    }
    fn list_sum(&mut self, k: u64) -> statewright::Result<i64> {
        Ok(self
            .list
            .get(&k)
            .map_or(0, |l| l.iter().fold(0i64, |a, b| a.wrapping_add(*b))))
    }
}

/// The RocksDB limit: the same key and value bytes statewright stores, with rust-rocksdb calls
/// and the same options, one column family per state.
struct RawRocksDb {
    db: rocksdb::DB,
    write: rocksdb::WriteOptions,
    key: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn rocks_err(e: &rocksdb::Error) -> statewright::Error {
    statewright::Error::Backend {
        backend: "raw-rocksdb",
        message: e.to_string(),
    }
}

impl RawRocksDb {
    fn open() -> statewright::Result<Self> {
        let dir = tempfile::tempdir().map_err(|e| statewright::Error::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
        let options = RocksDbOptions::default();
        let cache = rocksdb::Cache::new_lru_cache(options.block_cache_size);
        let cfs = ["value", "map", "list"]
            .map(|n| rocksdb::ColumnFamilyDescriptor::new(n, options.rocksdb_cf_options(&cache)));
        let db = rocksdb::DB::open_cf_descriptors(&options.rocksdb_db_options(), dir.path(), cfs)
            .map_err(|e| rocks_err(&e))?;
        let mut write = rocksdb::WriteOptions::default();
        write.disable_wal(true);
        Ok(Self {
            db,
            write,
            key: Vec::new(),
            _dir: dir,
        })
    }

    /// statewright's key layout: key group, length, canonical key, user key.
    fn key(&mut self, k: u64, user: Option<u64>) -> &[u8] {
        let canonical = k.to_be_bytes();
        let kg = statewright::keygroup::key_group(&canonical, 128);
        self.key.clear();
        self.key.extend_from_slice(&kg.to_be_bytes());
        self.key.push(8);
        self.key.extend_from_slice(&canonical);
        if let Some(u) = user {
            self.key.extend_from_slice(&u.to_be_bytes());
        }
        &self.key
    }

    fn cf(&self, name: &str) -> statewright::Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| statewright::Error::Backend {
                backend: "raw-rocksdb",
                message: format!("no column family {name}"),
            })
    }

    fn put(&mut self, cf: &str, k: u64, user: Option<u64>, v: i64) -> statewright::Result<()> {
        self.key(k, user);
        let cf = self.cf(cf)?;
        self.db
            .put_cf_opt(cf, &self.key, v.to_le_bytes(), &self.write)
            .map_err(|e| rocks_err(&e))
    }

    fn get(&mut self, cf: &str, k: u64, user: Option<u64>) -> statewright::Result<Option<i64>> {
        self.key(k, user);
        let cf = self.cf(cf)?;
        let v = self
            .db
            .get_pinned_cf(cf, &self.key)
            .map_err(|e| rocks_err(&e))?;
        Ok(v.and_then(|v| {
            v.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(i64::from_le_bytes)
        }))
    }
}

impl Store for RawRocksDb {
    fn value_set(&mut self, k: u64, v: i64) -> statewright::Result<()> {
        self.put("value", k, None, v)
    }
    fn value_get(&mut self, k: u64) -> statewright::Result<Option<i64>> {
        self.get("value", k, None)
    }
    fn map_put(&mut self, k: u64, u: u64, v: i64) -> statewright::Result<()> {
        self.put("map", k, Some(u), v)
    }
    fn map_get(&mut self, k: u64, u: u64) -> statewright::Result<Option<i64>> {
        self.get("map", k, Some(u))
    }
    fn list_add(&mut self, k: u64, v: i64) -> statewright::Result<()> {
        self.key(k, None);
        let cf = self.cf("list")?;
        let mut frame = [0u8; 12];
        frame[..4].copy_from_slice(&8u32.to_le_bytes());
        frame[4..].copy_from_slice(&v.to_le_bytes());
        self.db
            .merge_cf_opt(cf, &self.key, frame, &self.write)
            .map_err(|e| rocks_err(&e))
    }
    fn list_sum(&mut self, k: u64) -> statewright::Result<i64> {
        self.key(k, None);
        let cf = self.cf("list")?;
        let v = self
            .db
            .get_pinned_cf(cf, &self.key)
            .map_err(|e| rocks_err(&e))?;
        Ok(v.map_or(0, |b| {
            b.chunks_exact(12)
                .filter_map(|f| f[4..].try_into().ok().map(i64::from_le_bytes))
                .fold(0i64, i64::wrapping_add)
        }))
    }
}

fn store(backend: &str) -> statewright::Result<Box<dyn Store>> {
    Ok(match backend {
        "heap" => Box::new(BenchOp::default().bind(HeapBackend::new())?),
        "rocksdb" => Box::new(
            BenchOp::default().bind(RocksDbBackend::open_temporary(RocksDbOptions::default())?)?,
        ),
        "ttl-heap" => Box::new(TtlBenchOp::default().bind(TtlBackend::new(HeapBackend::new()))?),
        "ttl-rocksdb" => Box::new(TtlBenchOp::default().bind(TtlBackend::new(
            RocksDbBackend::open_temporary(RocksDbOptions::default())?,
        ))?),
        "raw-hashmap" => Box::new(RawHashMap::default()),
        "raw-rocksdb" => Box::new(RawRocksDb::open()?),
        other => {
            return Err(statewright::Error::Backend {
                backend: "statebench",
                message: format!("unknown backend `{other}`, expected one of {BACKENDS:?}"),
            });
        }
    })
}

/// Runs one workload on a fresh backend; returns its result lines (populate first).
///
/// # Errors
///
/// An unknown backend or workload, or a state error.
pub fn run(backend: &str, workload: &str, p: Params) -> statewright::Result<Vec<Line>> {
    large::reset_peak();
    let mut s = store(backend)?;
    let mut lines = Vec::new();
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
    let mut checksum = 0u64;
    let t: f64;
    match workload {
        "value_update" => {
            let start = Instant::now();
            for i in 0..p.n {
                s.value_set(p.key(i), i as i64)?;
            }
            t = start.elapsed().as_secs_f64();
        }
        "value_get" => {
            let start = Instant::now();
            for j in 0..p.k {
                s.value_set(j, j as i64)?;
            }
            lines.push(line(
                "value_get_populate",
                p.k,
                start.elapsed().as_secs_f64(),
                0,
                0,
            ));
            let start = Instant::now();
            for i in 0..p.n {
                let x = s.value_get(p.key(i))?.unwrap_or(0);
                checksum = checksum.wrapping_add(x as u64);
            }
            t = start.elapsed().as_secs_f64();
        }
        "value_rmw" => {
            let start = Instant::now();
            for i in 0..p.n {
                let c = s.value_rmw(p.key(i))?;
                checksum = checksum.wrapping_add(c as u64);
            }
            t = start.elapsed().as_secs_f64();
        }
        "map_put" => {
            let start = Instant::now();
            for i in 0..p.n {
                s.map_put(p.key(i), p.sub(i), i as i64)?;
            }
            t = start.elapsed().as_secs_f64();
        }
        "map_get" => {
            let start = Instant::now();
            for j in 0..p.k {
                for u in 0..p.m {
                    s.map_put(j, u, (j * p.m + u) as i64)?;
                }
            }
            lines.push(line(
                "map_get_populate",
                p.k * p.m,
                start.elapsed().as_secs_f64(),
                0,
                0,
            ));
            let start = Instant::now();
            for i in 0..p.n {
                let x = s.map_get(p.key(i), p.sub(i))?.unwrap_or(0);
                checksum = checksum.wrapping_add(x as u64);
            }
            t = start.elapsed().as_secs_f64();
        }
        "list_add" => {
            let start = Instant::now();
            for i in 0..p.n {
                s.list_add(p.key(i), i as i64)?;
            }
            t = start.elapsed().as_secs_f64();
        }
        other => {
            return Err(statewright::Error::Backend {
                backend: "statebench",
                message: format!("unknown workload `{other}`, expected one of {WORKLOADS:?}"),
            });
        }
    }
    let mut verify = 0u64;
    for j in 0..p.k.min(10_000) {
        let v = match workload {
            "map_put" | "map_get" => {
                let mut sum = 0i64;
                for u in 0..p.m {
                    sum = sum.wrapping_add(s.map_get(j, u)?.unwrap_or(0));
                }
                sum
            }
            "list_add" => s.list_sum(j)?,
            _ => s.value_get(j)?.unwrap_or(0),
        };
        verify = verify.wrapping_add(v as u64);
    }
    lines.push(Line {
        peak_rss: large::peak_rss(),
        ..line(workload, p.n, t, checksum, verify)
    });
    Ok(lines)
}

/// A value of about 64 bytes with a string and a vector, for the read-path measurement.
#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Sensor id.
    pub sensor: u64,
    /// Measured value.
    pub value: f64,
    /// Label.
    pub label: String,
    /// Raw samples.
    pub samples: Vec<i32>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "read-path", key = u64)]
struct ReadPath {
    last: ValueState<Reading>,
}

/// Nanoseconds per point read of a value in an SST file, three ways: statewright's pinned,
/// validated, in-place read; a copy out of RocksDB (`get`, an owned and aligned vector) read the
/// same way; and `get_pinned` alone. Returns `(name, ns_per_read)`.
///
/// # Errors
///
/// A RocksDB failure.
pub fn read_path(keys: u64, reads: u64) -> statewright::Result<Vec<(&'static str, f64)>> {
    let backend = RocksDbBackend::open_temporary(RocksDbOptions::default())?;
    let mut op = ReadPath::default().bind(backend)?;
    for k in 0..keys {
        let r = Reading {
            sensor: k,
            value: k as f64,
            label: format!("sensor-{k}"),
            samples: (0..(k % 16) as i32).collect(),
        };
        op.key(&k)?.last().set(&r)?;
    }
    op.backend().flush()?;
    op.backend().compact()?;
    let p = Params {
        k: keys,
        n: reads,
        seed: 7,
        m: 1,
    };
    let raw_keys: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            let canonical = p.key(i).to_be_bytes();
            let kg = statewright::keygroup::key_group(&canonical, 128);
            let mut key = kg.to_be_bytes().to_vec();
            key.push(8);
            key.extend_from_slice(&canonical);
            key
        })
        .collect();
    let mut out = Vec::new();
    let mut sum = 0u64;

    let start = Instant::now();
    for i in 0..reads {
        let mut st = op.key(&p.key(i % 4096))?;
        sum = sum.wrapping_add(st.last().get()?.map_or(0, |r| r.sensor.to_native()));
    }
    out.push((
        "pinned_in_place",
        start.elapsed().as_nanos() as f64 / reads as f64,
    ));

    let db = op.backend().db();
    let cf = db
        .cf_handle("read-path.last")
        .ok_or_else(|| statewright::Error::Backend {
            backend: "statebench",
            message: "no column family".into(),
        })?;
    let start = Instant::now();
    for i in 0..reads {
        let key = &raw_keys[(i % 4096) as usize];
        if let Some(bytes) = db.get_cf(cf, key).map_err(|e| rocks_err(&e))? {
            let r = statewright::codec::access::<Reading>(&bytes)?;
            sum = sum.wrapping_add(r.sensor.to_native());
        }
    }
    out.push((
        "copied_then_read",
        start.elapsed().as_nanos() as f64 / reads as f64,
    ));

    let start = Instant::now();
    for i in 0..reads {
        let key = &raw_keys[(i % 4096) as usize];
        if let Some(bytes) = db.get_pinned_cf(cf, key).map_err(|e| rocks_err(&e))? {
            sum = sum.wrapping_add(bytes.len() as u64);
        }
    }
    out.push((
        "raw_pinned",
        start.elapsed().as_nanos() as f64 / reads as f64,
    ));
    std::hint::black_box(sum);
    Ok(out)
}

/// A stored value of about 1 KiB: a few scalars, a name, and a history.
#[statewright::value]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// An id.
    pub id: u64,
    /// The field read.
    pub score: i64,
    /// A name.
    pub name: String,
    /// Flags.
    pub flags: u32,
    /// A history of 120 numbers.
    pub history: Vec<u64>,
}

/// The profile the zero-copy measurement reads.
#[must_use]
pub fn profile() -> Profile {
    Profile {
        id: 42,
        score: -7,
        name: "a customer with a reasonably long display name".into(),
        flags: 0b1011,
        history: (0..120).map(|i| i * 31).collect(),
    }
}

/// Nanoseconds per read of one field of a [`Profile`]: through the zero-copy view (validated
/// rkyv access), by deserialising it whole with rkyv, and by decoding it with serde and
/// bincode. The criterion benchmark `read_path` measures the same with statistics.
///
/// # Errors
///
/// An encoding failure.
pub fn zero_copy(iterations: u64) -> Result<Vec<(&'static str, f64)>, Box<dyn std::error::Error>> {
    use statewright::codec;
    use std::hint::black_box;
    let p = profile();
    let mut rkyv_bytes = Vec::new();
    codec::encode_into(&p, &mut rkyv_bytes)?;
    let bincode_bytes = bincode::serde::encode_to_vec(&p, bincode::config::standard())?;
    let time = |f: &mut dyn FnMut() -> Result<i64, Box<dyn std::error::Error>>| {
        let start = Instant::now();
        let mut sum = 0i64;
        for _ in 0..iterations {
            sum = sum.wrapping_add(f()?);
        }
        black_box(sum);
        Ok::<f64, Box<dyn std::error::Error>>(
            start.elapsed().as_secs_f64() * 1e9 / iterations as f64,
        )
    };
    let view = time(&mut || {
        Ok(codec::access::<Profile>(black_box(&rkyv_bytes))?
            .score
            .to_native())
    })?;
    let whole = time(&mut || Ok(codec::decode::<Profile>(black_box(&rkyv_bytes))?.score))?;
    let bincode = time(&mut || {
        let (v, _): (Profile, usize) = bincode::serde::decode_from_slice(
            black_box(&bincode_bytes),
            bincode::config::standard(),
        )?;
        Ok(v.score)
    })?;
    Ok(vec![
        ("zero_copy_view", view),
        ("rkyv_deserialise", whole),
        ("serde_bincode_decode", bincode),
    ])
}
