//! Layer 4, persistence: capture, the snapshot format, restore, schema compatibility,
//! checkpoint storage and the checkpointer. The top layer: imports from all below it, and
//! nothing below imports from it.

pub mod bound;
pub mod checkpoint;
pub mod checkpointer;
pub mod snapshot;
pub mod store;
