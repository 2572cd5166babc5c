use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() -> statewright::Result<()> {
    let mut op = Detector::default().bind(HeapBackend::new())?;
    let first = op.key(&1)?;
    // A second key while the first key's view is alive: the views would alias.
    let second = op.key(&2)?;
    drop(first);
    drop(second);
    Ok(())
}
