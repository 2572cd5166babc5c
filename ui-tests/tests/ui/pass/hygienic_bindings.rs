// Fields named like the bindings generated code needs (`out`, `input`, `tag`, `bytes`, `v`,
// ...), with constants and unit structs of those names in scope: the derives' own bindings
// collide with none of them.
#![allow(non_upper_case_globals, non_camel_case_types, dead_code)]

use statewright::prelude::*;

const out: u8 = 1;
const input: u8 = 2;
const tag: u8 = 3;
const v: u8 = 4;
const bytes: u8 = 5;
struct reduce;
struct backend;
struct op;
struct ctx;
struct columns;

#[derive(StateKey, Debug, Clone, PartialEq, PartialOrd)]
struct Names {
    out: u32,
    input: String,
    tag: u8,
    buf: u16,
    bytes: Vec<u8>,
    key: u64,
    self_: bool,
    v: i64,
    index: char,
}

#[derive(StateKey, Debug, Clone, PartialEq, PartialOrd)]
enum Route {
    Named { out: u32, input: String, tag: u16 },
    Tuple(u32, String),
    Unit,
}

#[derive(StatefulOperator, Default)]
#[operator(key = Names)]
struct Hygiene {
    out: ValueState<u64>,
    bytes: ListState<u32>,
    op: MapState<Route, i64>,
    ctx: ValueState<u8>,
    columns: ValueState<u8>,
    backend: ValueState<u8>,
    #[state(reduce = max)]
    reduce: ReducingState<i64>,
    #[state(version = 2, migrate_from(v1 = u32))]
    v: ValueState<u64>,
}

fn main() -> statewright::Result<()> {
    let names = Names {
        out: 7,
        input: "in".into(),
        tag: 1,
        buf: 2,
        bytes: vec![0, 1, 2],
        key: 3,
        self_: true,
        v: -4,
        index: 'x',
    };
    assert_eq!(Names::from_key_bytes(&names.to_key_bytes())?, names);
    let routes = [
        Route::Named { out: 1, input: "a".into(), tag: 2 },
        Route::Tuple(3, "b".into()),
        Route::Unit,
    ];
    for r in &routes {
        assert_eq!(&Route::from_key_bytes(&r.to_key_bytes())?, r);
    }
    assert!(routes[0].to_key_bytes() < routes[1].to_key_bytes());

    let mut hygiene = Hygiene::default().bind(HeapBackend::new())?;
    let mut st = hygiene.key(&names)?;
    st.out().set(&u64::from(out))?;
    st.bytes().add(&u32::from(bytes))?;
    st.op().put(&routes[1], &i64::from(input))?;
    st.ctx().set(&tag)?;
    st.columns().set(&v)?;
    st.backend().set(&0)?;
    st.reduce().add(&5)?;
    st.reduce().add(&3)?;
    st.v().set(&9)?;
    assert_eq!(st.out().get_owned()?, Some(1));
    assert_eq!(st.bytes().get_owned()?, vec![5]);
    assert_eq!(st.op().get_owned(&routes[1])?, Some(2));
    assert_eq!(st.reduce().get_owned()?, Some(5));
    assert_eq!(st.v().get_owned()?, Some(9));
    let migrate = Hygiene::DESCRIPTOR.states[7].migrations[0].migrate;
    let (mut old, mut migrated) = (Vec::new(), Vec::new());
    statewright::codec::encode_into(&41u32, &mut old)?;
    migrate(&old, &mut migrated)?;
    assert_eq!(statewright::codec::decode::<u64>(&migrated)?, 41);
    Ok(())
}
