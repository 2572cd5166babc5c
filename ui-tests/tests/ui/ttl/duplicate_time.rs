use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "1h", time = "event", time = "processing")]
    seen: ValueState<bool>,
}

fn main() {}
