use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() -> statewright::Result<()> {
    let mut op = Detector::default().bind(HeapBackend::new())?;
    let mut st = op.key(&1)?;
    // A zero-copy read borrows the stored bytes; a write may move them.
    let seen = st.seen().get()?;
    st.seen().set(&true)?;
    println!("{seen:?}");
    Ok(())
}
