//! RocksDB options that statewright applies, with presets and a builder.

use rocksdb::{BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType};

/// Block compression of one LSM level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks stored as they are.
    None,
    /// LZ4.
    Lz4,
}

impl Compression {
    fn to_rocksdb(self) -> DBCompressionType {
        match self {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
        }
    }
}

/// Tuning of the RocksDB backend. Every field is applied to the database and each state's
/// column family; [`RocksDbBackend::effective_options`](crate::RocksDbBackend::effective_options)
/// reads them back from RocksDB's own OPTIONS file.
///
/// # Examples
///
/// ```
/// use statewright_rocksdb::{Compression, RocksDbOptions};
///
/// let options = RocksDbOptions::read_heavy()
///     .block_cache_size(512 << 20)
///     .bloom_filter_bits_per_key(Some(12.0))
///     .compression_per_level(vec![Compression::None, Compression::Lz4]);
/// assert_eq!(options.block_cache_size, 512 << 20);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RocksDbOptions {
    /// Size of one memtable per column family (bytes).
    pub write_buffer_size: usize,
    /// Memtables per column family, active and immutable.
    pub max_write_buffer_number: i32,
    /// Background flush and compaction threads.
    pub max_background_jobs: i32,
    /// Capacity of the LRU block cache shared by all column families (bytes).
    pub block_cache_size: usize,
    /// Uncompressed size of a data block (bytes).
    pub block_size: usize,
    /// Bloom filter bits per key (`None`: no filter).
    pub bloom_filter_bits_per_key: Option<f64>,
    /// Compression of each level, L0 first; the last entry applies to deeper levels.
    pub compression_per_level: Vec<Compression>,
    /// Whether RocksDB collects statistics (latency histograms); costs a few percent.
    pub statistics: bool,
    /// Whether writes go to RocksDB's write-ahead log. Off by default, as in Flink: state is
    /// made durable by checkpoints, and the log would only slow writes down.
    pub write_ahead_log: bool,
    /// Bound of the row cache in front of RocksDB (bytes, rows and their bookkeeping); 0 turns
    /// it off. Hits never reach RocksDB, and writes to value, list, reducing and aggregating
    /// state stay in it until eviction or the next checkpoint (see the crate documentation).
    pub row_cache_size: usize,
    /// Bound of the row cache's dirty rows (bytes): past it, every dirty row is written to
    /// RocksDB, in key order, while records are processed. The next checkpoint's synchronous
    /// step writes back at most this much, so it bounds that pause; a larger bound saves
    /// RocksDB writes of rows written again before they are written back. 64 MiB by default,
    /// half the row cache: at a million keys updated uniformly, the first canonical
    /// checkpoint pauses about 0.5 s (0.4 s with 16 MiB, 1.0 s with no bound) and value_rmw
    /// runs at about 3.4 times raw RocksDB (1.6 times with 16 MiB, 7 times with no bound).
    pub row_cache_dirty_limit: usize,
    /// Whether an operator instance keeps every timer in memory (Flink's
    /// `state.backend.rocksdb.timer-service.factory: HEAP`) instead of reading them in time
    /// order from a column family of their own with only the first
    /// [`CACHED_PER_GROUP`](statewright_core::timers::CACHED_PER_GROUP) of each key group in
    /// memory (`ROCKSDB`, the default). Timers are stored and checkpointed in RocksDB either
    /// way: in time order, one row per timer (`<state>#by-time`); in memory, under their keys
    /// through the row cache, with an index of every timer in the operator instance, so
    /// memory grows with the number of timers. A database opened with the other setting
    /// moves its timers when the state is registered.
    pub timers_in_memory: bool,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            write_buffer_size: 64 << 20,
            max_write_buffer_number: 2,
            max_background_jobs: 2,
            block_cache_size: 256 << 20,
            block_size: 4 << 10,
            bloom_filter_bits_per_key: Some(10.0),
            compression_per_level: vec![Compression::None, Compression::None, Compression::Lz4],
            statistics: false,
            write_ahead_log: false,
            row_cache_size: 128 << 20,
            row_cache_dirty_limit: 64 << 20,
            timers_in_memory: false,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $t:ty),* $(,)?) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, value: $t) -> Self {
            self.$name = value;
            self
        }
    )*};
}

impl RocksDbOptions {
    /// Balanced defaults: 64 MiB memtables (2 per state), 256 MiB block cache, a 128 MiB row
    /// cache, 4 KiB blocks, 10-bit bloom filters, LZ4 from L2 down.
    #[must_use]
    pub fn default_preset() -> Self {
        Self::default()
    }

