use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(reduce = max)]
    largest: ValueState<i64>,
}

fn main() {}
