use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "300000000years")]
    seen: ValueState<bool>,
}

fn main() {}
