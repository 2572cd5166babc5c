//! The restore matrix: every backend (heap, RocksDB) × TTL (none; processing and event time,
//! each with both update types) × checkpoint kind (canonical full, incremental, native) × public
//! capture path × restore parallelism (same, 2 → 3, 3 → 1). Each cell runs a random workload
//! (a seeded generator), leaves stamp refreshes queued by reads, captures, and restores; the
//! restored state, TTL stamps included, must equal what the live instances hold at the capture
//! once their queued refreshes are applied, each restored instance must hold only its own key
//! groups, and the watermark must come back.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use statewright::checkpoint::SnapshotKind;
use statewright::checkpointer::{CheckpointConfig, Checkpointable, Checkpointer};
use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;
use statewright::{CheckpointInfo, Snapshots, StateBackend, StateId};
use statewright::{ManualClock, TtlBackend};

const MAX_P: u16 = 16;
const KEYS: u64 = 48;

macro_rules! ttl_operator {
    ($name:ident, $op:literal, $($attr:tt)*) => {
        #[derive(StatefulOperator, Default)]
        #[operator(name = $op, key = u64, max_parallelism = 16)]
        pub struct $name {
            #[state($($attr)*)]
            value: ValueState<u64>,
            #[state($($attr)*)]
            list: ListState<u32>,
            #[state($($attr)*)]
            map: MapState<u32, u64>,
            plain: ValueState<u64>,
        }
    };
}

ttl_operator!(ProcOnWrite, "proc-on-write", ttl = "1s");
ttl_operator!(
    ProcOnRead,
    "proc-on-read",
    ttl = "1s",
    update = "on_read_and_write"
);
ttl_operator!(EventOnWrite, "event-on-write", ttl = "1s", time = "event");
ttl_operator!(
    EventOnRead,
    "event-on-read",
    ttl = "1s",
    time = "event",
    update = "on_read_and_write"
);

#[derive(StatefulOperator, Default)]
#[operator(name = "no-ttl", key = u64, max_parallelism = 16)]
pub struct NoTtl {
    value: ValueState<u64>,
    list: ListState<u32>,
    map: MapState<u32, u64>,
    plain: ValueState<u64>,
}

/// What the matrix does with an operator, written once for the five declarations above.
trait Workload: StatefulOperator<Key = u64> + Default {
    /// Whether its TTL runs on event time.
    const EVENT: bool;
    /// Whether it declares a TTL (its backend is then wrapped in a `TtlBackend`).
    const TTL: bool;

    fn step<B: Snapshots>(
        op: &mut Bound<Self, B>,
        key: u64,
        action: u64,
    ) -> statewright::Result<()>;

    /// Reads every state of `key` and writes nothing: under `on_read_and_write` this queues
    /// stamp refreshes that only the next key change or write applies.
    fn read<B: Snapshots>(op: &mut Bound<Self, B>, key: u64) -> statewright::Result<()>;
}

macro_rules! workload {
    ($name:ident, event = $event:expr, ttl = $ttl:expr) => {
        impl Workload for $name {
            const EVENT: bool = $event;
            const TTL: bool = $ttl;

            fn step<B: Snapshots>(
                op: &mut Bound<Self, B>,
                key: u64,
                action: u64,
            ) -> statewright::Result<()> {
                let x = action >> 4;
                let mut st = op.key(&key)?;
                match action % 9 {
                    0 => st.value().set(&x),
                    1 => st.value().update(|v| v.unwrap_or(0) + x),
                    2 | 3 => st.list().add(&u32::try_from(x % 1000).unwrap()),
                    4 => st.map().put(&u32::try_from(x % 5).unwrap(), &x),
                    5 => st.map().remove(&u32::try_from(x % 5).unwrap()),
                    6 => st.value().clear(),
                    7 => st.plain().set(&x),
                    _ => Self::read(op, key),
                }
            }

            fn read<B: Snapshots>(op: &mut Bound<Self, B>, key: u64) -> statewright::Result<()> {
                let mut st = op.key(&key)?;
                st.value().get()?;
                st.list().get_owned()?;
                st.map().get_owned(&1)?;
                st.map().get_owned(&2)?;
                Ok(())
            }
        }
    };
}

