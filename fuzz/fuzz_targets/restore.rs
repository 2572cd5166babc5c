//! Restore from arbitrary bytes: one snapshot, or a chain of two (a full one and an
//! incremental one on top). Restore must return a typed error or data that passed every
//! check; it must never panic, loop or allocate beyond what the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use statewright::prelude::*;
use statewright::snapshot::SnapshotReader;

#[statewright::value]
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

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose where a second snapshot starts (none when out of range).
    let (split, data) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let files: Vec<&[u8]> = if split > 0 && split < data.len() {
        vec![&data[..split], &data[split..]]
    } else {
        vec![data]
    };
    let Ok(readers) = files
        .iter()
        .map(|f| SnapshotReader::parse("fuzz.snap", f))
        .collect::<statewright::Result<Vec<_>>>()
    else {
        return;
    };
    let refs: Vec<&SnapshotReader<'_>> = readers.iter().collect();
    let Ok(mut op) = Sessions::default().bind(HeapBackend::new()) else {
        return;
    };
    if op.restore_snapshots(&refs).is_ok() {
        // Whatever was restored reads back without a panic.
        for u in 0..4 {
            let user = format!("user-{u}");
            if let Ok(mut st) = op.key(user.as_str()) {
                let _ = st.last().get_owned();
                let _ = st.visits().get_owned();
                let _ = st.pages().entries().map(|e| e.count());
            }
        }
    }
});
