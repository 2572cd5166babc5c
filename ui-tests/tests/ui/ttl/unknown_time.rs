use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(ttl = "1h", time = "wall_clock")]
    seen: ValueState<bool>,
}

fn main() {}
