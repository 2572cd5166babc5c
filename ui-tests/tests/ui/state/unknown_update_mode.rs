use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "1h", update = "on_read")]
    seen: ValueState<bool>,
}

fn main() {}