workload!(ProcOnWrite, event = false, ttl = true);
workload!(ProcOnRead, event = false, ttl = true);
workload!(EventOnWrite, event = true, ttl = true);
workload!(EventOnRead, event = true, ttl = true);
workload!(NoTtl, event = false, ttl = false);

/// A small xorshift generator: the workload is the same in every run of a cell.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Heap,
    #[cfg(feature = "rocksdb")]
    RocksDb,
}

/// How a cell takes its checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `Bound::checkpoint` (one instance only).
    BoundCheckpoint,
    /// `CheckpointStorage::begin`, `PendingCheckpoint::add` per instance, `commit`.
    PendingAdd,
    /// `PendingCheckpoint::add_native` per instance.
    PendingAddNative,
    /// `Checkpointer::checkpoint_now`, canonical, full only.
    NowFull,
    /// `Checkpointer::checkpoint_now`, canonical, a full checkpoint then an incremental one.
    NowIncremental,
    /// `Checkpointer::checkpoint_now`, native.
    NowNative,
    /// `Checkpointer::trigger` and `wait`, canonical, a full then an incremental one.
    TriggerIncremental,
    /// `Checkpointer::trigger` and `wait`, native.
    TriggerNative,
}

const PATHS: [Path; 8] = [
    Path::BoundCheckpoint,
    Path::PendingAdd,
    Path::PendingAddNative,
    Path::NowFull,
    Path::NowIncremental,
    Path::NowNative,
    Path::TriggerIncremental,
    Path::TriggerNative,
];

/// `(live parallelism, restore parallelism)`.
const PARALLELISMS: [(u16, u16); 3] = [(2, 2), (2, 3), (3, 1)];

/// Every entry of every keyed state, stamps included: `(state, key, user key) -> stored bytes`.
type Image = BTreeMap<(u32, Vec<u8>, Vec<u8>), Vec<u8>>;

fn new_backend(engine: Engine, dir: &std::path::Path, name: &str) -> Box<dyn AnyBackend> {
    match engine {
        Engine::Heap => {
            let _ = (dir, name);
            Box::new(HeapBackend::new())
        }
        #[cfg(feature = "rocksdb")]
        Engine::RocksDb => Box::new(
            statewright::RocksDbBackend::open(
                dir.join(name),
                statewright::RocksDbOptions::low_memory(),
            )
            .unwrap(),
        ),
    }
}

/// The backend a cell binds: wrapped for TTL when the operator declares one.
fn bind<Op: Workload>(
    engine: Engine,
    dir: &std::path::Path,
    name: &str,
    clock: &ManualClock,
    range: KeyGroupRange,
) -> Bound<Op, TtlOr> {
    let inner = new_backend(engine, dir, name);
    let backend = if Op::TTL {
        // Cleanup off: what the instances hold depends on reads and writes alone.
        TtlOr::Ttl(TtlBackend::with_clock(inner, clock.clone()).with_incremental_cleanup(0, 1))
    } else {
        TtlOr::Plain(inner)
    };
    Bound::new(Op::default(), backend)
        .unwrap()
        .with_key_groups(range)
        .unwrap()
}

/// A backend with or without the TTL wrapper, so that one type serves every cell.
enum TtlOr {
    Ttl(TtlBackend<Box<dyn AnyBackend>>),
    Plain(Box<dyn AnyBackend>),
}

impl TtlOr {
    fn get(&self) -> &dyn Snapshots {
        match self {
            Self::Ttl(b) => b,
            Self::Plain(b) => b,
        }
    }

