use statewright::prelude::*;

pub struct TxnV1 { pub cents: i64 }

#[statewright::value]
pub struct Txn { pub cents: i64 }

impl From<TxnV1> for Txn {
    fn from(t: TxnV1) -> Self { Self { cents: t.cents } }
}

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Payments {
    #[state(version = 2, migrate_from(v1 = TxnV1))]
    last: ValueState<Txn>,
}

fn main() {}
