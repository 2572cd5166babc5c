// A key type the derive refuses is one error, not one more at every use of the type as a key.
use statewright::prelude::*;

#[derive(StateKey, Clone, Copy)]
union Raw {
    bits: u32,
    value: f32,
}

#[derive(StatefulOperator, Default)]
#[operator(key = Raw)]
struct Counts {
    n: ValueState<u64>,
}

fn main() -> statewright::Result<()> {
    let mut op = Counts::default().bind(HeapBackend::new())?;
    op.key(&Raw { bits: 1 })?.n().set(&1)?;
    let _ = Raw { value: 1.0 }.to_key_bytes();
    Ok(())
}
