use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "1h", visibility = "never")]
    seen: ValueState<bool>,
}

fn main() {}
