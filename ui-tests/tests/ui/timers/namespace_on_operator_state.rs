use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Offsets {
    #[state(namespace = i64)]
    offsets: UnionListState<u64>,
}

fn main() {}
