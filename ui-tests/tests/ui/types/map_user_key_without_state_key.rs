use statewright::prelude::*;

struct Merchant(u32);

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    per_merchant: MapState<Merchant, i64>,
}

fn main() {}
