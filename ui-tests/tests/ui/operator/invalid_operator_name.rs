use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(name = "../fraud detector", key = u64)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() {}
