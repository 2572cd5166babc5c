use statewright::prelude::*;

struct Window {
    start: i64,
    end: i64,
}

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    timers: TimerService<Window>,
}

fn main() {}
