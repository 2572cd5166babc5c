//! The cost of time-to-live: `value_rmw` (read a value, add one, write it back) on each backend,
//! with and without a TTL on the state, over 100,000 keys in the order `statebench` uses.
//!
//! `cargo bench -p statewright-bench --bench ttl`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use statewright::prelude::*;
use statewright::{RocksDbBackend, RocksDbOptions};
use statewright_bench::Params;

#[derive(StatefulOperator, Default)]
#[operator(name = "rmw", key = u64)]
struct Plain {
    value: ValueState<i64>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "rmw", key = u64)]
struct WithTtl {
    #[state(ttl = "1day")]
    value: ValueState<i64>,
}

const K: u64 = 100_000;

macro_rules! rmw {
    ($group:expr, $name:expr, $op:expr) => {{
        let mut op = $op;
        let p = Params {
            k: K,
            n: 0,
            seed: 42,
            m: 1,
        };
        for i in 0..K {
            op.key(&i).unwrap().value().set(&0).unwrap();
        }
        let mut i = 0u64;
        $group.bench_function($name, |b| {
            b.iter(|| {
                let k = p.key(i);
                i += 1;
                let mut st = op.key(&k).unwrap();
                let v = st.value().get().unwrap().map_or(0, |v| v.to_native());
                st.value().set(&(v + 1)).unwrap();
            });
        });
    }};
}

fn value_rmw(c: &mut Criterion) {
    let mut g = c.benchmark_group("value_rmw");
    g.throughput(Throughput::Elements(1));
    rmw!(
        g,
        "heap",
        Plain::default().bind(HeapBackend::new()).unwrap()
    );
    rmw!(
        g,
        "ttl-heap",
        WithTtl::default()
            .bind(TtlBackend::new(HeapBackend::new()))
            .unwrap()
    );
    let rocks = || RocksDbBackend::open_temporary(RocksDbOptions::default()).unwrap();
    rmw!(g, "rocksdb", Plain::default().bind(rocks()).unwrap());
    rmw!(
        g,
        "ttl-rocksdb",
        WithTtl::default().bind(TtlBackend::new(rocks())).unwrap()
    );
    g.finish();
}

criterion_group!(benches, value_rmw);
criterion_main!(benches);
