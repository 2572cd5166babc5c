use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Sessions {
    gaps: TimerService,
    cleanup: TimerService<u32>,
}

fn main() {}
