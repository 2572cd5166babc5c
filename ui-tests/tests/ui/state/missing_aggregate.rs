use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Averages {
    mean: AggregatingState<i64, f64>,
}

fn main() -> statewright::Result<()> {
    let mut op = Averages::default().bind(HeapBackend::new())?;
    op.key(&1)?.mean().add(&5)?;
    let mean: Option<f64> = op.key(&1)?.mean().get()?;
    let _ = mean;
    Ok(())
}
