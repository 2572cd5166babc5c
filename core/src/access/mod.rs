//! Layer 3, typed access: key-scoped views, operator state, [`StatefulOperator`] and
//! [`Bound`]. Imports only from the model and data layers.
//!
//! [`StatefulOperator`]: operator::StatefulOperator
//! [`Bound`]: operator::Bound

pub mod namespaces;
pub mod operator;
pub mod operator_state;
pub mod timers;
pub mod view;
pub mod windows;
