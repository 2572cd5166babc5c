use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
enum Detector {
    Small { seen: ValueState<bool> },
}

fn main() {}
