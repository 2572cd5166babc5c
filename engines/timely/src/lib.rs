//! # statewright-timely
//!
//! statewright operators on [timely-dataflow](https://docs.rs/timely): a derived operator
//! hosted on a timely stream, with its state partitioned by key group over the workers of
//! every process, aligned checkpoints driven by the frontier, replayable sources whose
//! positions go into the same checkpoint, restart from the latest checkpoint, and rescaling
//! to any number of processes and workers.
//!
//! ```no_run
//! use statewright::prelude::*;
//! use statewright_timely::{GeneratedSource, Job, JobConfig};
//!
//! #[derive(StatefulOperator, Default)]
//! #[operator(name = "counts", key = u64)]
//! struct Counts {
//!     count: ValueState<u64>,
//! }
//!
//! let config = JobConfig::new(CheckpointStorage::open("/tmp/checkpoints")?).checkpoint_every(100);
//! let guards = timely::execute(timely::Config::process(2), move |worker| {
//!     let handle = worker.dataflow::<u64, _, _>(|scope| {
//!         let mut job = Job::new(scope, &config)?;
//!         // 4 partitions of 1,000 records: (key, 1) at time i / 10.
//!         let records = job.source("numbers", GeneratedSource::new(4, 1_000, |p, i| {
//!             (i / 10, (u64::from(p) * 1_000 + i) % 97)
//!         }))?;
//!         job.stateful(
//!             records,
//!             Counts::default(),
//!             HeapBackend::new(),
//!             |key: &u64| *key,
//!             |mut st, _key, out| {
//!                 let n = st.count().update(|c| c.unwrap_or(0) + 1)?;
//!                 out.emit(n);
//!                 Ok(())
//!             },
//!             |_timer, _st, _out| Ok(()),
//!         )?;
//!         Ok::<_, statewright::Error>(job.finish(|committed| println!("checkpoint {}", committed.id)))
//!     })?;
//!     handle.run(worker)
//! })?;
//! for result in guards.join() {
//!     result??;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The guide's chapter "Running on timely-dataflow" explains deployment, checkpoints,
//! recovery, rescaling and the guarantees of each source and sink.

mod cluster;
mod commit;
mod job;
mod source;
mod stateful;

pub use cluster::cluster;
pub use job::{Job, JobConfig, JobHandle, JobStats, StatsHandle, Time};
pub use source::{FileSource, GeneratedSource, Partition, Source};
pub use stateful::Emit;
/// The timely-dataflow this crate is built on (a pinned version): use it, not another.
pub use timely;

/// An I/O error on `path`.
pub(crate) fn io_error(
    path: impl Into<std::path::PathBuf>,
    source: std::io::Error,
) -> statewright::Error {
    statewright::Error::Io {
        path: path.into(),
        source,
    }
}
