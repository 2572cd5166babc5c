use statewright::prelude::*;

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Source {
    #[state(ttl = "1h")]
    offsets: OperatorListState<u64>,
    #[state(ttl = "1m")]
    rules: BroadcastState<String, i64>,
}

fn main() {}
