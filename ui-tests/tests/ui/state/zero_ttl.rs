use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "0s")]
    seen: ValueState<bool>,
}

fn main() {}
