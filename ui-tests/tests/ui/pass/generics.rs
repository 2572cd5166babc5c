use statewright::prelude::*;

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged<T> {
    pub tag: u32,
    pub value: T,
}

#[derive(StateKey, Debug, Clone, PartialEq, PartialOrd)]
pub enum Route {
    Direct(u32),
    Via { hub: String, hops: u8 },
}

#[derive(StatefulOperator)]
#[operator(name = "generic", key = Route, max_parallelism = 16)]
pub struct Latest<T: Clone + 'static, const N: usize>
where
    Tagged<T>: StateValue,
{
    latest: ValueState<Tagged<T>>,
    history: ListState<[u8; 4]>,
    config: [T; N],
}

fn main() -> statewright::Result<()> {
    let op = Latest::<String, 2> {
        latest: ValueState::new(),
        history: ListState::new(),
        config: ["a".to_string(), "b".to_string()],
    };
    let mut op = op.bind(HeapBackend::new())?;
    let route = Route::Via { hub: "ams".into(), hops: 2 };
    let mut st = op.key(&route)?;
    st.latest().set(&Tagged { tag: 1, value: "x".to_string() })?;
    st.history().add(&[1, 2, 3, 4])?;
    assert_eq!(st.config.len(), 2);
    assert_eq!(st.latest().get_owned()?.map(|t| t.value), Some("x".to_string()));
    Ok(())
}
