use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "99999999999999999999999s")]
    seen: ValueState<bool>,
}

fn main() {}