    fn get_mut(&mut self) -> &mut dyn Snapshots {
        match self {
            Self::Ttl(b) => b,
            Self::Plain(b) => b,
        }
    }
}

impl StateBackend for TtlOr {
    fn name(&self) -> &'static str {
        self.get().name()
    }
    fn register(
        &mut self,
        operator: &statewright::OperatorDescriptor,
        state: &statewright::StateDescriptor,
    ) -> statewright::Result<StateId> {
        self.get_mut().register(operator, state)
    }
    fn get(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
    ) -> statewright::Result<Option<&[u8]>> {
        TtlOr::get(self).get(state, key, user_key)
    }
    fn put(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> statewright::Result<()> {
        self.get_mut().put(state, key, user_key, value)
    }
    fn merge(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        operand: &[u8],
    ) -> statewright::Result<()> {
        self.get_mut().merge(state, key, user_key, operand)
    }
    fn delete(&mut self, state: StateId, key: &[u8], user_key: &[u8]) -> statewright::Result<()> {
        self.get_mut().delete(state, key, user_key)
    }
    fn scan<'a>(
        &'a self,
        state: StateId,
        key: &[u8],
    ) -> statewright::Result<statewright::backend::EntryIter<'a>> {
        TtlOr::get(self).scan(state, key)
    }
    fn read(
        &self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        reader: &mut statewright::backend::ValueReader<'_>,
    ) -> statewright::Result<()> {
        TtlOr::get(self).read(state, key, user_key, reader)
    }
    fn count(&self, state: StateId, key: &[u8]) -> statewright::Result<usize> {
        TtlOr::get(self).count(state, key)
    }
    fn delete_key(&mut self, state: StateId, key: &[u8]) -> statewright::Result<()> {
        self.get_mut().delete_key(state, key)
    }
    fn for_each_entry(
        &self,
        state: StateId,
        visit: &mut statewright::backend::EntryVisitor<'_>,
    ) -> statewright::Result<()> {
        TtlOr::get(self).for_each_entry(state, visit)
    }
    fn release_reads(&mut self) {
        self.get_mut().release_reads();
    }
    fn clear_state(&mut self, state: StateId) -> statewright::Result<()> {
        self.get_mut().clear_state(state)
    }
    fn stamps_ttl(&self, state: StateId) -> bool {
        TtlOr::get(self).stamps_ttl(state)
    }
    fn watermark(&self) -> Option<i64> {
        TtlOr::get(self).watermark()
    }
    fn set_watermark(&mut self, millis: i64) {
        self.get_mut().set_watermark(millis);
    }
}

impl Snapshots for TtlOr {
    fn for_each_stored(
        &self,
        state: StateId,
        visit: &mut statewright::backend::EntryVisitor<'_>,
    ) -> statewright::Result<()> {
        TtlOr::get(self).for_each_stored(state, visit)
    }

    fn put_stored(
        &mut self,
        state: StateId,
        key: &[u8],
        user_key: &[u8],
        value: &[u8],
    ) -> statewright::Result<()> {
        self.get_mut().put_stored(state, key, user_key, value)
    }

    fn detach(&self) -> statewright::Result<Option<Box<dyn statewright::backend::DetachedState>>> {
        TtlOr::get(self).detach()
    }

    fn native_checkpoint(
        &mut self,
    ) -> statewright::Result<Option<statewright::backend::NativeFiles>> {
        self.get_mut().native_checkpoint()
    }

    fn restore_native(
        &mut self,
        restore: &mut statewright::backend::NativeRestore<'_>,
    ) -> statewright::Result<bool> {
        self.get_mut().restore_native(restore)
    }

    fn track_changes(&mut self, on: bool) -> bool {
        self.get_mut().track_changes(on)
    }

    fn drain_changes(
        &mut self,
        state: StateId,
        visit: &mut statewright::backend::ChangeVisitor<'_>,
    ) -> statewright::Result<()> {
        self.get_mut().drain_changes(state, visit)
    }
}

