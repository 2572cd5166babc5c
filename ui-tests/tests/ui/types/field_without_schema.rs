use std::collections::HashMap;

// rkyv can store a `HashMap`, but it has no state schema: a snapshot could not say what it
// holds. A `Vec` of pairs or a `MapState` can.
#[statewright::value]
pub struct Txn {
    pub cents: i64,
    pub tags: HashMap<u32, u64>,
}

fn main() {}
