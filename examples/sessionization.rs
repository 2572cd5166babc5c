//! Sessionization with merging session windows: a user's session ends after 30 minutes without
//! a click, and is emitted the moment its gap closes, in event time.
//!
//! Each click opens a session window `[t, t + 30 min)`; windows of a user that overlap or touch
//! merge (`Windows::merge_sessions`), and their state moves into the merged window
//! (`session_namespaces().merge(...)`), as Flink's `EventTimeSessionWindows` merge. The session
//! (first click, last click, clicks) is an `AggregatingState` in the window's namespace; the
//! window's event-time timer fires when the watermark passes its end, 30 minutes after the last
//! click, and emits the session, adds it to the user's totals and drops its state. So the state
//! holds only open sessions and the totals.
//!
//! ```text
//! cargo run --example sessionization -- [--clicks N]
//! cargo run --example sessionization --features rocksdb -- --backend rocksdb
//! ```

use std::collections::HashMap;
use std::time::Duration;

use statewright::prelude::*;
use statewright::window::{TimeWindow, Windows};

/// The session gap, in milliseconds.
pub const GAP_MS: i64 = 30 * 60 * 1000;

// ANCHOR: operator
/// A session's clicks: the first and last click times and their number.
pub struct SessionClicks;

impl Aggregate for SessionClicks {
    type In = i64;
    /// (first click, last click, clicks).
    type Acc = (i64, i64, u32);
    type Out = (i64, i64, u32);
    fn create() -> (i64, i64, u32) {
        (i64::MAX, i64::MIN, 0)
    }
    fn add(acc: &mut (i64, i64, u32), time_ms: &i64) {
        acc.0 = acc.0.min(*time_ms);
        acc.1 = acc.1.max(*time_ms);
        acc.2 += 1;
    }
    fn result(acc: &(i64, i64, u32)) -> (i64, i64, u32) {
        *acc
    }
    fn merge(acc: &mut (i64, i64, u32), other: (i64, i64, u32)) {
        acc.0 = acc.0.min(other.0);
        acc.1 = acc.1.max(other.1);
        acc.2 += other.2;
    }
}

/// A user's totals over all sessions.
#[statewright::value]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions started.
    pub sessions: u64,
    /// Clicks.
    pub clicks: u64,
    /// Time between the first and the last click of each session, summed.
    pub session_ms: i64,
}

/// Splits each user's clicks into sessions.
#[derive(StatefulOperator, Default)]
#[operator(name = "sessions", key = u64)]
pub struct Sessionizer {
    /// Each open session window's clicks.
    #[state(namespace = TimeWindow, aggregate = SessionClicks)]
    session: AggregatingState<i64, (i64, i64, u32)>,
    /// Totals of the sessions emitted, kept for good.
    totals: ValueState<Totals>,
    /// The timer of each open session window, at its end.
    timers: TimerService<TimeWindow>,
}

/// A session, emitted when its gap closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user: u64,
    /// Event time of its first click.
    pub start_ms: i64,
    /// Event time of its last click.
    pub last_ms: i64,
    /// Its clicks.
    pub clicks: u32,
}

/// The session windows.
pub fn windows() -> Windows {
    Windows::session(Duration::from_millis(GAP_MS as u64))
}

/// Processes one click of `user` at event time `time_ms`.
pub fn click<B: StateBackend>(
    op: &mut Bound<Sessionizer, B>,
    windows: &Windows,
    user: u64,
    time_ms: i64,
) -> statewright::Result<()> {
    let mut st = op.key(&user)?;
    let window = windows
        .assign(time_ms)
        .next()
        .unwrap_or(TimeWindow::new(time_ms, time_ms));
    let active = st.session_namespaces().list()?;
    let merge = Windows::merge_sessions(&active, window);
    if !merge.merged.is_empty() {
        st.session_namespaces()
            .merge(&merge.window, &merge.merged)?;
        for old in &merge.merged {
            windows.delete(&mut st.timers(), old)?;
        }
    }
    st.session(&merge.window).add(&time_ms)?;
    windows.register(&mut st.timers(), &merge.window)
}

/// Advances event time: emits the sessions whose gap closed before `watermark`.
pub fn advance<B: StateBackend + 'static>(
    op: &mut Bound<Sessionizer, B>,
    watermark: i64,
    out: &mut Vec<Session>,
) -> statewright::Result<()> {
    op.advance_watermark(watermark, |timer, mut st| {
        let window = timer.namespace;
        if let Some((start_ms, last_ms, clicks)) = st.session(&window).get()? {
            out.push(Session {
                user: timer.key,
                start_ms,
                last_ms,
                clicks,
            });
            let mut totals = st.totals().get_owned()?.unwrap_or_default();
            totals.sessions += 1;
            totals.clicks += u64::from(clicks);
            totals.session_ms += last_ms - start_ms;
            st.totals().set(&totals)?;
        }
        st.session(&window).clear()
    })?;
    Ok(())
}
// ANCHOR_END: operator

