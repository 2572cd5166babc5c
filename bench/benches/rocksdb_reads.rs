//! Point reads from RocksDB once values live in SST files: statewright's zero-copy path (a
//! pinned slice, validated and read in place) against the alternatives.
//!
//! - `pinned_in_place`: `get_pinned`, `rkyv::access` on the pinned bytes (what statewright does);
//! - `copied_then_read`: `get` into a fresh vector (an aligned copy), then the same access;
//! - `raw_pinned`: `get_pinned` alone, the floor for any read.
//!
//! `cargo bench -p statewright-bench --bench rocksdb_reads`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use statewright::codec;
use statewright::prelude::*;
use statewright::{RocksDbBackend, RocksDbOptions};

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: u64,
    pub value: f64,
    pub label: String,
    pub samples: Vec<i32>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "bench", key = u64)]
struct Bench {
    last: ValueState<Reading>,
}

const KEYS: u64 = 100_000;

fn reads(c: &mut Criterion) {
    let backend = RocksDbBackend::open_temporary(RocksDbOptions::default()).unwrap();
    let mut op = Bench::default().bind(backend).unwrap();
    for k in 0..KEYS {
        let r = Reading {
            sensor: k,
            value: k as f64,
            label: format!("sensor-{k}"),
            samples: (0..(k % 16) as i32).collect(),
        };
        op.key(&k).unwrap().last().set(&r).unwrap();
    }
    op.backend().flush().unwrap();
    op.backend().compact().unwrap();

    // The raw column family and key layout for the baselines: same bytes statewright reads.
    let raw_key = |k: u64| {
        let canonical = k.to_key_bytes();
        let kg = statewright::keygroup::key_group(&canonical, 128);
        let mut key = kg.to_be_bytes().to_vec();
        key.push(canonical.len() as u8);
        key.extend_from_slice(&canonical);
        key
    };
    let keys: Vec<u64> = (0..4096u64).map(|i| (i * 7919) % KEYS).collect();
    let raw_keys: Vec<Vec<u8>> = keys.iter().map(|&k| raw_key(k)).collect();
    let db = op.backend().db();
    let cf = db.cf_handle("bench.last").unwrap();

    let mut g = c.benchmark_group("rocksdb_point_read");
    g.bench_function("pinned_in_place", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            let st = op.key(&keys[i]).unwrap();
            black_box(st.last().get().unwrap().map(|r| r.sensor.to_native()))
        });
    });
    g.bench_function("copied_then_read", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % raw_keys.len();
            let bytes = db.get_cf(cf, &raw_keys[i]).unwrap().unwrap();
            let r = codec::access::<Reading>(&bytes).unwrap();
            black_box(r.sensor.to_native())
        });
    });
    g.bench_function("raw_pinned", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % raw_keys.len();
            let bytes = db.get_pinned_cf(cf, &raw_keys[i]).unwrap().unwrap();
            black_box(bytes.len())
        });
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
