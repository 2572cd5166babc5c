use statewright::prelude::*;

struct Window(i64, i64);

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    #[state(namespace = Window, reduce = sum)]
    sum: ReducingState<i64>,
}

fn main() {}