    /// Many updates: large memtables, more of them, more background jobs, no compression in
    /// the upper levels.
    #[must_use]
    pub fn write_heavy() -> Self {
        Self {
            write_buffer_size: 128 << 20,
            max_write_buffer_number: 4,
            max_background_jobs: 4,
            compression_per_level: vec![
                Compression::None,
                Compression::None,
                Compression::None,
                Compression::Lz4,
            ],
            ..Self::default()
        }
    }

    /// Many point reads: large block and row caches, bigger blocks, denser bloom filters.
    #[must_use]
    pub fn read_heavy() -> Self {
        Self {
            block_cache_size: 1 << 30,
            row_cache_size: 512 << 20,
            block_size: 16 << 10,
            bloom_filter_bits_per_key: Some(12.0),
            ..Self::default()
        }
    }

    /// Small machines and many instances: small memtables and caches.
    #[must_use]
    pub fn low_memory() -> Self {
        Self {
            write_buffer_size: 8 << 20,
            max_write_buffer_number: 2,
            max_background_jobs: 1,
            block_cache_size: 16 << 20,
            row_cache_size: 8 << 20,
            row_cache_dirty_limit: 4 << 20,
            block_size: 4 << 10,
            compression_per_level: vec![Compression::Lz4],
            ..Self::default()
        }
    }

    setters! {
        /// Sets [`write_buffer_size`](Self::write_buffer_size).
        write_buffer_size: usize,
        /// Sets [`max_write_buffer_number`](Self::max_write_buffer_number).
        max_write_buffer_number: i32,
        /// Sets [`max_background_jobs`](Self::max_background_jobs).
        max_background_jobs: i32,
        /// Sets [`block_cache_size`](Self::block_cache_size).
        block_cache_size: usize,
        /// Sets [`row_cache_size`](Self::row_cache_size).
        row_cache_size: usize,
        /// Sets [`row_cache_dirty_limit`](Self::row_cache_dirty_limit).
        row_cache_dirty_limit: usize,
        /// Sets [`block_size`](Self::block_size).
        block_size: usize,
        /// Sets [`bloom_filter_bits_per_key`](Self::bloom_filter_bits_per_key).
        bloom_filter_bits_per_key: Option<f64>,
        /// Sets [`compression_per_level`](Self::compression_per_level).
        compression_per_level: Vec<Compression>,
        /// Sets [`statistics`](Self::statistics).
        statistics: bool,
        /// Sets [`write_ahead_log`](Self::write_ahead_log).
        write_ahead_log: bool,
        /// Sets [`timers_in_memory`](Self::timers_in_memory).
        timers_in_memory: bool,
    }

    /// The database-wide RocksDB options these settings make.
    #[must_use]
    pub fn rocksdb_db_options(&self) -> rocksdb::Options {
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_max_background_jobs(self.max_background_jobs);
        if self.statistics {
            o.enable_statistics();
        }
        o
    }

    /// The column-family RocksDB options these settings make, with `cache` as block cache.
    #[must_use]
    pub fn rocksdb_cf_options(&self, cache: &Cache) -> rocksdb::Options {
        let mut o = rocksdb::Options::default();
        o.set_write_buffer_size(self.write_buffer_size);
        o.set_max_write_buffer_number(self.max_write_buffer_number);
        let levels: Vec<DBCompressionType> = self
            .compression_per_level
            .iter()
            .map(|c| c.to_rocksdb())
            .collect();
        // RocksDB reads one entry per level; repeat the last for the deeper ones.
        let mut per_level = levels.clone();
        if let Some(&last) = levels.last() {
            per_level.resize(7, last);
        }
        o.set_compression_per_level(&per_level);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(cache);
        table.set_block_size(self.block_size);
        if let Some(bits) = self.bloom_filter_bits_per_key {
            table.set_bloom_filter(bits, false);
        }
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // Filters and indexes in blocks of about `block_size` under a small top level that
        // stays pinned: a whole-file filter of a large SST file (megabytes) can be larger than
        // one shard of the block cache, and was then read from the file and checksummed again
        // by every lookup once data blocks had pushed it out (seen at a million keys of map
        // state: ten times slower reads, for statewright and raw RocksDB alike).
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_pin_top_level_index_and_filter(true);
        o.set_block_based_table_factory(&table);
        o.set_merge_operator_associative("statewright.append", append_merge);
        o
    }
}

/// List append: the stored bytes followed by every operand, in order.
fn append_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::MergeOperands,
) -> Option<Vec<u8>> {
    let len = existing.map_or(0, <[u8]>::len) + operands.iter().map(<[u8]>::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    if let Some(e) = existing {
        out.extend_from_slice(e);
    }
    for op in operands {
        out.extend_from_slice(op);
    }
    Some(out)
}