/// What an instance holds, as snapshots keep it (stamps included, expired data left out).
fn image<Op: Workload>(op: &Bound<Op, TtlOr>, out: &mut Image) {
    for (i, state) in Op::DESCRIPTOR.states.iter().enumerate() {
        let id = u32::try_from(i).unwrap();
        op.backend()
            .for_each_stored(StateId(id), &mut |key, user_key, value| {
                let kg = u16::from_be_bytes([key[0], key[1]]);
                assert!(
                    op.key_groups().contains(kg),
                    "{}: key group {kg} outside {:?}",
                    state.name,
                    op.key_groups()
                );
                out.insert((id, key.to_vec(), user_key.to_vec()), value.to_vec());
                Ok(())
            })
            .unwrap();
    }
}

fn ranges(parallelism: u16) -> Vec<KeyGroupRange> {
    (0..parallelism)
        .map(|i| KeyGroupRange::for_instance(MAX_P, parallelism, i).unwrap())
        .collect()
}

fn owner(key: u64, ranges: &[KeyGroupRange]) -> usize {
    let kg = key_group(&key.to_be_bytes(), MAX_P);
    ranges.iter().position(|r| r.contains(kg)).unwrap()
}

/// Runs `steps` random actions over the instances, moving time forward as it goes.
fn run<Op: Workload>(
    ops: &mut [Bound<Op, TtlOr>],
    ranges: &[KeyGroupRange],
    rng: &mut Rng,
    clock: &ManualClock,
    time: &mut i64,
    steps: usize,
) {
    for _ in 0..steps {
        let r = rng.next();
        if r.is_multiple_of(7) {
            *time += i64::try_from(r % 97).unwrap();
            clock.set(*time);
            for op in ops.iter_mut() {
                op.set_watermark(*time);
            }
        }
        let key = (r >> 8) % KEYS;
        let op = &mut ops[owner(key, ranges)];
        Op::step(op, key, rng.next()).unwrap();
    }
}

/// Reads a few keys after moving time forward, leaving refreshes queued (no write follows).
fn queue_refreshes<Op: Workload>(
    ops: &mut [Bound<Op, TtlOr>],
    ranges: &[KeyGroupRange],
    clock: &ManualClock,
    time: &mut i64,
) {
    *time += 400;
    clock.set(*time);
    for op in ops.iter_mut() {
        op.set_watermark(*time);
    }
    let mut read = vec![false; ops.len()];
    for key in 0..KEYS {
        let i = owner(key, ranges);
        if !read[i] {
            Op::read(&mut ops[i], key).unwrap();
            read[i] = true;
        }
    }
}

/// What the live instances hold once their queued refreshes are applied.
fn expected<Op: Workload>(ops: &mut [Bound<Op, TtlOr>]) -> Image {
    let mut out = Image::new();
    for op in ops.iter_mut() {
        // A key change would apply them; this does the same without a key.
        op.backend_mut().release_reads();
        image(op, &mut out);
    }
    out
}

fn capture<Op: Workload>(
    path: Path,
    ops: &mut [Bound<Op, TtlOr>],
    storage: &CheckpointStorage,
    checkpointer: &mut Checkpointer,
    runtime: &tokio::runtime::Runtime,
) -> CheckpointInfo {
    let mut dyns: Vec<&mut dyn Checkpointable> = ops
        .iter_mut()
        .map(|o| o as &mut dyn Checkpointable)
        .collect();
    match path {
        Path::BoundCheckpoint => {
            drop(dyns);
            assert_eq!(ops.len(), 1);
            ops[0].checkpoint(storage).unwrap()
        }
        Path::PendingAdd | Path::PendingAddNative => {
            drop(dyns);
            let mut pending = storage.begin().unwrap();
            for op in ops.iter_mut() {
                if path == Path::PendingAdd {
                    pending.add(op).unwrap();
                } else {
                    pending.add_native(op).unwrap();
                }
            }
            pending.commit().unwrap()
        }
        Path::NowFull | Path::NowIncremental | Path::NowNative => {
            checkpointer.checkpoint_now(&mut dyns).unwrap().info
        }
        Path::TriggerIncremental | Path::TriggerNative => runtime.block_on(async {
            checkpointer.trigger(&mut dyns).unwrap();
            checkpointer.wait().await.unwrap().unwrap().info
        }),
    }
}

