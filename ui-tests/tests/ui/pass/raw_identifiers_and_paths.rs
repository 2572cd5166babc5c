// Fully qualified state types, raw identifiers and a struct in a module: the derive needs no
// imports besides its own name.
mod ops {
    #[derive(statewright::StatefulOperator, Default)]
    #[operator(key = String)]
    pub struct WordCount {
        pub r#type: statewright::ValueState<u64>,
        #[state(reduce = crate::ops::longer)]
        pub longest: statewright::ReducingState<String>,
    }

    pub fn longer(a: &String, b: &String) -> String {
        if b.len() > a.len() { b.clone() } else { a.clone() }
    }
}

fn main() -> statewright::Result<()> {
    use statewright::StatefulOperator as _;
    let mut op = ops::WordCount::default().bind(statewright::HeapBackend::new())?;
    let mut st = op.key("hello")?;
    st.r#type().update(|c| c.unwrap_or(0) + 1)?;
    st.longest().add(&"hello".to_string())?;
    assert_eq!(st.r#type().get_owned()?, Some(1));
    assert_eq!(<ops::WordCount as statewright::StatefulOperator>::DESCRIPTOR.name, "word-count");
    assert_eq!(<ops::WordCount as statewright::StatefulOperator>::DESCRIPTOR.states[0].name, "type");
    Ok(())
}
