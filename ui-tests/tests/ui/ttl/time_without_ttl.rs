use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(time = "event")]
    seen: ValueState<bool>,
}

fn main() {}
