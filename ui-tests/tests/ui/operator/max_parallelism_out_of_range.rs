use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64, max_parallelism = 40000)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() {}
