use statewright::prelude::*;

// Every mistake is reported in one compilation, each at its own token.
#[derive(StatefulOperator)]
#[operator(key = u64, nmae = "x")]
struct Detector {
    #[state(ttl = "soon")]
    seen: ValueState<bool>,
    #[state(name = "seen")]
    other: ValueState<bool>,
    #[state(aggregate = Mean)]
    largest: ReducingState<i64>,
}

fn main() {}
