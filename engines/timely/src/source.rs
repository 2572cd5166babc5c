//! Replayable sources: partitions read from a position, whose positions go into every
//! checkpoint, so that a restored job reads each record once more exactly when the restored
//! state had not seen it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use statewright::{Error, Result};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use crate::job::{Job, Part, Time};

/// A source whose records can be read again from a position: the input of a job whose
/// checkpoints give exactly-once state.
///
/// A source has a fixed number of partitions; partition `p` is read by worker
/// `p % workers`. Within a partition, records come in an order that does not change between
/// reads, with times that never decrease; the position after a record is a number from which
/// [`open`](Self::open) reads the records after it.
pub trait Source: 'static {
    /// A record.
    type Item: timely::ExchangeData + Clone;
    /// How many partitions the source has.
    fn partitions(&self) -> u32;
    /// Opens `partition` to read the records after `position` (0: from its beginning).
    ///
    /// # Errors
    ///
    /// When the partition cannot be opened there.
    fn open(&self, partition: u32, position: u64) -> Result<Box<dyn Partition<Self::Item>>>;
}

/// One open partition of a [`Source`].
pub trait Partition<T> {
    /// The next record and its time, or `None` at the end of the partition.
    ///
    /// # Errors
    ///
    /// When the record cannot be read.
    fn next(&mut self) -> Result<Option<(Time, T)>>;
    /// The position after the records returned so far.
    fn position(&self) -> u64;
}

/// A source computed from each record's index: partition `p` holds `per_partition` records,
/// the `i`-th of which is `record(p, i)`, a time and an item. Its position is the index.
pub struct GeneratedSource<T, F> {
    partitions: u32,
    per_partition: u64,
    record: std::rc::Rc<F>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> std::fmt::Debug for GeneratedSource<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedSource")
            .field("partitions", &self.partitions)
            .field("per_partition", &self.per_partition)
            .finish_non_exhaustive()
    }
}

impl<T, F> GeneratedSource<T, F>
where
    F: Fn(u32, u64) -> (Time, T) + 'static,
{
    /// `partitions` partitions of `per_partition` records each; `record(p, i)` must give the
    /// same record every time, with times that do not decrease in `i`.
    pub fn new(partitions: u32, per_partition: u64, record: F) -> Self {
        Self {
            partitions,
            per_partition,
            record: std::rc::Rc::new(record),
            _item: std::marker::PhantomData,
        }
    }
}

struct Generated<T, F> {
    partition: u32,
    next: u64,
    end: u64,
    record: std::rc::Rc<F>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T, F: Fn(u32, u64) -> (Time, T)> Partition<T> for Generated<T, F> {
    fn next(&mut self) -> Result<Option<(Time, T)>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let out = (self.record)(self.partition, self.next);
        self.next += 1;
        Ok(Some(out))
    }

    fn position(&self) -> u64 {
        self.next
    }
}

impl<T, F> Source for GeneratedSource<T, F>
where
    T: timely::ExchangeData + Clone,
    F: Fn(u32, u64) -> (Time, T) + 'static,
{
    type Item = T;

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn open(&self, partition: u32, position: u64) -> Result<Box<dyn Partition<T>>> {
        Ok(Box::new(Generated {
            partition,
            next: position.min(self.per_partition),
            end: self.per_partition,
            record: std::rc::Rc::clone(&self.record),
            _item: std::marker::PhantomData,
        }))
    }
}

/// A source of text files, one partition per file, one record per line: `parse` turns a
/// line into its time and item (times must not decrease within a file). The position is the
/// byte offset of the next line, so a restored job seeks there.
pub struct FileSource<T, F> {
    paths: Vec<PathBuf>,
    parse: std::rc::Rc<F>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> std::fmt::Debug for FileSource<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<T, F> FileSource<T, F>
where
    F: Fn(&str) -> std::result::Result<(Time, T), String> + 'static,
{
    /// One partition per file of `paths`, in that order.
    pub fn new(paths: Vec<PathBuf>, parse: F) -> Self {
        Self {
            paths,
            parse: std::rc::Rc::new(parse),
            _item: std::marker::PhantomData,
        }
    }
}

struct Lines<T, F> {
    path: PathBuf,
    reader: BufReader<File>,
    offset: u64,
    line: String,
    parse: std::rc::Rc<F>,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T, F> Partition<T> for Lines<T, F>
where
    F: Fn(&str) -> std::result::Result<(Time, T), String>,
{
    fn next(&mut self) -> Result<Option<(Time, T)>> {
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|e| crate::io_error(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            let at = self.offset;
            self.offset += n as u64;
            let text = self.line.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                continue;
            }
            return (self.parse)(text).map(Some).map_err(|reason| {
                crate::io_error(
                    &self.path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the line at byte {at}: {reason}"),
                    ),
                )
            });
        }
    }

