use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    seen: ValueState<bool>,
    #[state(ttl = "60s")]
    threshold_cents: i64,
}

fn main() {}
