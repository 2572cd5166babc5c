//! Page views on timely-dataflow, as one or more processes on this machine, with
//! checkpoints in a directory (or S3), restart from the latest checkpoint, rescaling, and
//! per-window counts written exactly once.
//!
//! Two stateful operators in one dataflow: `user-views` (keyed by user: views and views per
//! page) sends each view on to `page-views` (keyed by page: a total, and a count per
//! tumbling window of 1,000 units of time whose event-time timer emits it when the
//! watermark passes the window's end). The windows' counts go to an exactly-once sink: one
//! file per committed checkpoint.
//!
//! ```text
//! # one process, two workers
//! cargo run -p statewright-timely --example page_views -- -w 2 --dir /tmp/page-views
//! # three processes on loopback (ports 2101..2103), one terminal each
//! cargo run -p statewright-timely --example page_views -- -n 3 -p 0 --dir /tmp/page-views
//! cargo run -p statewright-timely --example page_views -- -n 3 -p 1 --dir /tmp/page-views
//! cargo run -p statewright-timely --example page_views -- -n 3 -p 2 --dir /tmp/page-views
//! # checkpoints in S3 (feature `s3`; AWS_* variables as for any S3 client)
//! cargo run -p statewright-timely --features s3 --example page_views -- \
//!     --checkpoints s3://bucket/page-views --dir /tmp/page-views
//! ```
//!
//! Kill any process at any time, then start the job again with any number of processes and
//! workers: it resumes from the latest checkpoint. When it ends, `--verify` compares the
//! final state and the sink's files with a plain single-threaded computation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use statewright::prelude::*;
use statewright::window::{TimeWindow, Windows};
use statewright_timely::{Emit, GeneratedSource, Job, JobConfig, Time, cluster};

/// Views per user, and per page of each user.
#[derive(StatefulOperator, Default)]
#[operator(name = "user-views", key = u64)]
pub struct UserViews {
    /// The user's views.
    views: ValueState<u64>,
    /// The user's views per page.
    pages: MapState<u32, u64>,
}

/// Views per page: in all, and per window.
#[derive(StatefulOperator, Default)]
#[operator(name = "page-views", key = u32)]
pub struct PageViews {
    /// The page's views.
    total: ValueState<u64>,
    /// The page's views in each window.
    #[state(namespace = TimeWindow, reduce = sum)]
    per_window: ReducingState<u64>,
    /// Each window's timer, at its end.
    timers: TimerService<TimeWindow>,
}

/// Partitions of the source, whatever the number of workers.
pub const PARTITIONS: u32 = 6;
/// Users and pages.
pub const USERS: u64 = 2_000;
/// Pages.
pub const PAGES: u32 = 50;
/// Records per unit of time, per partition.
pub const PER_TIME: u64 = 2;
/// The windows' size.
pub const WINDOW: Time = 1_000;

/// The `i`-th view of partition `p`: its time, user and page.
pub fn view(p: u32, i: u64) -> (Time, (u64, u32)) {
    let mut z = (i * u64::from(PARTITIONS) + u64::from(p)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (
        i / PER_TIME,
        (z % USERS, ((z >> 32) % u64::from(PAGES)) as u32),
    )
}

/// The tumbling windows of the page counts.
pub fn windows() -> Windows {
    Windows::tumbling(Duration::from_millis(WINDOW))
}

/// How a job runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Processes in all.
    pub processes: usize,
    /// This process.
    pub process: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// The first process's port (process `i` listens on `port + i` on 127.0.0.1).
    pub port: u16,
    /// Views per partition.
    pub per_partition: u64,
    /// Where checkpoints go: a directory, or a URL (`s3://bucket/prefix`, `file:///path`).
    pub checkpoints: String,
    /// Where the sink writes its files.
    pub output: PathBuf,
    /// Time between checkpoints.
    pub interval: Time,
    /// Microseconds to sleep after every 100 views of a partition (to watch a job run).
    pub pace_us: u64,
}

