//! The core conformance suite on the heap backend, alone and under the TTL wrapper.
#![allow(missing_docs)]

statewright_core::conformance_suite!(statewright_heap::HeapBackend::new());

/// `TtlBackend<HeapBackend>` with a one-year TTL on every state: nothing expires, so it must
/// behave exactly as a backend without TTL.
mod ttl {
    statewright_core::conformance_suite!(ttl: statewright_core::ttl::TtlBackend::new(
        statewright_heap::HeapBackend::new()
    ));
}
