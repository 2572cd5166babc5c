use statewright::prelude::*;

#[statewright::value]
pub struct TxnV1 { pub cents: i64 }

#[statewright::value]
pub struct Txn { pub cents: i64, pub currency: u16 }

// No `impl From<TxnV1> for Txn`: the migration has no way to convert.
#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Payments {
    #[state(version = 2, migrate_from(v1 = TxnV1))]
    last: ValueState<Txn>,
}

fn main() {}
