use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    largest: ReducingState<i64>,
}

fn main() {}
