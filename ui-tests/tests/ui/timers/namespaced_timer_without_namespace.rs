use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    timers: TimerService<i64>,
}

fn main() -> statewright::Result<()> {
    let mut op = Windows::default().bind(HeapBackend::new())?;
    // A namespaced timer service needs the namespace: `register_event_time_in(&window, t)`.
    op.key(&1)?.timers().register_event_time(10)?;
    Ok(())
}
