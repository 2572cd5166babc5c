//! Mutation test of restore: 100,000 mutated or truncated snapshots and manifests (full and
//! incremental snapshots, stored and LZ4-compressed blocks; mutations with their checksums
//! left stale, and mutations whose checksums were recomputed so that the decoders behind them
//! see the damage). Every restore returns a typed error or the correct data: never a panic,
//! never an endless loop, never an allocation larger than the input justifies.
//!
//! `STATEWRIGHT_MUTATIONS` scales the number of cases (default 100,000 over the four tests);
//! `STATEWRIGHT_MUTATION_SEED` replays a run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use statewright::checkpointer::{CheckpointConfig, Checkpointer};
use statewright::prelude::*;
use statewright::snapshot::{SnapshotOptions, SnapshotReader};

/// Records the largest single allocation the current thread makes while armed.
struct Tracking;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only reads and writes thread-local
// cells, which never allocate.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Runs `f` and returns the largest allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    ARMED.with(|a| a.set(true));
    let out = f();
    ARMED.with(|a| a.set(false));
    (out, LARGEST.with(Cell::get))
}

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub page: String,
    pub millis: u64,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String, max_parallelism = 16)]
pub struct Sessions {
    visits: ListState<Visit>,
    last: ValueState<u64>,
    pages: MapState<String, u32>,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seed() -> u64 {
    std::env::var("STATEWRIGHT_MUTATION_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed)
}

fn cases(share: usize) -> usize {
    let total: usize = std::env::var("STATEWRIGHT_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    total * share / 100
}

fn fill(op: &mut Bound<Sessions, HeapBackend>, from: u64, to: u64) {
    for u in from..to {
        let user = format!("user-{}", u % 30);
        let mut st = op.key(user.as_str()).unwrap();
        st.last().set(&(u * 1000)).unwrap();
        st.visits()
            .add(&Visit {
                page: format!("/p/{}", u % 4),
                millis: u,
            })
            .unwrap();
        st.pages()
            .update(&format!("/p/{}", u % 4), |c| c.unwrap_or(0) + 1)
            .unwrap();
        if u % 5 == 0 {
            st.pages().remove(&format!("/p/{}", (u + 1) % 4)).unwrap();
        }
        if u % 11 == 0 {
            st.visits().clear().unwrap();
        }
    }
}

fn image(op: &Bound<Sessions, HeapBackend>) -> Vec<u8> {
    let mut out = Vec::new();
    op.write_snapshot(
        SnapshotOptions {
            compression: false,
            block_size: 1 << 16,
        },
        Path::new("image"),
        &mut out,
    )
    .unwrap();
    out
}

/// Restores the chain `files` (full first) into a fresh instance.
fn restore_chain(files: &[&[u8]]) -> statewright::Result<Bound<Sessions, HeapBackend>> {
    let readers = files
        .iter()
        .map(|b| SnapshotReader::parse("mutated.snap", b))
        .collect::<statewright::Result<Vec<_>>>()?;
    let refs: Vec<&SnapshotReader<'_>> = readers.iter().collect();
    let mut op = Sessions::default().bind(HeapBackend::new())?;
    op.restore_snapshots(&refs)?;
    Ok(op)
}

const INTERESTING: [u32; 8] = [
    0,
    1,
    2,
    0x7f,
    0x7fff_ffff,
    0xffff_fffe,
    0xffff_ffff,
    0x1_0000,
];

/// Mutates `bytes[lo..hi]` in place (same length).
fn mutate_in_place(rng: &mut Rng, bytes: &mut [u8], lo: usize, hi: usize) {
    if hi <= lo {
        return;
    }
    let at = |rng: &mut Rng| lo + rng.below(hi - lo);
    match rng.below(5) {
        0 => {
            for _ in 0..=rng.below(4) {
                let i = at(rng);
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            for _ in 0..=rng.below(4) {
                let i = at(rng);
                bytes[i] = rng.next() as u8;
            }
        }
        2 => {
            let v = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let i = at(rng);
            for (k, b) in v.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + k).filter(|_| i + k < hi) {
                    *slot = *b;
                }
            }
        }
        3 => {
            // Copy one chunk over another.
            let n = 1 + rng.below(16);
            let (from, to) = (at(rng), at(rng));
            for k in 0..n {
                if from + k < hi && to + k < hi {
                    bytes[to + k] = bytes[from + k];
                }
            }
        }
        _ => {
            let i = at(rng);
            bytes[i] = bytes[i].wrapping_add(1);
        }
    }
}

/// A raw mutation of a whole file: in place, truncated, or with bytes inserted or removed.
fn mutate_raw(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    match rng.below(4) {
        0 => bytes.truncate(rng.below(original.len())),
        1 => {
            let i = rng.below(bytes.len());
            let n = 1 + rng.below(8);
            for _ in 0..n {
                bytes.insert(i, rng.next() as u8);
            }
        }
        2 => {
            let i = rng.below(bytes.len());
            let n = (1 + rng.below(8)).min(bytes.len() - i);
            bytes.drain(i..i + n);
        }
        _ => {
            let len = bytes.len();
            mutate_in_place(rng, &mut bytes, 0, len);
        }
    }
    bytes
}

const FOOTER: usize = 24;

fn fix_index_crc(bytes: &mut [u8]) {
    let len = bytes.len();
    let footer = len - FOOTER;
    let offset = u64::from_le_bytes(bytes[footer..footer + 8].try_into().unwrap()) as usize;
    let crc = crc32c::crc32c(&bytes[offset..footer]);
    bytes[footer + 12..footer + 16].copy_from_slice(&crc.to_le_bytes());
}

/// Mutates the index and recomputes its checksum: the index decoder sees the damage.
fn mutate_index(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let footer = bytes.len() - FOOTER;
    let offset = u64::from_le_bytes(bytes[footer..footer + 8].try_into().unwrap()) as usize;
    mutate_in_place(rng, &mut bytes, offset, footer);
    fix_index_crc(&mut bytes);
    bytes
}

/// Mutates one block's stored bytes and recomputes its checksum in the index and the index's:
/// the decompressor, the record decoder and the type validators see the damage.
fn mutate_block(rng: &mut Rng, original: &[u8]) -> Vec<u8> {
    let reader = SnapshotReader::parse("original.snap", original).unwrap();
    let blocks: Vec<_> = reader
        .index()
        .states
        .iter()
        .flat_map(|s| s.key_groups.iter().flat_map(|kg| kg.blocks.iter().copied()))
        .collect();
    let mut bytes = original.to_vec();
    let Some(block) = blocks.get(rng.below(blocks.len())).copied() else {
        return bytes;
    };
    let (lo, hi) = (
        block.offset as usize,
        block.offset as usize + block.stored_len as usize,
    );
    mutate_in_place(rng, &mut bytes, lo, hi);
    let crc = crc32c::crc32c(&bytes[lo..hi]);
    let footer = bytes.len() - FOOTER;
    let offset = u64::from_le_bytes(bytes[footer..footer + 8].try_into().unwrap()) as usize;
    let old = block.crc.to_le_bytes();
    if let Some(pos) = bytes[offset..footer].windows(4).position(|w| w == old) {
        bytes[offset + pos..offset + pos + 4].copy_from_slice(&crc.to_le_bytes());
    }
    fix_index_crc(&mut bytes);
    bytes
}

/// Checks one mutated chain: a typed error, or (for mutations the checksums must catch) the
/// right state; never a panic, never an allocation beyond what the input justifies.
fn check(case: usize, files: &[&[u8]], must_be_right: Option<&[u8]>) {
    let input: usize = files.iter().map(|f| f.len()).sum();
    let result = std::panic::catch_unwind(|| largest_allocation(|| restore_chain(files)));
    let Ok((result, largest)) = result else {
        panic!("case {case} (seed {}): restore panicked", seed());
    };
    // LZ4 expands at most 255 times; the backend's tables grow with the entries.
    let justified = 256 * input + (1 << 20);
    assert!(
        largest <= justified,
        "case {case}: an allocation of {largest} bytes for {input} bytes of input"
    );
    if let (Ok(op), Some(want)) = (result, must_be_right) {
        assert!(
            image(&op) == want,
            "case {case} (seed {}): restored wrong data without an error",
            seed()
        );
    }
}

fn snapshot_of(op: &Bound<Sessions, HeapBackend>, compression: bool) -> Vec<u8> {
    let mut out = Vec::new();
    op.write_snapshot(
        SnapshotOptions {
            compression,
            block_size: 256,
        },
        Path::new("s.snap"),
        &mut out,
    )
    .unwrap();
    out
}

fn run_full(compression: bool, share: usize, salt: u64) {
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0, 120);
    let original = snapshot_of(&op, compression);
    let want = image(&op);
    let mut rng = Rng(seed() ^ salt);
    for case in 0..cases(share) {
        match case % 3 {
            0 => check(case, &[&mutate_raw(&mut rng, &original)], Some(&want)),
            1 => check(case, &[&mutate_index(&mut rng, &original)], None),
            _ => check(case, &[&mutate_block(&mut rng, &original)], None),
        }
    }
}

#[test]
fn mutated_full_snapshots_with_stored_blocks() {
    run_full(false, 30, 1);
}

#[test]
fn mutated_full_snapshots_with_lz4_blocks() {
    run_full(true, 25, 2);
}

#[test]
fn mutated_incremental_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer =
        Checkpointer::new(CheckpointConfig::new(dir.path()).compression(false)).unwrap();
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0, 100);
    let full = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    fill(&mut op, 100, 160);
    let inc = checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    let storage = checkpointer.storage();
    let (_, full_bytes) = storage.read_file(&full.info.files[0].to_ref()).unwrap();
    let (_, inc_bytes) = storage.read_file(&inc.info.files[0].to_ref()).unwrap();
    assert!(
        SnapshotReader::parse("inc", &inc_bytes)
            .unwrap()
            .index()
            .incremental
    );
    let want = image(&op);
    check(0, &[&full_bytes, &inc_bytes], Some(&want));
    let mut rng = Rng(seed() ^ 3);
    for case in 1..cases(25) {
        match case % 3 {
            0 => check(
                case,
                &[&full_bytes, &mutate_raw(&mut rng, &inc_bytes)],
                Some(&want),
            ),
            1 => check(
                case,
                &[&full_bytes, &mutate_index(&mut rng, &inc_bytes)],
                None,
            ),
            _ => check(
                case,
                &[&full_bytes, &mutate_block(&mut rng, &inc_bytes)],
                None,
            ),
        }
    }
}

