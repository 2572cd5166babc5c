use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Payments {
    #[state(version = 0)]
    last: ValueState<i64>,
}

fn main() {}
