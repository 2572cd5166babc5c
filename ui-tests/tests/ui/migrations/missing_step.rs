use statewright::prelude::*;

#[statewright::value]
pub struct TxnV1 { pub cents: i64 }

#[statewright::value]
pub struct Txn { pub cents: i64, pub currency: u16 }

impl From<TxnV1> for Txn {
    fn from(t: TxnV1) -> Self { Self { cents: t.cents, currency: 978 } }
}

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Payments {
    // Version 2 is missing: the chain from v1 to v3 has a gap.
    #[state(version = 3, migrate_from(v1 = TxnV1))]
    last: ValueState<Txn>,
}

fn main() {}
