use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    per_merchant: MapState<u32>,
}

fn main() {}
