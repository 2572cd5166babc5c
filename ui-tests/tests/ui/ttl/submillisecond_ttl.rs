use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "500us")]
    seen: ValueState<bool>,
}

fn main() {}
