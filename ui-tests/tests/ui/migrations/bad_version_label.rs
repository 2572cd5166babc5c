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
    #[state(version = 2, migrate_from(version1 = TxnV1))]
    last: ValueState<Txn>,
}

fn main() {}
