use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    #[state(namespace = i64, reduce = sum)]
    sum: ReducingState<i64>,
}

fn main() -> statewright::Result<()> {
    let mut op = Windows::default().bind(HeapBackend::new())?;
    op.key(&1)?.sum().add(&5)?;
    Ok(())
}
