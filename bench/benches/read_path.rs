//! Reading one field of a stored value of about 1 KiB: through the zero-copy view (validated
//! rkyv access), by deserialising the whole value with rkyv, and by decoding it with serde and
//! bincode, the usual "serde blob per key". Plus the canonical key encoding.
//!
//! `cargo bench -p statewright-bench --bench read_path`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use statewright::EncodeKey;
use statewright::codec;
use statewright_bench::{Profile, profile};

fn read_one_field(c: &mut Criterion) {
    let p = profile();
    let mut rkyv_bytes = Vec::new();
    codec::encode_into(&p, &mut rkyv_bytes).unwrap();
    let bincode_bytes = bincode::serde::encode_to_vec(&p, bincode::config::standard()).unwrap();
    let mut g = c.benchmark_group("read_score_of_1KiB_value");
    g.bench_function("zero_copy_view", |b| {
        b.iter(|| {
            let v = codec::access::<Profile>(black_box(&rkyv_bytes)).unwrap();
            black_box(v.score.to_native())
        });
    });
    g.bench_function("rkyv_deserialise", |b| {
        b.iter(|| {
            black_box(
                codec::decode::<Profile>(black_box(&rkyv_bytes))
                    .unwrap()
                    .score,
            )
        });
    });
    g.bench_function("serde_bincode_decode", |b| {
        b.iter(|| {
            let (v, _): (Profile, usize) = bincode::serde::decode_from_slice(
                black_box(&bincode_bytes),
                bincode::config::standard(),
            )
            .unwrap();
            black_box(v.score)
        });
    });
    g.finish();
    eprintln!(
        "value sizes: rkyv {} bytes, bincode {} bytes",
        rkyv_bytes.len(),
        bincode_bytes.len()
    );
}

fn key_encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_key");
    let mut out = Vec::with_capacity(64);
    g.bench_function("u64", |b| {
        b.iter(|| {
            out.clear();
            black_box(0x0123_4567_89AB_CDEFu64).encode_key(&mut out);
            black_box(out.len())
        });
    });
    let text = String::from("customer-000042");
    g.bench_function("string", |b| {
        b.iter(|| {
            out.clear();
            black_box(text.as_str()).encode_key(&mut out);
            black_box(out.len())
        });
    });
    let tuple = (String::from("eu-west"), 42u64, -3i32);
    g.bench_function("tuple_string_u64_i32", |b| {
        b.iter(|| {
            out.clear();
            black_box(&tuple).encode_key(&mut out);
            black_box(out.len())
        });
    });
    g.finish();
}

criterion_group!(benches, read_one_field, key_encoding);
criterion_main!(benches);
