use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Sessions {
    #[state(ttl = "1h")]
    timers: TimerService,
}

fn main() {}
