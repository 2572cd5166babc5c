use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = String)]
struct Sessions {
    clicks: ValueState<u64>,
    timers: TimerService,
}

#[derive(StatefulOperator, Default)]
#[operator(key = u64)]
struct Windows {
    #[state(name = "window-timers")]
    timers: statewright::TimerService<(i64, i64)>,
}

fn main() -> statewright::Result<()> {
    let mut op = Sessions::default().bind(HeapBackend::new())?;
    let mut st = op.key("a")?;
    st.clicks().set(&1)?;
    st.timers().register_event_time(10)?;
    let fired = op.advance_watermark(10, |timer, mut st| {
        let _: String = timer.key;
        st.clicks().set(&0)
    })?;
    assert_eq!(fired, 1);
    let mut w = Windows::default().bind(HeapBackend::new())?;
    w.key(&1)?.timers().register_event_time_in(&(0, 10), 9)?;
    Ok(())
}
