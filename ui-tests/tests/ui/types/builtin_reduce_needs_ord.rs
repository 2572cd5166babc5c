use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(reduce = max)]
    largest: ReducingState<f64>,
}

fn main() {}
