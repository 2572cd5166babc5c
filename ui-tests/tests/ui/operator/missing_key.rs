use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(name = "detector")]
struct Detector {
    seen: ValueState<bool>,
}

fn main() {}
