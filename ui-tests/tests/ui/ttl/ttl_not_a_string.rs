use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = 60)]
    seen: ValueState<bool>,
}

fn main() {}
