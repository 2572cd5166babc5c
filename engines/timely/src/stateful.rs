//! A derived operator hosted on a timely stream: records go to the worker that owns their key
//! group, each worker holds a [`Bound`] restricted to its key groups, event time comes from
//! the input frontier, and every worker writes its part of each checkpoint once the frontier
//! has passed the checkpoint's time.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::mpsc;

use statewright::checkpoint::{CheckpointFile, SnapshotRef};
use statewright::checkpointer::Checkpointable;
use statewright::keygroup::{KeyGroupRange, key_group};
use statewright::prelude::*;
use statewright::timers::system_time_millis;
use statewright::{Error, Result};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::{OutputBuilder, OutputBuilderSession};
use timely::scheduling::{Activator, SyncActivator};

use crate::job::{Job, Part, Shared, Time};

/// Where a record's function and a timer callback put their output: records at the time of
/// the record (or of the timer's watermark) being processed.
#[derive(Debug)]
pub struct Emit<'a, O> {
    time: Time,
    out: &'a mut Vec<O>,
}

impl<O> Emit<'_, O> {
    /// Sends `record` downstream at the current time.
    pub fn emit(&mut self, record: O) {
        self.out.push(record);
    }

    /// The time of the record being processed, or the watermark a timer fired at.
    #[must_use]
    pub fn time(&self) -> Time {
        self.time
    }
}

type DataOut<'a, O> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<O>>>;
type PartsOut<'a> = OutputBuilderSession<'a, Time, CapacityContainerBuilder<Vec<Part>>>;

/// A checkpoint part being written on another thread.
struct Writing {
    id: u64,
    last: bool,
    captured_ms: u64,
    cap: Capability<Time>,
    done: mpsc::Receiver<Result<CheckpointFile>>,
}

/// One worker's instance of a hosted operator.
struct Instance<Op: StatefulOperator, B: AnyBackend, R, O, K, L, T> {
    bound: Bound<Op, B>,
    key: Rc<K>,
    logic: L,
    on_timer: T,
    /// Records whose time is at or after the next checkpoint's boundary, held until that
    /// checkpoint's part is captured.
    stash: BTreeMap<Time, Vec<R>>,
    next_id: u64,
    interval: Time,
    data_cap: Option<Capability<Time>>,
    parts_cap: Option<Capability<Time>>,
    writing: Vec<Writing>,
    /// The last part captured: its checkpoint number, and once written the chain a restore
    /// reads for it (its base, then itself).
    last_part: Option<(u64, Option<Vec<SnapshotRef>>)>,
    max_chain: usize,
    out: Vec<O>,
    storage: CheckpointStorage,
    writer: String,
    waker: std::sync::Arc<std::sync::Mutex<SyncActivator>>,
    activator: Activator,
    shared: Shared,
}

/// The time of what timers emit at the end of the input (after every checkpoint boundary).
pub(crate) const END: Time = Time::MAX - 1;

