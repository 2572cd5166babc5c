use statewright::prelude::*;

fn largest(a: &i64) -> i64 {
    *a
}

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(reduce = largest)]
    largest: ReducingState<i64>,
}

fn main() {}
