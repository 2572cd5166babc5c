//! Sessionization with event-time TTL: a user's session ends after 30 minutes without a
//! click, and the state of the open session expires at that moment, in event time.
//!
//! The open session is a `ValueState<Session>` with `ttl = "30m"` in event time: every click
//! rewrites it, which restarts its 30 minutes; once the watermark passes the last click by 30
//! minutes it is gone, so the next click of the user starts a new session. Nothing keeps a
//! timer per user: expiry is the session gap, and incremental cleanup removes the sessions of
//! users who never come back, so the state holds only open sessions. Each user's totals
//! (sessions, clicks, time in sessions) live in a second state without TTL.
//!
//! ```text
//! cargo run --example sessionization -- [--clicks N]
//! cargo run --example sessionization --features rocksdb -- --backend rocksdb
//! ```

use std::collections::HashMap;

use statewright::prelude::*;

/// The session gap, in milliseconds.
pub const GAP_MS: i64 = 30 * 60 * 1000;

// ANCHOR: operator
/// A user's open session.
#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Event time of its first click.
    pub start_ms: i64,
    /// Event time of its last click.
    pub last_ms: i64,
    /// Clicks so far.
    pub clicks: u32,
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
    /// The open session: expires 30 minutes of event time after its last write.
    #[state(ttl = "30m", time = "event")]
    open: ValueState<Session>,
    /// Totals, kept for good.
    totals: ValueState<Totals>,
}

/// Processes one click of `user` at event time `time_ms`.
pub fn click<B: AnyBackend>(
    op: &mut Bound<Sessionizer, TtlBackend<B>>,
    user: u64,
    time_ms: i64,
) -> statewright::Result<()> {
    // In order here; a runtime would advance the watermark from its sources.
    op.backend().set_watermark(time_ms);
    let mut st = op.key(&user)?;
    // An expired session reads as none: the gap has passed, this click starts a new one.
    let (session, extended_ms) = match st.open().get_owned()? {
        Some(s) => (
            Session {
                last_ms: time_ms,
                clicks: s.clicks + 1,
                ..s
            },
            time_ms - s.last_ms,
        ),
        None => (
            Session {
                start_ms: time_ms,
                last_ms: time_ms,
                clicks: 1,
            },
            0,
        ),
    };
    let mut totals = st.totals().get_owned()?.unwrap_or_default();
    totals.sessions += u64::from(session.clicks == 1);
    totals.clicks += 1;
    totals.session_ms += extended_ms;
    st.open().set(&session)?;
    st.totals().set(&totals)?;
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
    /// Every user's totals.
    pub totals: HashMap<u64, Totals>,
    /// Open sessions still in the state at the end.
    pub open: u64,
    /// Sessions removed from the state once expired (by cleanup or on access).
    pub expired: u64,
}

/// Runs `clicks` clicks.
pub fn run<B: AnyBackend>(clicks: u64, backend: B) -> statewright::Result<Summary> {
    let backend = TtlBackend::new(backend).with_incremental_cleanup(64, 16);
    let mut op = Sessionizer::default().bind(backend)?;
    let mut users = Vec::new();
    for i in 0..clicks {
        let (user, time_ms) = nth_click(i);
        click(&mut op, user, time_ms)?;
        users.push(user);
    }
    users.sort_unstable();
    users.dedup();
    let mut totals = HashMap::new();
    let mut open = 0;
    for user in users {
        let mut st = op.key(&user)?;
        open += u64::from(st.open().get()?.is_some());
        if let Some(t) = st.totals().get_owned()? {
            totals.insert(user, t);
        }
    }
    let expired = op
        .backend()
        .ttl_stats()
        .iter()
        .filter(|s| s.state == "sessions.open")
        .map(|s| s.total())
        .sum();
    Ok(Summary {
        totals,
        open,
        expired,
    })
}

/// The same totals from a plain `HashMap` with the gap rule spelled out.
pub fn reference(clicks: u64) -> HashMap<u64, Totals> {
    let mut last: HashMap<u64, (i64, i64)> = HashMap::new(); // user -> (start, last)
    let mut totals: HashMap<u64, Totals> = HashMap::new();
    for i in 0..clicks {
        let (user, t) = nth_click(i);
        let total = totals.entry(user).or_default();
        total.clicks += 1;
        match last.get_mut(&user) {
            Some((_, prev)) if t - *prev < GAP_MS => {
                total.session_ms += t - *prev;
                *prev = t;
            }
            _ => {
                total.sessions += 1;
                last.insert(user, (t, t));
            }
        }
    }
    totals
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
    let sessions: u64 = summary.totals.values().map(|t| t.sessions).sum();
    let session_ms: i64 = summary.totals.values().map(|t| t.session_ms).sum();
    let matched = summary.totals == reference(clicks);
    println!(
        "sessionization on the {backend} backend: {clicks} clicks over {:.1} hours of event time",
        clicks as f64 * 0.2 / 3600.0
    );
    println!("  users:                 {}", summary.totals.len());
    println!(
        "  sessions:              {sessions} ({:.1} clicks, {:.1} minutes on average)",
        clicks as f64 / sessions.max(1) as f64,
        session_ms as f64 / sessions.max(1) as f64 / 60_000.0
    );
    println!(
        "  open sessions in state: {} (expired ones removed: {})",
        summary.open, summary.expired
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