fn millis(t: Time) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl<Op, B, R, O, K, L, T> Instance<Op, B, R, O, K, L, T>
where
    Op: StatefulOperator + 'static,
    B: AnyBackend + 'static,
    O: 'static,
    K: Fn(&R) -> Op::Key,
    L: FnMut(Op::Keyed<'_, B>, R, &mut Emit<'_, O>) -> Result<()>,
    T: FnMut(Timer<Op::Key, Op::TimerNamespace>, Op::Keyed<'_, B>, &mut Emit<'_, O>) -> Result<()>,
{
    fn boundary(&self) -> Time {
        self.next_id.saturating_mul(self.interval)
    }

    /// Sends what the user's functions emitted at `time`.
    fn flush(&mut self, time: Time, data: &mut DataOut<'_, O>) {
        if self.out.is_empty() {
            return;
        }
        if let Some(cap) = self.data_cap.as_ref().and_then(|c| c.try_delayed(&time)) {
            data.session(&cap).give_container(&mut self.out);
        }
        self.out.clear();
    }

    fn process(&mut self, time: Time, record: R) -> Result<()> {
        let key = (self.key)(&record);
        let st = self.bound.key(&key)?;
        let mut emit = Emit {
            time,
            out: &mut self.out,
        };
        (self.logic)(st, record, &mut emit)
    }

    /// Processes the held records with times before `before`, in time order.
    fn drain_stash(&mut self, before: Time, data: &mut DataOut<'_, O>) -> Result<()> {
        while let Some(entry) = self.stash.first_entry() {
            let time = *entry.key();
            if time >= before {
                break;
            }
            let records = entry.remove();
            for record in records {
                self.process(time, record)?;
            }
            self.flush(time, data);
        }
        Ok(())
    }

    /// Advances event time to `watermark`, firing event-time timers; their output goes out
    /// at `at`.
    fn watermark(&mut self, watermark: i64, at: Time, data: &mut DataOut<'_, O>) -> Result<()> {
        if self.bound.watermark().is_some_and(|w| w >= watermark) {
            return Ok(());
        }
        let out = &mut self.out;
        let on_timer = &mut self.on_timer;
        self.bound.advance_watermark(watermark, |timer, st| {
            let mut emit = Emit { time: at, out };
            on_timer(timer, st, &mut emit)
        })?;
        self.flush(at, data);
        Ok(())
    }

    /// Fires the processing-time timers that are due, and asks to be woken for the next one.
    fn processing_time(&mut self, data: &mut DataOut<'_, O>) -> Result<()> {
        let Some(next) = self.bound.next_timer(TimeDomain::ProcessingTime) else {
            return Ok(());
        };
        let now = system_time_millis();
        if next <= now {
            let Some(at) = self.data_cap.as_ref().map(|c| *c.time()) else {
                return Ok(());
            };
            let out = &mut self.out;
            let on_timer = &mut self.on_timer;
            self.bound.advance_processing_time(now, |timer, st| {
                let mut emit = Emit { time: at, out };
                on_timer(timer, st, &mut emit)
            })?;
            self.flush(at, data);
        }
        if let Some(next) = self.bound.next_timer(TimeDomain::ProcessingTime) {
            let wait = u64::try_from(next.saturating_sub(system_time_millis())).unwrap_or(0);
            self.activator
                .activate_after(std::time::Duration::from_millis(wait.max(1)));
        }
        Ok(())
    }

    /// Captures this instance's part of checkpoint `next_id` (the synchronous step) and
    /// writes it on another thread; the part goes to the committer at `at` once written.
    fn capture(&mut self, at: Time, last: bool) -> Result<()> {
        let Some(cap) = self.parts_cap.as_ref().and_then(|c| c.try_delayed(&at)) else {
            // No part can be sent (the operator has stopped): the checkpoint is skipped.
            self.next_id += 1;
            return Ok(());
        };
        let base = self.incremental_base()?;
        let captured_ms = u64::try_from(system_time_millis()).unwrap_or(0);
        let started = std::time::Instant::now();
        let image = if base.is_empty() {
            // The backend's detached capture, as the checkpointer takes: the heap keeps the
            // captured version of what changes next, RocksDB reads a snapshot; the entries
            // are read on the writer's thread. Changes are tracked from here on when
            // incremental parts may follow.
            Checkpointable::capture_full(&mut self.bound, self.max_chain > 0)?
        } else {
            Checkpointable::capture_changes(&mut self.bound)?
        };
        let pause = started.elapsed();
        self.shared.update(|s| {
            s.parts += 1;
            s.max_pause = s.max_pause.max(pause);
            s.total_pause += pause;
        });
        let (tx, rx) = mpsc::channel();
        let storage = self.storage.clone();
        let writer = self.writer.clone();
        let id = self.next_id;
        let waker = std::sync::Arc::clone(&self.waker);
        std::thread::Builder::new()
            .name(format!("statewright-part-{id}"))
            .spawn(move || {
                let written = storage.write_part(CheckpointId(id), &writer, image, &base);
                let _ = tx.send(written);
                if let Ok(waker) = waker.lock() {
                    let _ = waker.activate();
                }
            })
            .map_err(|e| crate::io_error(self.storage.dir(), e))?;
        self.last_part = Some((id, None));
        self.writing.push(Writing {
            id,
            last,
            captured_ms,
            cap,
            done: rx,
        });
        self.next_id += 1;
        Ok(())
    }

    /// The base chain of an incremental part: the chain of the previous part, when the
    /// backend tracked the changes since it, it is written and a committed checkpoint lists
    /// it, and the chain is not at its longest; otherwise none (a full part).
    fn incremental_base(&self) -> Result<Vec<SnapshotRef>> {
        let Some((_, Some(chain))) = &self.last_part else {
            return Ok(Vec::new());
        };
        let Some(previous) = chain.last() else {
            return Ok(Vec::new());
        };
        if self.max_chain == 0
            || chain.len() > self.max_chain
            || !Checkpointable::is_tracking_changes(&self.bound)
        {
            return Ok(Vec::new());
        }
        let committed = self
            .storage
            .list()?
            .iter()
            .any(|c| c.files.iter().any(|f| f.path == previous.path));
        Ok(if committed { chain.clone() } else { Vec::new() })
    }

    /// Sends the parts written since the last activation to the committer.
    fn written(&mut self, parts: &mut PartsOut<'_>) -> Result<()> {
        let mut i = 0;
        while i < self.writing.len() {
            match self.writing[i].done.try_recv() {
                Ok(result) => {
                    let w = self.writing.remove(i);
                    let file = result?;
                    if let Some((id, chain)) = &mut self.last_part
                        && *id == w.id
                    {
                        *chain = Some(file.chain());
                    }
                    let file = serde_json::to_string(&file).map_err(|e| Error::Backend {
                        backend: "timely job",
                        message: format!("a checkpoint part's description: {e}"),
                    })?;
                    parts.session(&w.cap).give(Part::Snapshot {
                        id: w.id,
                        file,
                        captured_ms: w.captured_ms,
                        last: w.last,
                    });
                }
                Err(mpsc::TryRecvError::Empty) => i += 1,
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(Error::CheckpointNotStarted {
                        reason: "a checkpoint part's writer thread ended without a result",
                    });
                }
            }
        }
        Ok(())
    }

    /// One activation: the input read, then every checkpoint boundary the frontier passed,
    /// event time, processing time, and finished writes.
    fn activate(
        &mut self,
        frontier: Option<Time>,
        data: &mut DataOut<'_, O>,
        parts: &mut PartsOut<'_>,
    ) -> Result<()> {
        match frontier {
            Some(f) => {
                // At `END` only what the timers of an ended input emitted is still coming.
                while self.boundary() <= f && f < END {
                    let boundary = self.boundary();
                    self.drain_stash(boundary, data)?;
                    self.watermark(millis(boundary - 1), boundary - 1, data)?;
                    self.capture(boundary - 1, false)?;
                }
                let boundary = self.boundary();
                self.drain_stash(boundary, data)?;
                if f > 0 && f < END {
                    self.watermark(millis(f - 1), f - 1, data)?;
                }
                self.processing_time(data)?;
                for cap in [self.data_cap.as_mut(), self.parts_cap.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    if *cap.time() < f {
                        cap.downgrade(&f);
                    }
                }
            }
            None if self.data_cap.is_some() => {
                // The end of the input: everything held, every event-time timer (as Flink's
                // final watermark), then a final checkpoint.
                // Everything held, then every event-time timer (as Flink's final
                // watermark), then the last part. What the timers emit goes out at the end
                // of time, so that only the final checkpoint's sink files hold it: a
                // checkpoint committed before holds the timers still pending.
                self.drain_stash(Time::MAX, data)?;
                let now = std::time::Instant::now();
                self.shared
                    .update(|s| s.input_ended = Some(s.input_ended.map_or(now, |t| t.max(now))));
                let Some(at) = self.data_cap.as_ref().map(|c| *c.time()) else {
                    return Ok(());
                };
                self.watermark(i64::MAX, END, data)?;
                self.capture(at, true)?;
                self.data_cap = None;
                self.parts_cap = None;
            }
            None => {}
        }
        self.written(parts)
    }
}