fn cell<Op: Workload>(engine: Engine, path: Path, (live_p, restore_p): (u16, u16), seed: u64) {
    let live_p = if path == Path::BoundCheckpoint {
        1
    } else {
        live_p
    };
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let mut time = 0i64;
    let live_ranges = ranges(live_p);
    let mut ops: Vec<Bound<Op, TtlOr>> = live_ranges
        .iter()
        .enumerate()
        .map(|(i, &r)| bind(engine, dir.path(), &format!("live-{i}"), &clock, r))
        .collect();
    for op in &mut ops {
        op.set_watermark(0);
    }
    let native = matches!(
        path,
        Path::PendingAddNative | Path::NowNative | Path::TriggerNative
    );
    let incremental = matches!(path, Path::NowIncremental | Path::TriggerIncremental);
    let config = CheckpointConfig::new(dir.path().join("checkpoints"))
        .native(native)
        .incremental(incremental);
    let storage = config.open_storage().unwrap();
    let mut checkpointer = Checkpointer::new(config).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut rng = Rng(seed | 1);
    run(&mut ops, &live_ranges, &mut rng, &clock, &mut time, 300);
    if incremental {
        // The full checkpoint the incremental one applies to, then more changes.
        let first = capture(path, &mut ops, &storage, &mut checkpointer, &runtime);
        assert_eq!(first.kind(), SnapshotKind::Full);
        run(&mut ops, &live_ranges, &mut rng, &clock, &mut time, 150);
    }
    queue_refreshes(&mut ops, &live_ranges, &clock, &mut time);
    let info = capture(path, &mut ops, &storage, &mut checkpointer, &runtime);
    // The heap has no native format: it takes canonical checkpoints instead. RocksDB does
    // not track changes (its incremental checkpoints are native ones), so it takes full ones.
    let want = if native && engine != Engine::Heap {
        SnapshotKind::Native
    } else if incremental && engine == Engine::Heap {
        SnapshotKind::Incremental
    } else {
        SnapshotKind::Full
    };
    assert_eq!(info.kind(), want, "{path:?}");
    let watermark = ops[0].watermark();
    let live = expected(&mut ops);
    // The live instances go on; nothing they do now reaches the checkpoint.
    let at_capture = time;
    run(&mut ops, &live_ranges, &mut rng, &clock, &mut time, 50);
    drop(ops);
    // The restored state is compared as of the capture's time.
    clock.set(at_capture);

    let restore_ranges = ranges(restore_p);
    let mut restored = Image::new();
    for (i, &range) in restore_ranges.iter().enumerate() {
        let mut op: Bound<Op, TtlOr> =
            bind(engine, dir.path(), &format!("restored-{i}"), &clock, range);
        op.restore_from(&storage, RestorePoint::Latest).unwrap();
        assert_eq!(op.watermark(), watermark, "the watermark comes back");
        image(&op, &mut restored);
        if Op::EVENT {
            // Event-time state takes writes right after the restore: its time was restored.
            let key = (0..KEYS).find(|&k| range.contains(key_group(&k.to_be_bytes(), MAX_P)));
            if let Some(key) = key {
                Op::step(&mut op, key, 0).unwrap();
            }
        }
    }
    assert_eq!(
        restored.len(),
        live.len(),
        "{engine:?} {path:?} {live_p}->{restore_p}: entry counts"
    );
    assert!(
        restored == live,
        "{engine:?} {path:?} {live_p}->{restore_p}: restored state differs from the live state at the capture"
    );
}

