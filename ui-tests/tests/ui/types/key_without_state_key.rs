use statewright::prelude::*;

struct Card {
    number: u64,
}

#[derive(StatefulOperator)]
#[operator(key = Card)]
struct Detector {
    seen: ValueState<bool>,
}

fn main() {}
