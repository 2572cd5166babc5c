use statewright::prelude::*;

mod v1 {
    #[statewright::value]
    pub struct Txn { pub cents: i64 }
}

mod v2 {
    #[statewright::value]
    pub struct Txn { pub cents: i64, pub currency: u16 }

    impl From<super::v1::Txn> for Txn {
        fn from(t: super::v1::Txn) -> Self { Self { cents: t.cents, currency: 978 } }
    }
}

#[statewright::value]
pub struct Txn { pub amount: f64, pub currency: u16 }

impl From<v2::Txn> for Txn {
    fn from(t: v2::Txn) -> Self { Self { amount: t.cents as f64 / 100.0, currency: t.currency } }
}

/// A type used inside values, neither a key nor a value itself.
#[derive(StateSchema, Clone, Copy)]
pub enum Channel { Web, Store { id: u32 } }

/// A key and a value at once: the schema is derived once.
#[statewright::value]
#[derive(StateKey, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Region { pub id: u16 }

#[derive(StatefulOperator, Default)]
#[operator(key = Region)]
struct Payments {
    #[state(version = 3, migrate_from(v1 = v1::Txn, v2 = v2::Txn))]
    last: ValueState<Txn>,
    #[state(ttl = "1h", version = 2, migrate_from(v1 = v1::Txn))]
    history: ListState<v2::Txn>,
    regions: MapState<Region, Region>,
    rules: BroadcastState<String, i64>,
    offsets: OperatorListState<(u32, u64)>,
    assigned: UnionListState<u32>,
}

fn main() {
    let _ = <Channel as StateSchema>::FINGERPRINT;
    let m = Payments::manifest();
    assert_eq!(m.states.len(), 6);
    assert_eq!(m.states[0].version, 3);
}
