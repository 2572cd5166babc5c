use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64, max_paralelism = 64)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() {}
