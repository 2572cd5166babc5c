use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(name = "total")]
    sum: ValueState<i64>,
    total: ValueState<i64>,
}

fn main() {}
