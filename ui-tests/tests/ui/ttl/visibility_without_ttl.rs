use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(visibility = "return_expired_if_not_cleaned_up")]
    seen: ValueState<bool>,
}

fn main() {}
