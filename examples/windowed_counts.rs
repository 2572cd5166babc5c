//! Windowed counts: clicks per user in tumbling event-time windows of 10 seconds, with 5
//! seconds of allowed lateness, as Flink's `keyBy(user).window(Tumbling...).allowedLateness(...)`.
//!
//! Clicks arrive out of order (up to 2 seconds, and a few much later); the watermark trails the
//! latest click by 2 seconds. A window fires when the watermark passes its end; a late click
//! that still falls within the allowed lateness updates it and makes it fire again; once the
//! watermark passes the end plus the lateness, the window's state and timers are gone and a
//! click for it is dropped. The count of each window is a `ReducingState` in the window's
//! namespace; its timers are the operator's `TimerService<TimeWindow>`.
//!
//! ```text
//! cargo run --example windowed_counts -- [--clicks N]
//! cargo run --example windowed_counts --features rocksdb -- --backend rocksdb
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use statewright::prelude::*;
use statewright::window::{TimeWindow, Windows};

/// The window size, in milliseconds.
pub const WINDOW_MS: i64 = 10_000;
/// How late a click may be for its window, in milliseconds.
pub const LATENESS_MS: i64 = 5_000;
/// How far the watermark trails the latest click, in milliseconds.
pub const OUT_OF_ORDER_MS: i64 = 2_000;

// ANCHOR: operator
/// Clicks per user and window.
#[derive(StatefulOperator, Default)]
#[operator(name = "windowed-counts", key = u64)]
pub struct WindowedCounts {
    /// The count of each window of a user: one value per window.
    #[state(namespace = TimeWindow, reduce = sum)]
    count: ReducingState<u64>,
    /// Each window's trigger (at its end) and cleanup (at its end plus the lateness) timers.
    timers: TimerService<TimeWindow>,
}

/// The windows: tumbling, 10 s, 5 s of allowed lateness.
pub fn windows() -> Windows {
    Windows::tumbling(Duration::from_millis(WINDOW_MS as u64))
        .with_allowed_lateness(Duration::from_millis(LATENESS_MS as u64))
}

/// One result: a window's count as it fired (again, after late clicks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fired {
    /// The user.
    pub user: u64,
    /// The window.
    pub window: TimeWindow,
    /// Its count when it fired.
    pub count: u64,
}

/// Takes one click; returns whether it was dropped as too late.
pub fn click<B: StateBackend>(
    op: &mut Bound<WindowedCounts, B>,
    windows: &Windows,
    user: u64,
    time_ms: i64,
) -> statewright::Result<bool> {
    let watermark = op.watermark();
    let mut st = op.key(&user)?;
    let mut dropped = false;
    for w in windows.assign(time_ms) {
        if windows.is_late(&w, watermark) {
            dropped = true;
            continue;
        }
        st.count(&w).add(&1)?;
        windows.register(&mut st.timers(), &w)?;
    }
    Ok(dropped)
}

/// Advances event time: fires the windows whose end it passed, drops those past their
/// lateness.
pub fn advance<B: StateBackend + 'static>(
    op: &mut Bound<WindowedCounts, B>,
    windows: &Windows,
    watermark: i64,
    out: &mut Vec<Fired>,
) -> statewright::Result<()> {
    op.advance_watermark(watermark, |timer, mut st| {
        let window = timer.namespace;
        let action = windows.on_timer(&window, timer.timestamp);
        if action.fire {
            let count = st.count(&window).get_owned()?.unwrap_or(0);
            out.push(Fired {
                user: timer.key,
                window,
                count,
            });
        }
        if action.cleanup {
            st.count(&window).clear()?;
        }
        Ok(())
    })?;
    Ok(())
}
// ANCHOR_END: operator

/// The `i`-th click: (user, event time). 20 clicks a second, shuffled by up to 2 seconds; one
/// in 40 arrives 4 to 12 seconds late.
pub fn nth_click(i: u64) -> (u64, i64) {
    let mut z = 0xC0_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let base = i as i64 * 50;
    let delay = if z.is_multiple_of(40) {
        4_000 + (z >> 8) as i64 % 8_000
    } else {
        (z >> 8) as i64 % OUT_OF_ORDER_MS
    };
    (z % 50, (base - delay).max(0))
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every firing, in order.
    pub fired: Vec<Fired>,
    /// Clicks dropped as later than their window's lateness.
    pub dropped: u64,
    /// Timers left once the watermark passed every window.
    pub timers_left: usize,
}