#[test]
fn mutated_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let mut checkpointer = Checkpointer::new(CheckpointConfig::new(dir.path())).unwrap();
    let mut op = Sessions::default().bind(HeapBackend::new()).unwrap();
    fill(&mut op, 0, 60);
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    fill(&mut op, 60, 90);
    checkpointer.checkpoint_now(&mut [&mut op]).unwrap();
    let want = image(&op);
    let storage = checkpointer.storage().clone();
    let manifest_path = storage.manifest_location().unwrap().unwrap();
    let original = std::fs::read(&manifest_path).unwrap();
    let text = std::str::from_utf8(&original).unwrap();
    let (body, _) = text.trim_end().rsplit_once('\n').unwrap();
    let mut rng = Rng(seed() ^ 4);
    for case in 0..cases(20) {
        // Half raw (the manifest's checksum catches them), half with the checksum recomputed
        // (the JSON decoder, the path checks and the file checks see them).
        let (bytes, must_be_right) = if case % 2 == 0 {
            (mutate_raw(&mut rng, &original), true)
        } else {
            let mut b = body.as_bytes().to_vec();
            let len = b.len();
            mutate_in_place(&mut rng, &mut b, 0, len);
            let crc = crc32c::crc32c(&b);
            b.extend_from_slice(format!("\ncrc32c {crc:08x}\n").as_bytes());
            (b, false)
        };
        std::fs::write(&manifest_path, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            largest_allocation(|| {
                Sessions::default().restore(HeapBackend::new(), &storage, RestorePoint::Latest)
            })
        }));
        let Ok((result, largest)) = outcome else {
            panic!("case {case} (seed {}): restore panicked", seed());
        };
        assert!(
            largest <= (1 << 22),
            "case {case}: an allocation of {largest} bytes"
        );
        if let (Ok(restored), true) = (result, must_be_right) {
            assert!(
                image(&restored) == want,
                "case {case}: wrong data without an error"
            );
        }
    }
    std::fs::write(&manifest_path, &original).unwrap();
    let restored = Sessions::default()
        .restore(HeapBackend::new(), &storage, RestorePoint::Latest)
        .unwrap();
    assert!(image(&restored) == want);
}
