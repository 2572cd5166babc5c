//! Layer 1, the state model: errors, keys and key groups, the value codec, descriptors, the
//! state types and schemas. Imports nothing from the layers above.

pub mod codec;
pub mod descriptor;
pub mod error;
pub mod key;
pub mod keygroup;
pub mod schema;
pub mod state;