fn open_storage(location: &str) -> statewright::Result<CheckpointStorage> {
    if location.contains("://") {
        statewright::store::open_url(location, std::iter::empty::<(&str, String)>())
    } else {
        CheckpointStorage::open(location)
    }
}

/// Runs this process's workers of the job to its end; returns the last checkpoint worker 0
/// committed (on process 0).
///
/// # Errors
///
/// The first error of a worker: the job stops, to be started again.
pub fn run(options: &Options) -> Result<Option<CheckpointId>, Box<dyn std::error::Error>> {
    let storage = open_storage(&options.checkpoints)?;
    // Incremental parts (on the heap): a checkpoint holds the changes since the last one.
    let config = JobConfig::new(storage)
        .checkpoint_every(options.interval)
        .max_chain(8);
    let timely_config = if options.processes == 1 {
        timely::Config::process(options.workers)
    } else {
        let hosts = vec!["127.0.0.1"; options.processes];
        cluster(
            options.workers,
            options.processes,
            options.process,
            &hosts,
            options.port,
        )?
    };
    let options = options.clone();
    let guards = timely::execute(timely_config, move |worker| {
        let pace = options.pace_us;
        let handle = worker.dataflow::<Time, _, _>(|scope| {
            let mut job = Job::new(scope, &config)?;
            // ANCHOR: job
            let views = job.source(
                "views",
                GeneratedSource::new(PARTITIONS, options.per_partition, move |p, i| {
                    if pace > 0 && i % 100 == 0 {
                        std::thread::sleep(Duration::from_micros(pace));
                    }
                    view(p, i)
                }),
            )?;
            // Keyed by user; each view goes on to its page.
            let pages = job.stateful(
                views,
                UserViews::default(),
                HeapBackend::new(),
                |(user, _page): &(u64, u32)| *user,
                |mut st, (_user, page), out: &mut Emit<'_, u32>| {
                    st.views().update(|v| v.unwrap_or(0) + 1)?;
                    st.pages().update(&page, |v| v.unwrap_or(0) + 1)?;
                    out.emit(page);
                    Ok(())
                },
                |_timer, _st, _out| Ok(()),
            )?;
            // Keyed by page; a window's count goes out when the watermark passes its end.
            let windows = windows();
            let fired = job.stateful(
                pages,
                PageViews::default(),
                HeapBackend::new(),
                |page: &u32| *page,
                move |mut st, _page, out: &mut Emit<'_, (u32, i64, u64)>| {
                    st.total().update(|v| v.unwrap_or(0) + 1)?;
                    let time = i64::try_from(out.time()).unwrap_or(i64::MAX);
                    for w in windows.assign(time) {
                        st.per_window(&w).add(&1)?;
                        windows.register(&mut st.timers(), &w)?;
                    }
                    Ok(())
                },
                move |timer, mut st, out| {
                    let window = timer.namespace;
                    let action = windows.on_timer(&window, timer.timestamp);
                    if action.fire {
                        let count = st.per_window(&window).get_owned()?.unwrap_or(0);
                        out.emit((timer.key, window.start, count));
                    }
                    if action.cleanup {
                        st.per_window(&window).clear()?;
                    }
                    Ok(())
                },
            )?;
            job.exactly_once_sink(fired, &options.output, |(page, start, count)| {
                format!("{page},{start},{count}")
            })?;
            // ANCHOR_END: job
            Ok::<_, statewright::Error>(job.finish(|_| {}))
        })?;
        handle.run(worker)
    })?;
    let mut last = None;
    for result in guards.join() {
        let committed = result.map_err(|e| format!("a worker panicked: {e}"))??;
        last = last.max(committed);
    }
    Ok(last)
}

/// The job's results computed in one thread, without timely: every user's views and views
/// per page, every page's total, and every window's count (as the sink's lines).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Results {
    /// Views and views per page of each user.
    pub users: BTreeMap<u64, (u64, BTreeMap<u32, u64>)>,
    /// Views of each page.
    pub pages: BTreeMap<u32, u64>,
    /// The sink's lines, sorted.
    pub lines: Vec<String>,
}

