// One mistake in an attribute is one error: the operator is still usable below it (bound,
// keyed, its states and plain fields read), and none of those uses is reported.
use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Detector {
    #[state(tll = "60s")]
    seen: ValueState<bool>,
    #[state(reduce = max)]
    largest: ReducingState<i64>,
    by_merchant: MapState<u32, i64>,
    threshold: i64,
}

fn main() -> statewright::Result<()> {
    let mut op = Detector::default().bind(HeapBackend::new())?;
    op.key(&7)?.seen().set(&true)?;
    let mut st = op.key(&8)?;
    st.largest().add(&5)?;
    st.by_merchant().put(&1, &2)?;
    let seen: Option<bool> = op.key(&7)?.seen().get_owned()?;
    let threshold: i64 = op.key(&7)?.threshold;
    let _ = (seen, threshold, Detector::manifest());
    Ok(())
}