    fn position(&self) -> u64 {
        self.offset
    }
}

impl<T, F> Source for FileSource<T, F>
where
    T: timely::ExchangeData + Clone,
    F: Fn(&str) -> std::result::Result<(Time, T), String> + 'static,
{
    type Item = T;

    fn partitions(&self) -> u32 {
        u32::try_from(self.paths.len()).unwrap_or(u32::MAX)
    }

    fn open(&self, partition: u32, position: u64) -> Result<Box<dyn Partition<T>>> {
        let path =
            self.paths
                .get(partition as usize)
                .cloned()
                .ok_or_else(|| Error::InvalidName {
                    what: "source partition",
                    name: partition.to_string(),
                    reason: "is not one of the source's files",
                })?;
        let mut file = File::open(&path).map_err(|e| crate::io_error(&path, e))?;
        file.seek(SeekFrom::Start(position))
            .map_err(|e| crate::io_error(&path, e))?;
        Ok(Box::new(Lines {
            path,
            reader: BufReader::with_capacity(1 << 16, file),
            offset: position,
            line: String::new(),
            parse: std::rc::Rc::clone(&self.parse),
            _item: std::marker::PhantomData,
        }))
    }
}

/// One partition being read, with the record it has read but not yet sent.
struct Cursor<T> {
    partition: u32,
    reader: Box<dyn Partition<T>>,
    /// The next record, read ahead to know its time.
    peeked: Option<(Time, T)>,
    /// The position before `peeked`.
    before: u64,
    /// The time of the last record sent.
    last: Option<Time>,
}

/// Records per activation of a source operator, over all its partitions.
const BATCH: usize = 4_096;
/// How long one activation of a source operator reads at most.
const YIELD_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

impl<'scope> Job<'scope> {
    /// Adds a source to the job: each worker reads the partitions `p` with
    /// `p % workers == worker`, from the positions of the restored checkpoint (the beginning
    /// without one), and every checkpoint records where each partition was at its time.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name that is not valid or already used in this job.
    pub fn source<S: Source>(
        &mut self,
        name: &str,
        source: S,
    ) -> Result<StreamVec<'scope, Time, S::Item>> {
        statewright::checkpoint::validate_name("source", name)?;
        if self.sources.iter().any(|s| s == name) {
            return Err(Error::InvalidName {
                what: "source",
                name: name.to_owned(),
                reason: "is already a source of this job",
            });
        }
        self.sources.push(name.to_owned());
        let name = name.to_owned();
        let peers = self.peers() as u64;
        let worker = self.worker() as u64;
        let interval = self.config.interval;
        let shared = self.shared.clone();
        let starts: BTreeMap<u32, u64> = (0..source.partitions())
            .filter(|p| u64::from(*p) % peers == worker)
            .map(|p| {
                let at = self.positions.get(&(name.clone(), p)).copied().unwrap_or(0);
                (p, at)
            })
            .collect();

