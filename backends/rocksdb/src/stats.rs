//! Statistics of the RocksDB backend, and back pressure derived from them.

use std::time::Instant;

use rocksdb::properties;
use rocksdb::statistics::Histogram;
use statewright_core::Result;

use crate::{RocksDbBackend, RowCacheStats, db_error};

/// Latency percentiles in microseconds, from RocksDB's histograms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Number of samples.
    pub count: u64,
}

/// Estimated keys of one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKeys {
    /// The state's column family (`<operator>.<state>`).
    pub column_family: String,
    /// RocksDB's estimate of its entries.
    pub estimated_keys: u64,
    /// Entries (list elements for list states) that compactions dropped because their TTL
    /// expired.
    pub ttl_expired_in_compaction: u64,
}

/// A picture of the backend's health; see [`RocksDbBackend::stats`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RocksDbStats {
    /// Bytes in memtables, all states.
    pub memtable_bytes: u64,
    /// Bytes held by the shared block cache.
    pub block_cache_bytes: u64,
    /// Capacity of the shared block cache.
    pub block_cache_capacity: u64,
    /// Bytes used by table readers (indexes and filters not in the cache).
    pub table_readers_bytes: u64,
    /// The row cache in front of RocksDB.
    pub row_cache: RowCacheStats,
    /// `memtable_bytes + block_cache_bytes + table_readers_bytes + row_cache.bytes`.
    pub memory_bytes: u64,
    /// Bytes RocksDB estimates compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
    /// Whether RocksDB has stopped writes (too many memtables or L0 files).
    pub write_stopped: bool,
    /// Estimated keys per state.
    pub states: Vec<StateKeys>,
    /// Read latency (`None` unless [`statistics`](crate::RocksDbOptions::statistics) is on).
    pub read_latency: Option<Latency>,
    /// Write latency (`None` unless statistics are on).
    pub write_latency: Option<Latency>,
    /// Backend reads per second since the previous `stats()` call.
    pub reads_per_sec: f64,
    /// Backend writes per second since the previous `stats()` call.
    pub writes_per_sec: f64,
    /// Back pressure in `[0, 1]`: the largest of memory pressure (memtables against their
    /// budget), compaction pressure (pending bytes against RocksDB's soft limit) and latency
    /// pressure (p99 write latency against 10 ms); 1 when writes are stopped.
    pub back_pressure: f64,
}

/// RocksDB's default `soft_pending_compaction_bytes_limit`, where it starts slowing writes.
const SOFT_PENDING_COMPACTION_BYTES: f64 = 64.0 * 1024.0 * 1024.0 * 1024.0;
/// The p99 write latency treated as full pressure.
const SLOW_WRITE_US: f64 = 10_000.0;

impl RocksDbBackend {
    /// Collects statistics. Rates cover the time since the previous call.
    ///
    /// # Errors
    ///
    /// When RocksDB cannot report a property.
    pub fn stats(&self) -> Result<RocksDbStats> {
        let usage = rocksdb::perf::get_memory_usage_stats(Some(&[&self.db]), Some(&[&self.cache]))
            .map_err(|e| db_error(&e))?;
        let mut states = Vec::with_capacity(self.columns.len());
        let mut pending = 0u64;
        let mut write_stopped = false;
        for c in &self.columns {
            let cf = self.cf_by_name(&c.name)?;
            let int = |p| {
                self.db
                    .property_int_value_cf(cf, p)
                    .map(Option::unwrap_or_default)
                    .map_err(|e| db_error(&e))
            };
            states.push(StateKeys {
                column_family: c.name.clone(),
                estimated_keys: int(properties::ESTIMATE_NUM_KEYS)?,
                ttl_expired_in_compaction: self.ttl_expired_in_compaction(&c.name),
            });
            pending += int(properties::ESTIMATE_PENDING_COMPACTION_BYTES)?;
            write_stopped |= int(properties::IS_WRITE_STOPPED)? != 0;
        }
        let latency = |h| {
            let d = self.db_opts.get_histogram_data(h);
            Latency {
                p50_us: d.median(),
                p99_us: d.p99(),
                count: d.count(),
            }
        };
        let (read_latency, write_latency) = if self.options.statistics {
            (
                Some(latency(Histogram::DbGet)),
                Some(latency(Histogram::DbWrite)),
            )
        } else {
            (None, None)
        };

        let now = Instant::now();
        let (since, reads0, writes0) = self.rate_window.get();
        let (reads, writes) = (self.reads.get(), self.writes.get());
        self.rate_window.set((now, reads, writes));
        let secs = now.duration_since(since).as_secs_f64().max(1e-9);

        let budget = (self.options.write_buffer_size as f64)
            * f64::from(self.options.max_write_buffer_number.max(1))
            * (self.columns.len().max(1) as f64);
        let memory_pressure = usage.mem_table_total as f64 / budget;
        let compaction_pressure = pending as f64 / SOFT_PENDING_COMPACTION_BYTES;
        let latency_pressure = write_latency.map_or(0.0, |l| l.p99_us / SLOW_WRITE_US);
        let back_pressure = if write_stopped {
            1.0
        } else {
            memory_pressure
                .max(compaction_pressure)
                .max(latency_pressure)
                .clamp(0.0, 1.0)
        };

        let row_cache = self.row_cache_stats();
        Ok(RocksDbStats {
            memtable_bytes: usage.mem_table_total,
            block_cache_bytes: usage.cache_total,
            block_cache_capacity: self.cache.get_usage().max(self.options.block_cache_size) as u64,
            table_readers_bytes: usage.mem_table_readers_total,
            row_cache,
            memory_bytes: usage.mem_table_total
                + usage.cache_total
                + usage.mem_table_readers_total
                + row_cache.bytes,
            pending_compaction_bytes: pending,
            write_stopped,
            states,
            read_latency,
            write_latency,
            reads_per_sec: (reads - reads0) as f64 / secs,
            writes_per_sec: (writes - writes0) as f64 / secs,
            back_pressure,
        })
    }

