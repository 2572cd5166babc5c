use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "1x")]
    seen: ValueState<bool>,
}

fn main() {}
