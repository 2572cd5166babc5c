use statewright::prelude::*;

struct Txn {
    amount_cents: i64,
}

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    last: ValueState<Txn>,
}

fn main() {}
