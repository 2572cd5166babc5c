//! Values are read in place from RocksDB's pinned slices, also once they live in SST files,
//! where slices are not aligned (the `unaligned` rkyv format makes that safe to read).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::prelude::*;
use statewright_rocksdb::{RocksDbBackend, RocksDbOptions};

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub sensor: u64,
    pub value: f64,
    pub label: String,
    pub samples: Vec<i32>,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "readings", key = u32)]
struct Readings {
    last: ValueState<Reading>,
    history: ListState<Reading>,
}

fn reading(i: u32) -> Reading {
    Reading {
        sensor: u64::from(i) * 7,
        value: f64::from(i) / 3.0,
        label: "x".repeat((i % 37) as usize),
        samples: (0..(i % 11) as i32).collect(),
    }
}

#[test]
fn flushed_and_compacted_values_are_read_in_place() {
    let backend = RocksDbBackend::open_temporary(RocksDbOptions::low_memory()).unwrap();
    let mut op = Readings::default().bind(backend).unwrap();
    for i in 0..2_000u32 {
        let mut st = op.key(&i).unwrap();
        st.last().set(&reading(i)).unwrap();
        st.history().add(&reading(i)).unwrap();
        st.history().add(&reading(i + 1)).unwrap();
    }
    let check = |op: &mut Bound<Readings, RocksDbBackend>| {
        let mut misaligned = 0;
        for i in 0..2_000u32 {
            let mut st = op.key(&i).unwrap();
            let last = st.last().get().unwrap().unwrap();
            if !(last as *const _ as usize).is_multiple_of(8) {
                misaligned += 1;
            }
            assert_eq!(last.sensor.to_native(), u64::from(i) * 7);
            assert_eq!(last.label.as_str(), reading(i).label);
            let mut st = op.key(&i).unwrap();
            assert_eq!(
                st.history().get_owned().unwrap(),
                vec![reading(i), reading(i + 1)]
            );
        }
        misaligned
    };
    check(&mut op);
    op.backend().flush().unwrap();
    op.backend().compact().unwrap();
    let misaligned = check(&mut op);
    // Reads from SST blocks land at arbitrary offsets; they must work all the same.
    assert!(
        misaligned > 0,
        "expected some values at unaligned addresses"
    );
}
