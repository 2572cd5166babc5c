use statewright::prelude::*;

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub card: u64,
    pub amount_cents: i64,
    pub merchant: u32,
}

#[derive(StatefulOperator, Default)]
#[operator(name = "fraud-detector", key = u64, max_parallelism = 128)]
pub struct FraudDetector {
    #[state(ttl = "1m", visibility = "return_expired_if_not_cleaned_up", time = "processing")]
    small_seen: ValueState<bool>,
    #[state(ttl = "1h", update = "on_read_and_write")]
    recent: ListState<Txn>,
    per_merchant: MapState<u32, i64>,
    #[state(reduce = max)]
    largest: ReducingState<i64>,
    threshold_cents: i64,
}

fn process(op: &mut Bound<FraudDetector, impl StateBackend>, txn: &Txn) -> statewright::Result<bool> {
    let mut st = op.key(&txn.card)?;
    let threshold = st.threshold_cents;
    let alert = st.small_seen().get()?.copied().unwrap_or(false) && txn.amount_cents > threshold;
    st.small_seen().set(&(txn.amount_cents < 100))?;
    st.recent().add(txn)?;
    st.per_merchant().update(&txn.merchant, |v| v.unwrap_or(0) + txn.amount_cents)?;
    st.largest().add(&txn.amount_cents)?;
    Ok(alert)
}

fn main() -> statewright::Result<()> {
    let mut op = FraudDetector { threshold_cents: 50_000, ..Default::default() }.bind(statewright::TtlBackend::new(HeapBackend::new()))?;
    let small = Txn { card: 1, amount_cents: 50, merchant: 3 };
    let large = Txn { card: 1, amount_cents: 90_000, merchant: 3 };
    assert!(!process(&mut op, &small)?);
    assert!(process(&mut op, &large)?);
    Ok(())
}