        let mut builder = OperatorBuilder::new(format!("source {name}"), self.scope);
        let info = builder.operator_info();
        let activator = self.scope.activator_for(info.address);
        let (data, stream) = builder.new_output::<Vec<S::Item>>();
        let (parts, parts_stream) = builder.new_output::<Vec<Part>>();
        let mut data = OutputBuilder::<Time, CapacityContainerBuilder<Vec<S::Item>>>::from(data);
        let mut parts = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Part>>>::from(parts);
        builder.build(move |mut capabilities| {
            let mut parts_cap = capabilities.pop();
            let mut data_cap = capabilities.pop();
            let mut cursors: Option<Vec<Cursor<S::Item>>> = None;
            let mut batch: Vec<S::Item> = Vec::new();
            // Records between two looks at the clock: fewer for a slow source (one whose
            // records take long to read), so that it yields in time.
            let mut stride: usize = 64;
            move |_frontiers| {
                if shared.failed() {
                    data_cap = None;
                    parts_cap = None;
                    return;
                }
                let (Some(dcap), Some(pcap)) = (data_cap.as_mut(), parts_cap.as_mut()) else {
                    return;
                };
                if cursors.is_none() {
                    let opened = starts
                        .iter()
                        .map(|(&p, &at)| {
                            let mut reader = source.open(p, at)?;
                            let before = reader.position();
                            let peeked = reader.next()?;
                            Ok(Cursor {
                                partition: p,
                                reader,
                                peeked,
                                before,
                                last: None,
                            })
                        })
                        .collect::<Result<Vec<_>>>();
                    match opened {
                        Ok(c) => cursors = Some(c),
                        Err(e) => {
                            shared.fail(e);
                            data_cap = None;
                            parts_cap = None;
                            return;
                        }
                    }
                }
                let Some(cursors) = cursors.as_mut() else {
                    return;
                };
                let mut data = data.activate();
                let mut parts = parts.activate();
                let per = (BATCH / cursors.len().max(1)).max(1);
                // A slow partition (one that waits for its records) yields the worker after
                // a while, so that the job's other operators and checkpoints go on.
                let deadline = std::time::Instant::now() + YIELD_AFTER;
                let mut late = false;
                let mut read = 0usize;
                let result = (|| -> Result<()> {
                    for c in cursors.iter_mut() {
                        let mut sent = 0;
                        while sent < per {
                            if sent % stride == stride - 1 && std::time::Instant::now() >= deadline
                            {
                                late = true;
                                // The run of records of one time read so far goes out.
                                if !batch.is_empty()
                                    && let Some(cap) = c.last.and_then(|t| dcap.try_delayed(&t))
                                {
                                    data.session(&cap).give_container(&mut batch);
                                }
                                batch.clear();
                                break;
                            }
                            let Some((t, item)) = c.peeked.take() else {
                                break;
                            };
                            let floor = c.last.unwrap_or(*dcap.time()).max(*dcap.time());
                            if t >= crate::stateful::END {
                                return Err(Error::InvalidName {
                                    what: "source record time",
                                    name: format!("{t} (partition {})", c.partition),
                                    reason: "the two largest times are reserved for the end of \
                                             the input",
                                });
                            }
                            if t < floor {
                                return Err(Error::InvalidName {
                                    what: "source record time",
                                    name: format!("{t} (partition {}, after {floor})", c.partition),
                                    reason: "times must not decrease within a partition",
                                });
                            }
                            batch.push(item);
                            sent += 1;
                            read += 1;
                            c.last = Some(t);
                            c.before = c.reader.position();
                            c.peeked = c.reader.next()?;
                            // Where the partition is at each checkpoint boundary between this
                            // record and the next: the position before the next record,
                            // sent at the first such boundary (the committer carries it
                            // forward), or at this record's time when the partition ends.
                            let report = match &c.peeked {
                                Some((next, _)) => {
                                    let boundary = (t / interval + 1).saturating_mul(interval);
                                    (boundary <= *next).then(|| boundary - 1)
                                }
                                None => Some(t),
                            };
                            if let Some(at) = report
                                && let Some(cap) = pcap.try_delayed(&at)
                            {
                                parts.session(&cap).give(Part::Position {
                                    source: name.clone(),
                                    partition: c.partition,
                                    position: c.before,
                                });
                            }
                            // A run of records with one time goes out in one session.
                            let same = c.peeked.as_ref().is_some_and(|(n, _)| *n == t);
                            if !same || sent >= per {
                                if let Some(cap) = dcap.try_delayed(&t) {
                                    data.session(&cap).give_container(&mut batch);
                                }
                                batch.clear();
                            }
                        }
                    }
                    Ok(())
                })();
                // Records left by a failed read are dropped with the job.
                batch.clear();
                // The clock looked at more often when the deadline passed within the first
                // stride, less often again when the activation ended well before it.
                if late && read <= 2 * stride {
                    stride = (stride / 4).max(1);
                } else if !late {
                    stride = (stride * 2).min(64);
                }
                if let Err(e) = result {
                    shared.fail(e);
                    drop(data);
                    drop(parts);
                    data_cap = None;
                    parts_cap = None;
                    return;
                }
                let next = cursors
                    .iter()
                    .filter_map(|c| c.peeked.as_ref().map(|(t, _)| *t))
                    .min();
                drop(data);
                drop(parts);
                match next {
                    Some(t) => {
                        if let Some(cap) = data_cap.as_mut() {
                            cap.downgrade(&t);
                        }
                        if let Some(cap) = parts_cap.as_mut() {
                            cap.downgrade(&t);
                        }
                        activator.activate();
                    }
                    None => {
                        data_cap = None;
                        parts_cap = None;
                    }
                }
            }
        });
        self.parts.push(parts_stream);
        Ok(stream)
    }
}