/// The reference: the same views applied in one loop.
pub fn reference(per_partition: u64) -> Results {
    let mut r = Results::default();
    let mut windows: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    for p in 0..PARTITIONS {
        for i in 0..per_partition {
            let (time, (user, page)) = view(p, i);
            let u = r.users.entry(user).or_default();
            u.0 += 1;
            *u.1.entry(page).or_default() += 1;
            *r.pages.entry(page).or_default() += 1;
            let start = (time / WINDOW * WINDOW) as i64;
            *windows.entry((page, start)).or_default() += 1;
        }
    }
    r.lines = windows
        .into_iter()
        .map(|((page, start), count)| format!("{page},{start},{count}"))
        .collect();
    r.lines.sort();
    r
}

/// What the job left: the state of its latest checkpoint (restored into one instance of each
/// operator) and the lines of the sink's committed files.
///
/// # Errors
///
/// A checkpoint or file that cannot be read.
pub fn results(options: &Options) -> Result<Results, Box<dyn std::error::Error>> {
    results_in(&open_storage(&options.checkpoints)?, &options.output)
}

/// [`results`] from a storage already open.
///
/// # Errors
///
/// A checkpoint or file that cannot be read.
pub fn results_in(
    storage: &CheckpointStorage,
    output: &std::path::Path,
) -> Result<Results, Box<dyn std::error::Error>> {
    let mut r = Results::default();
    let mut users =
        UserViews::default().restore(HeapBackend::new(), storage, RestorePoint::Latest)?;
    for user in 0..USERS {
        let mut st = users.key(&user)?;
        if let Some(views) = st.views().get_owned()? {
            let pages = st
                .pages()
                .entries()?
                .map(|e| e.map(|(p, n)| (p, n.to_native())))
                .collect::<statewright::Result<BTreeMap<_, _>>>()?;
            r.users.insert(user, (views, pages));
        }
    }
    let mut pages =
        PageViews::default().restore(HeapBackend::new(), storage, RestorePoint::Latest)?;
    for page in 0..PAGES {
        if let Some(total) = pages.key(&page)?.total().get_owned()? {
            r.pages.insert(page, total);
        }
    }
    for entry in std::fs::read_dir(output)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "txt") {
            for line in std::fs::read_to_string(&path)?.lines() {
                r.lines.push(line.to_owned());
            }
        }
    }
    r.lines.sort();
    Ok(r)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut options = Options {
        processes: 1,
        process: 0,
        workers: 1,
        port: 2101,
        per_partition: 20_000,
        checkpoints: String::new(),
        output: PathBuf::new(),
        interval: 500,
        pace_us: 0,
    };
    let mut dir = std::env::temp_dir().join("statewright-page-views");
    let mut checkpoints = None;
    let mut verify = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "-n" => options.processes = value()?.parse()?,
            "-p" => options.process = value()?.parse()?,
            "-w" => options.workers = value()?.parse()?,
            "--port" => options.port = value()?.parse()?,
            "--views" => options.per_partition = value()?.parse::<u64>()? / u64::from(PARTITIONS),
            "--dir" => dir = PathBuf::from(value()?),
            "--checkpoints" => checkpoints = Some(value()?),
            "--interval" => options.interval = value()?.parse()?,
            "--pace-us" => options.pace_us = value()?.parse()?,
            "--verify" => verify = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    options.checkpoints =
        checkpoints.unwrap_or_else(|| dir.join("checkpoints").display().to_string());
    options.output = dir.join("output");
    let last = run(&options)?;
    if options.process == 0 {
        match last {
            Some(id) => println!("the job ended; its last checkpoint is {id}"),
            None => println!("the job ended"),
        }
        if verify {
            let expected = reference(options.per_partition);
            let actual = results(&options)?;
            if actual != expected {
                return Err("the job's state or output differs from the reference".into());
            }
            println!(
                "verified: {} users, {} pages and {} window counts equal the reference",
                expected.users.len(),
                expected.pages.len(),
                expected.lines.len()
            );
        }
    }
    Ok(())
}
