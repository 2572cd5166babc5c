//! Layer 2, the data plane: the byte-level [`StateBackend`](backend::StateBackend) trait and
//! the capabilities a backend opts into, and time-to-live (stamps, clocks, the TTL wrapper).
//! Imports only from the model layer.

pub mod backend;
pub mod capture;
pub mod ttl;