fn matrix<Op: Workload>(engine: Engine) {
    for (i, &path) in PATHS.iter().enumerate() {
        for (j, &parallelism) in PARALLELISMS.iter().enumerate() {
            // `Bound::checkpoint` takes one instance: its cells restore 1 -> 2, 3 and 1.
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((i as u64) << 8 | j as u64);
            cell::<Op>(engine, path, parallelism, seed);
        }
    }
}

macro_rules! matrix_tests {
    ($engine:ident, $value:expr, $cfg:meta) => {
        mod $engine {
            use super::*;

            fn engine() -> Engine {
                $value
            }

            #[test]
            #[$cfg]
            fn without_ttl() {
                matrix::<NoTtl>(engine());
            }

            #[test]
            #[$cfg]
            fn processing_time_updated_on_write() {
                matrix::<ProcOnWrite>(engine());
            }

            #[test]
            #[$cfg]
            fn processing_time_updated_on_read_and_write() {
                matrix::<ProcOnRead>(engine());
            }

            #[test]
            #[$cfg]
            fn event_time_updated_on_write() {
                matrix::<EventOnWrite>(engine());
            }

            #[test]
            #[$cfg]
            fn event_time_updated_on_read_and_write() {
                matrix::<EventOnRead>(engine());
            }
        }
    };
}

matrix_tests!(heap, Engine::Heap, cfg(all()));
#[cfg(feature = "rocksdb")]
matrix_tests!(rocksdb, Engine::RocksDb, cfg(feature = "rocksdb"));

/// Rescaling takes the smallest watermark of the instances whose key groups it restores: no
/// key sees event time its own instance had not reached.
#[test]
fn a_rescaled_restore_takes_the_smallest_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let live_ranges = ranges(2);
    let storage = CheckpointStorage::open(dir.path().join("c")).unwrap();
    let mut pending = storage.begin().unwrap();
    for (i, &range) in live_ranges.iter().enumerate() {
        let mut op: Bound<EventOnWrite, TtlOr> =
            bind(Engine::Heap, dir.path(), "unused", &clock, range);
        op.set_watermark(1_000 * (i64::try_from(i).unwrap() + 1));
        pending.add(&op).unwrap();
    }
    pending.commit().unwrap();
    let mut one: Bound<EventOnWrite, TtlOr> = bind(
        Engine::Heap,
        dir.path(),
        "unused",
        &clock,
        KeyGroupRange::all(MAX_P),
    );
    one.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(one.watermark(), Some(1_000));
    // The second instance alone had reached 2,000.
    let mut second: Bound<EventOnWrite, TtlOr> =
        bind(Engine::Heap, dir.path(), "unused", &clock, live_ranges[1]);
    second.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(second.watermark(), Some(2_000));
}

/// An instance that never saw a watermark has none after a restore, and neither has an
/// instance restored from it and another one.
#[test]
fn an_instance_without_a_watermark_restores_none() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(0);
    let live_ranges = ranges(2);
    let storage = CheckpointStorage::open(dir.path().join("c")).unwrap();
    let mut pending = storage.begin().unwrap();
    for (i, &range) in live_ranges.iter().enumerate() {
        let mut op: Bound<NoTtl, TtlOr> = bind(Engine::Heap, dir.path(), "unused", &clock, range);
        if i == 1 {
            op.set_watermark(5_000);
        }
        pending.add(&op).unwrap();
    }
    pending.commit().unwrap();
    let mut one: Bound<NoTtl, TtlOr> = bind(
        Engine::Heap,
        dir.path(),
        "unused",
        &clock,
        KeyGroupRange::all(MAX_P),
    );
    one.set_watermark(9_000);
    one.restore_from(&storage, RestorePoint::Latest).unwrap();
    assert_eq!(
        one.watermark(),
        None,
        "a restore replaces the watermark too"
    );
}
