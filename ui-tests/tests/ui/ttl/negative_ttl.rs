use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "-5s")]
    seen: ValueState<bool>,
}

fn main() {}
