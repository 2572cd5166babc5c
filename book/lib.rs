//! The statewright guide (`book/src`, built with mdBook). Its pages and the README are included
//! here so that every Rust block in them compiles and runs as a doctest; code the pages pull in
//! with `{{#include}}` lives in compiled examples.

#[doc = include_str!("src/getting-started.md")]
pub mod getting_started {}

#[doc = include_str!("src/declaring-state.md")]
pub mod declaring_state {}

#[doc = include_str!("src/ttl.md")]
pub mod ttl {}

#[doc = include_str!("src/timers.md")]
pub mod timers {}

#[doc = include_str!("src/backends.md")]
pub mod backends {}

#[doc = include_str!("src/checkpoints.md")]
pub mod checkpoints {}

#[doc = include_str!("src/object-storage.md")]
pub mod object_storage {}

#[doc = include_str!("src/rescaling.md")]
pub mod rescaling {}

#[doc = include_str!("src/timely.md")]
pub mod timely {}

#[doc = include_str!("src/schema-evolution.md")]
pub mod schema_evolution {}

#[doc = include_str!("src/inspecting.md")]
pub mod inspecting {}

#[doc = include_str!("src/metrics.md")]
pub mod metrics {}

#[doc = include_str!("src/flink.md")]
pub mod flink {}

#[doc = include_str!("src/reference.md")]
pub mod reference {}

#[doc = include_str!("src/snapshot-format.md")]
pub mod snapshot_format {}

#[doc = include_str!("src/writing-a-backend.md")]
pub mod writing_a_backend {}

#[doc = include_str!("../README.md")]
pub mod readme {}
