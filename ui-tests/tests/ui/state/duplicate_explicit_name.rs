use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(name = "seen")]
    small: ValueState<bool>,
    #[state(name = "seen")]
    large: ValueState<bool>,
}

fn main() {}
