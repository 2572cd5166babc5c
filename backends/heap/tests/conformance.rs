//! The core conformance suite, run against the heap backend.
#![allow(missing_docs)]

statewright_core::conformance_suite!(statewright_heap::HeapBackend::new());