    /// Collects [`stats`](Self::stats) and publishes them through the `metrics` facade as
    /// gauges named `statewright_rocksdb_*` (label `path`), for whatever recorder the
    /// application installed.
    ///
    /// # Errors
    ///
    /// As [`stats`](Self::stats).
    pub fn publish_metrics(&self) -> Result<RocksDbStats> {
        let s = self.stats()?;
        let path = self.path.display().to_string();
        let g = |name: &'static str, v: f64| metrics::gauge!(name, "path" => path.clone()).set(v);
        g("statewright_rocksdb_memory_bytes", s.memory_bytes as f64);
        g(
            "statewright_rocksdb_memtable_bytes",
            s.memtable_bytes as f64,
        );
        g(
            "statewright_rocksdb_block_cache_bytes",
            s.block_cache_bytes as f64,
        );
        g(
            "statewright_rocksdb_pending_compaction_bytes",
            s.pending_compaction_bytes as f64,
        );
        g(
            "statewright_rocksdb_row_cache_bytes",
            s.row_cache.bytes as f64,
        );
        g(
            "statewright_rocksdb_row_cache_dirty_rows",
            s.row_cache.dirty_rows as f64,
        );
        g(
            "statewright_rocksdb_row_cache_dirty_bytes",
            s.row_cache.dirty_bytes as f64,
        );
        for (name, v) in [
            ("statewright_rocksdb_row_cache_hits", s.row_cache.hits),
            ("statewright_rocksdb_row_cache_misses", s.row_cache.misses),
            (
                "statewright_rocksdb_row_cache_evictions",
                s.row_cache.evictions,
            ),
            (
                "statewright_rocksdb_row_cache_written_back",
                s.row_cache.written_back,
            ),
        ] {
            metrics::counter!(name, "path" => path.clone()).absolute(v);
        }
        g("statewright_rocksdb_reads_per_second", s.reads_per_sec);
        g("statewright_rocksdb_writes_per_second", s.writes_per_sec);
        g("statewright_rocksdb_back_pressure", s.back_pressure);
        if let Some(l) = s.read_latency {
            g("statewright_rocksdb_read_latency_p99_us", l.p99_us);
        }
        if let Some(l) = s.write_latency {
            g("statewright_rocksdb_write_latency_p99_us", l.p99_us);
        }
        for st in &s.states {
            metrics::gauge!("statewright_rocksdb_estimated_keys", "path" => path.clone(), "state" => st.column_family.clone())
                .set(st.estimated_keys as f64);
            metrics::counter!("statewright_rocksdb_ttl_expired_in_compaction", "path" => path.clone(), "state" => st.column_family.clone())
                .absolute(st.ttl_expired_in_compaction);
        }
        Ok(s)
    }
}
