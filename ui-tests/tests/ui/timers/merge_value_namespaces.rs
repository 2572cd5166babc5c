use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    #[state(namespace = i64)]
    last: ValueState<u64>,
}

fn main() -> statewright::Result<()> {
    let mut op = Windows::default().bind(HeapBackend::new())?;
    op.key(&1)?.last_namespaces().merge(&0, &[1, 2])?;
    Ok(())
}
