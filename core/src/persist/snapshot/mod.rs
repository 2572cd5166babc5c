//! Snapshot format v1: the backend-independent, self-checking file a checkpoint is made of.
//!
//! ```text
//! header   magic "\x89SWSNAP\n" | format version u16 | rkyv format u8 | key hash version u8
//!          | compression u8 | kind u8 (0 full, 1 incremental) | 2 reserved bytes
//!          | crc32c of the preceding 16 bytes
//! blocks   key-group-ordered records, lz4-compressed (or stored), each with its crc32c in the index
//! index    operator, key type, max parallelism, key-group range, and per state: descriptor,
//!          then per key group its blocks (offset, stored length, raw length, entries, crc32c)
//! footer   index offset u64 | index length u32 | index crc32c u32 | magic "SWSNEND\n"
//! ```
//!
//! All integers are little endian. A record is `u32 key length | canonical key | u32 user key
//! length | user key | u32 value length | value`. Records are sorted by key group, then key,
//! then user key, so the same state gives the same bytes whatever backend held it. Restoring a
//! key-group range reads only the blocks of that range.
//!
//! An incremental snapshot holds the entries that changed since the snapshot before it, with
//! two more record forms: a value length of `u32::MAX` deletes the entry, `u32::MAX - 1` (with
//! an empty user key) deletes every entry of the key and comes before the key's other records.
//!
//! Reading never trusts a length: every one is checked against the bytes present, block sizes
//! are bounded by what their stored length can decompress to, and every key and value is
//! validated against the operator's declared types before it reaches a backend.

mod format;
mod read;
mod write;

pub use format::{
    BlockRef, COMPRESSION_LZ4, COMPRESSION_NONE, FORMAT_VERSION, KeyGroupIndex, SnapshotIndex,
    StateSection,
};
pub use read::{
    ChangeRecordVisitor, RecordVisitor, RestoreSummary, SnapshotReader, restore_operator,
    restore_operator_from, restore_operator_states,
};
pub use write::{
    SnapshotImage, SnapshotOptions, SnapshotSummary, capture, capture_changes, capture_detached,
    write_operator,
};