/// The `i`-th click: (user, event time). Users click in bursts, some come back after a
/// pause longer than the gap, many never come back.
pub fn nth_click(i: u64) -> (u64, i64) {
    let mut z = 0x5E55_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 5 clicks a second in all; a user is active for a window of about an hour and a half,
    // then makes way for the next users.
    let time_ms = i as i64 * 200;
    let window = (time_ms / (90 * 60 * 1000)) as u64;
    (window * 1_000 + z % 2_000, time_ms)
}

/// What a run produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every session, in the order their gaps closed.
    pub sessions: Vec<Session>,
    /// Every user's totals, as the operator's state holds them.
    pub totals: HashMap<u64, Totals>,
    /// Sessions still open after the last click (emitted once the watermark passed them).
    pub open_at_end: usize,
    /// Timers left at the very end.
    pub timers_left: usize,
}

/// Runs `clicks` clicks in event-time order, the watermark at each click's time, then to
/// the end of time.
pub fn run<B: StateBackend + 'static>(clicks: u64, backend: B) -> statewright::Result<Summary> {
    let windows = windows();
    let mut op = Sessionizer::default().bind(backend)?;
    let mut sessions = Vec::new();
    let mut users = Vec::new();
    for i in 0..clicks {
        let (user, time_ms) = nth_click(i);
        // Sessions whose gap closed before this click go first.
        advance(&mut op, time_ms, &mut sessions)?;
        click(&mut op, &windows, user, time_ms)?;
        users.push(user);
    }
    let open_at_end = op.timer_count(TimeDomain::EventTime)?;
    advance(&mut op, i64::MAX, &mut sessions)?;
    users.sort_unstable();
    users.dedup();
    let mut totals = HashMap::new();
    for user in users {
        if let Some(t) = op.key(&user)?.totals().get_owned()? {
            totals.insert(user, t);
        }
    }
    Ok(Summary {
        sessions,
        totals,
        open_at_end,
        timers_left: op.timer_count(TimeDomain::EventTime)?,
    })
}

/// The sessions, from a plain `HashMap` with the gap rule spelled out: a click less than the
/// gap after the user's last one continues the session.
pub fn reference(clicks: u64) -> Vec<Session> {
    let mut open: HashMap<u64, Session> = HashMap::new();
    let mut done = Vec::new();
    for i in 0..clicks {
        let (user, t) = nth_click(i);
        match open.get_mut(&user) {
            Some(s) if t - s.last_ms < GAP_MS => {
                s.last_ms = t;
                s.clicks += 1;
            }
            _ => {
                let new = Session {
                    user,
                    start_ms: t,
                    last_ms: t,
                    clicks: 1,
                };
                if let Some(old) = open.insert(user, new) {
                    done.push(old);
                }
            }
        }
    }
    done.extend(open.into_values());
    done
}

/// Every user's totals over `sessions`.
pub fn totals_of(sessions: &[Session]) -> HashMap<u64, Totals> {
    let mut totals: HashMap<u64, Totals> = HashMap::new();
    for s in sessions {
        let t = totals.entry(s.user).or_default();
        t.sessions += 1;
        t.clicks += u64::from(s.clicks);
        t.session_ms += s.last_ms - s.start_ms;
    }
    totals
}

/// `sessions` in a canonical order (user, start).
pub fn sorted(sessions: &[Session]) -> Vec<Session> {
    let mut v = sessions.to_vec();
    v.sort_by_key(|s| (s.user, s.start_ms));
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut clicks, mut backend) = (500_000u64, "heap".to_owned());
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
    let expected = reference(clicks);
    let matched = sorted(&summary.sessions) == sorted(&expected)
        && summary.totals == totals_of(&expected)
        && summary.timers_left == 0;
    let sessions = summary.sessions.len();
    let session_ms: i64 = summary
        .sessions
        .iter()
        .map(|s| s.last_ms - s.start_ms)
        .sum();
    println!(
        "sessionization on the {backend} backend: {clicks} clicks over {:.1} hours of event time",
        clicks as f64 * 0.2 / 3600.0
    );
    println!("  users:                 {}", summary.totals.len());
    println!(
        "  sessions emitted:      {sessions} ({:.1} clicks, {:.1} minutes on average)",
        clicks as f64 / sessions.max(1) as f64,
        session_ms as f64 / sessions.max(1) as f64 / 60_000.0
    );
    println!(
        "  open after the last click: {} (emitted when the watermark passed them)",
        summary.open_at_end
    );
    println!(
        "  equal to a plain HashMap with the gap rule: {}",
        if matched { "yes" } else { "NO" }
    );
    if matched {
        Ok(())
    } else {
        Err("the sessions differ from the reference".into())
    }
}