impl<'scope> Job<'scope> {
    /// Hosts a derived operator on `input`: each record goes to the worker that owns its
    /// key's key group, where `logic` gets the key's view of the state, the record and where
    /// to emit output; `on_timer` gets each timer that fires with its key's view. The
    /// watermark follows the input frontier (all records before time `t` seen: watermark
    /// `t - 1`), and firing event-time timers and event-time TTL follow it; processing-time
    /// timers fire from the worker's clock. At the end of the input, every event-time timer
    /// fires and a final checkpoint is taken.
    ///
    /// `op` and `backend` are this worker's: the instance owns this worker's key groups and
    /// restores them from the job's checkpoint (any earlier number of workers, any backend).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] when the job already has an operator of this name;
    /// [`Error::Incompatible`] with more workers than the operator's `max_parallelism`; the
    /// errors of restoring.
    #[allow(clippy::too_many_arguments)]
    pub fn stateful<Op, B, R, O, K, L, T>(
        &mut self,
        input: StreamVec<'scope, Time, R>,
        op: Op,
        backend: B,
        key: K,
        logic: L,
        on_timer: T,
    ) -> Result<StreamVec<'scope, Time, O>>
    where
        Op: StatefulOperator + 'static,
        B: AnyBackend + 'static,
        R: timely::ExchangeData + Clone,
        O: Clone + 'static,
        K: Fn(&R) -> Op::Key + 'static,
        L: FnMut(Op::Keyed<'_, B>, R, &mut Emit<'_, O>) -> Result<()> + 'static,
        T: FnMut(
                Timer<Op::Key, Op::TimerNamespace>,
                Op::Keyed<'_, B>,
                &mut Emit<'_, O>,
            ) -> Result<()>
            + 'static,
    {
        let name = Op::DESCRIPTOR.name;
        let max_parallelism = Op::DESCRIPTOR.max_parallelism;
        let range = self.key_groups(max_parallelism)?;
        self.expect(name, max_parallelism)?;
        let mut bound = op.bind(backend)?.with_key_groups(range)?;
        if let Some(info) = &self.restored
            && info.files.iter().any(|f| f.operator == name)
        {
            bound.restore_from(&self.config.storage, RestorePoint::Id(info.id))?;
        }
        let key = Rc::new(key);
        let route = {
            let key = Rc::clone(&key);
            let peers = u16::try_from(self.peers()).unwrap_or(u16::MAX);
            let mut bytes = Vec::new();
            move |record: &R| {
                if peers == 1 {
                    // One worker owns every key group: no key to hash.
                    return 0;
                }
                bytes.clear();
                key(record).encode_key(&mut bytes);
                let kg = key_group(&bytes, max_parallelism);
                u64::from(KeyGroupRange::instance_of(kg, max_parallelism, peers))
            }
        };
        let shared: Shared = self.shared.clone();
        let mut builder = OperatorBuilder::new(format!("stateful {name}"), self.scope);
        let info = builder.operator_info();
        let activator = self.scope.activator_for(Rc::clone(&info.address));
        let waker = self
            .scope
            .worker()
            .sync_activator_for(info.address.to_vec());
        let mut input = builder.new_input(input, Exchange::new(route));
        let (data, stream) = builder.new_output::<Vec<O>>();
        let (parts, parts_stream) = builder.new_output::<Vec<Part>>();
        let mut data = OutputBuilder::<Time, CapacityContainerBuilder<Vec<O>>>::from(data);
        let mut parts = OutputBuilder::<Time, CapacityContainerBuilder<Vec<Part>>>::from(parts);
        let mut instance = Instance {
            bound,
            key,
            logic,
            on_timer,
            stash: BTreeMap::new(),
            next_id: self.first_id(),
            interval: self.config.interval,
            data_cap: None,
            parts_cap: None,
            writing: Vec::new(),
            last_part: None,
            max_chain: self.config.max_chain,
            out: Vec::new(),
            storage: self.config.storage.clone(),
            writer: self.writer.clone(),
            waker: std::sync::Arc::new(std::sync::Mutex::new(waker)),
            activator,
            shared: shared.clone(),
        };
        builder.build(move |mut capabilities| {
            instance.parts_cap = capabilities.pop();
            instance.data_cap = capabilities.pop();
            move |frontiers| {
                let mut data = data.activate();
                let mut parts = parts.activate();
                if shared.failed() {
                    input.for_each_stamp(|_, _| {});
                    instance.data_cap = None;
                    instance.parts_cap = None;
                    instance.writing.clear();
                    return;
                }
                let mut failure = None;
                input.for_each_stamp(|cap, batches| {
                    let Some(&time) = cap.least() else {
                        return;
                    };
                    if failure.is_some() {
                        return;
                    }
                    if time < instance.boundary() {
                        for batch in batches {
                            for record in batch.drain(..) {
                                if let Err(e) = instance.process(time, record) {
                                    failure = Some(e);
                                    return;
                                }
                            }
                        }
                        instance.flush(time, &mut data);
                    } else {
                        let held = instance.stash.entry(time).or_default();
                        for batch in batches {
                            held.append(batch);
                        }
                    }
                });
                let frontier = frontiers[0].frontier().first().copied();
                let result = match failure {
                    Some(e) => Err(e),
                    None => instance.activate(frontier, &mut data, &mut parts),
                };
                if let Err(e) = result {
                    shared.fail(e);
                    instance.data_cap = None;
                    instance.parts_cap = None;
                    instance.writing.clear();
                }
            }
        });
        self.parts.push(parts_stream);
        Ok(stream)
    }
}