/// Runs `clicks` clicks, advancing the watermark every 100 clicks, then to the end of time.
pub fn run<B: StateBackend + 'static>(clicks: u64, backend: B) -> statewright::Result<Summary> {
    let windows = windows();
    let mut op = WindowedCounts::default().bind(backend)?;
    let mut fired = Vec::new();
    let mut dropped = 0;
    let mut latest = i64::MIN;
    for i in 0..clicks {
        let (user, time_ms) = nth_click(i);
        dropped += u64::from(click(&mut op, &windows, user, time_ms)?);
        latest = latest.max(time_ms);
        if i % 100 == 99 {
            advance(&mut op, &windows, latest - OUT_OF_ORDER_MS, &mut fired)?;
        }
    }
    advance(&mut op, &windows, i64::MAX, &mut fired)?;
    Ok(Summary {
        fired,
        dropped,
        timers_left: op.timer_count(TimeDomain::EventTime)?,
    })
}

/// The final count of every window and the dropped clicks, computed over a plain `BTreeMap`
/// with the lateness rule spelled out: a click is dropped when the watermark at its arrival
/// reached its window's end plus the lateness.
pub fn reference(clicks: u64) -> (BTreeMap<(u64, TimeWindow), u64>, u64) {
    let mut counts = BTreeMap::new();
    let mut dropped = 0;
    let mut latest = i64::MIN;
    let mut watermark = i64::MIN;
    for i in 0..clicks {
        let (user, t) = nth_click(i);
        let start = t - t.rem_euclid(WINDOW_MS);
        let window = TimeWindow::new(start, start + WINDOW_MS);
        if watermark >= window.end - 1 + LATENESS_MS {
            dropped += 1;
        } else {
            *counts.entry((user, window)).or_insert(0) += 1;
        }
        latest = latest.max(t);
        if i % 100 == 99 {
            watermark = watermark.max(latest - OUT_OF_ORDER_MS);
        }
    }
    (counts, dropped)
}

/// The count each window had when it fired last.
pub fn final_counts(fired: &[Fired]) -> BTreeMap<(u64, TimeWindow), u64> {
    fired
        .iter()
        .map(|f| ((f.user, f.window), f.count))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut clicks, mut backend) = (200_000u64, "heap".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--clicks" => clicks = value()?.parse()?,
            "--backend" => backend = value()?,
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --clicks N, --backend heap|rocksdb"
                )
                .into());
            }
        }
    }
    let summary = match backend.as_str() {
        "heap" => run(clicks, HeapBackend::new())?,
        #[cfg(feature = "rocksdb")]
        "rocksdb" => run(
            clicks,
            statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::default())?,
        )?,
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => {
            return Err("this build has no RocksDB backend; run with `--features rocksdb`".into());
        }
        other => return Err(format!("unknown backend `{other}`").into()),
    };
    let counts = final_counts(&summary.fired);
    let (expected, expected_dropped) = reference(clicks);
    let refired = summary.fired.len() - counts.len();
    let matched = counts == expected && summary.dropped == expected_dropped;
    println!(
        "windowed counts on the {backend} backend: {clicks} clicks over {:.0} seconds of event time",
        clicks as f64 * 0.05
    );
    println!("  windows fired:          {} (user x 10 s)", counts.len());
    println!("  fired again after late clicks: {refired}");
    println!("  clicks dropped as too late:    {}", summary.dropped);
    println!("  timers left at the end:        {}", summary.timers_left);
    println!(
        "  equal to a plain BTreeMap with the lateness rule: {}",
        if matched { "yes" } else { "NO" }
    );
    if matched && summary.timers_left == 0 {
        Ok(())
    } else {
        Err("the windows differ from the reference".into())
    }
}
