use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(tll = "60s")]
    seen: ValueState<bool>,
}

fn main() {}
