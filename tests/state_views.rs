//! Every state primitive through the generated key-scoped view, on the heap backend.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::StateBackend as _;
use statewright::prelude::*;

#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Txn {
    pub card: u64,
    pub amount_cents: i64,
    pub merchant: u32,
    pub note: String,
}

pub struct Mean;

impl Aggregate for Mean {
    type In = i64;
    type Acc = (i64, u64);
    type Out = f64;
    fn create() -> (i64, u64) {
        (0, 0)
    }
    fn add(acc: &mut (i64, u64), v: &i64) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn result(acc: &(i64, u64)) -> f64 {
        acc.0 as f64 / acc.1.max(1) as f64
    }
    fn merge(acc: &mut (i64, u64), other: (i64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

#[allow(clippy::ptr_arg)] // a reduce function is `fn(&T, &T) -> T`
fn longest(a: &String, b: &String) -> String {
    if b.len() > a.len() {
        b.clone()
    } else {
        a.clone()
    }
}

#[derive(StatefulOperator, Default)]
#[operator(name = "all-kinds", key = u64)]
pub struct AllKinds {
    seen: ValueState<bool>,
    recent: ListState<Txn>,
    per_merchant: MapState<u32, i64>,
    #[state(reduce = max)]
    largest: ReducingState<i64>,
    #[state(reduce = min)]
    smallest: ReducingState<i64>,
    #[state(reduce = sum)]
    total: ReducingState<i64>,
    #[state(reduce = longest)]
    longest_note: ReducingState<String>,
    #[state(aggregate = Mean)]
    mean: AggregatingState<i64, f64>,
    labels: MapState<String, String>,
    threshold: i64,
}

fn txn(card: u64, amount_cents: i64, merchant: u32, note: &str) -> Txn {
    Txn {
        card,
        amount_cents,
        merchant,
        note: note.into(),
    }
}

#[test]
fn value_state_get_set_update_clear() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&1)?;
    assert_eq!(st.seen().get()?, None);
    assert!(!st.seen().exists()?);
    st.seen().set(&true)?;
    assert_eq!(st.seen().get()?.copied(), Some(true));
    st.seen().update(|v| !v.unwrap_or(false))?;
    assert_eq!(st.seen().get_owned()?, Some(false));
    st.seen().clear()?;
    assert_eq!(st.seen().get_owned()?, None);
    Ok(())
}

#[test]
fn state_is_scoped_to_the_current_key() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    op.key(&1)?.seen().set(&true)?;
    op.key(&2)?.per_merchant().put(&9, &5)?;
    assert_eq!(op.key(&2)?.seen().get()?, None);
    assert_eq!(op.key(&1)?.per_merchant().get(&9)?, None);
    assert_eq!(op.key(&1)?.seen().get()?.copied(), Some(true));
    Ok(())
}

#[test]
fn list_state_appends_iterates_and_replaces() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&7)?;
    assert!(st.recent().is_empty()?);
    st.recent().add(&txn(7, 100, 1, "a"))?;
    st.recent()
        .add_all(&[txn(7, 200, 2, "bb"), txn(7, 300, 3, "ccc")])?;
    assert_eq!(st.recent().len()?, 3);
    let amounts: Vec<i64> = st
        .recent()
        .iter()?
        .map(|t| t.map(|t| t.amount_cents.to_native()))
        .collect::<Result<_, _>>()?;
    assert_eq!(amounts, [100, 200, 300]);
    let notes: Vec<String> = st
        .recent()
        .iter()?
        .map(|t| t.map(|t| t.note.as_str().to_owned()))
        .collect::<Result<_, _>>()?;
    assert_eq!(notes, ["a", "bb", "ccc"]);
    st.recent().update(&[txn(7, 1, 1, "only")])?;
    assert_eq!(st.recent().get_owned()?, vec![txn(7, 1, 1, "only")]);
    st.recent().update(&[])?;
    assert!(st.recent().is_empty()?);
    st.recent().add(&txn(7, 5, 5, "x"))?;
    st.recent().clear()?;
    assert_eq!(st.recent().len()?, 0);
    Ok(())
}

#[test]
fn list_append_is_a_byte_append() -> statewright::Result<()> {
    // Appending writes one new frame after the stored bytes; it never re-encodes the list.
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    op.key(&1)?.recent().add(&txn(1, 1, 1, "first"))?;
    let raw = |op: &Bound<AllKinds, HeapBackend>| {
        let mut all = Vec::new();
        op.backend()
            .for_each_entry(statewright::StateId(1), &mut |_, _, v| {
                all = v.to_vec();
                Ok(())
            })
            .map(|()| all)
    };
    let before = raw(&op)?;
    op.key(&1)?.recent().add(&txn(1, 2, 2, "second"))?;
    let after = raw(&op)?;
    let mut frame = Vec::new();
    statewright::codec::encode_frame_into(&txn(1, 2, 2, "second"), &mut frame)?;
    assert_eq!(after, [before, frame].concat());
    Ok(())
}

#[test]
fn map_state_entries_in_key_order() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&3)?;
    assert!(st.per_merchant().is_empty()?);
    for m in [30u32, 10, 20, 1_000_000, 0] {
        st.per_merchant().put(&m, &(i64::from(m) * 2))?;
    }
    assert_eq!(st.per_merchant().len()?, 5);
    assert!(st.per_merchant().contains(&20)?);
    assert!(!st.per_merchant().contains(&21)?);
    let keys: Vec<u32> = st.per_merchant().keys()?.collect::<Result<_, _>>()?;
    assert_eq!(keys, [0, 10, 20, 30, 1_000_000]);
    let values: Vec<i64> = st
        .per_merchant()
        .values()?
        .map(|v| v.map(|v| v.to_native()))
        .collect::<Result<_, _>>()?;
    assert_eq!(values, [0, 20, 40, 60, 2_000_000]);
    st.per_merchant().update(&10, |v| v.unwrap_or(0) + 1)?;
    st.per_merchant().update(&11, |v| v.unwrap_or(0) + 1)?;
    assert_eq!(st.per_merchant().get_owned(&10)?, Some(21));
    assert_eq!(st.per_merchant().get(&11)?.map(|v| v.to_native()), Some(1));
    st.per_merchant().remove(&10)?;
    assert_eq!(st.per_merchant().get(&10)?, None);
    let entries: Vec<(u32, i64)> = st
        .per_merchant()
        .entries()?
        .map(|e| e.map(|(k, v)| (k, v.to_native())))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        entries,
        [(0, 0), (11, 1), (20, 40), (30, 60), (1_000_000, 2_000_000)]
    );
    st.per_merchant().clear()?;
    assert!(st.per_merchant().is_empty()?);
    Ok(())
}

#[test]
fn map_state_string_keys_look_up_by_str() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&3)?;
    st.labels().put("b", &"B".to_string())?;
    st.labels().put("a", &"A".to_string())?;
    st.labels().put("", &"empty".to_string())?;
    assert_eq!(
        st.labels().get("a")?.map(|v| v.as_str().to_owned()),
        Some("A".into())
    );
    let keys: Vec<String> = st.labels().keys()?.collect::<Result<_, _>>()?;
    assert_eq!(keys, ["", "a", "b"]);
    Ok(())
}

#[test]
fn reducing_state_builtins_and_user_function() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&5)?;
    for v in [5i64, -3, 12, 7] {
        st.largest().add(&v)?;
        st.smallest().add(&v)?;
        st.total().add(&v)?;
    }
    assert_eq!(st.largest().get_owned()?, Some(12));
    assert_eq!(st.smallest().get_owned()?, Some(-3));
    assert_eq!(st.total().get()?.map(|v| v.to_native()), Some(21));
    for s in ["ab", "abcd", "x"] {
        st.longest_note().add(&s.to_string())?;
    }
    assert_eq!(st.longest_note().get_owned()?, Some("abcd".into()));
    st.total().clear()?;
    assert_eq!(st.total().get_owned()?, None);
    Ok(())
}

#[test]
fn aggregating_state_adds_merges_and_reads() -> statewright::Result<()> {
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    let mut st = op.key(&9)?;
    assert_eq!(st.mean().get()?, None);
    for v in [2i64, 4, 9] {
        st.mean().add(&v)?;
    }
    assert_eq!(st.mean().get()?, Some(5.0));
    st.mean().merge((5, 1))?;
    assert_eq!(st.mean().get()?, Some(5.0));
    let acc = st
        .mean()
        .accumulator()?
        .map(|a| (a.0.to_native(), a.1.to_native()));
    assert_eq!(acc, Some((20, 4)));
    st.mean().clear()?;
    assert_eq!(st.mean().get()?, None);
    Ok(())
}

#[test]
fn plain_fields_are_reachable_through_the_view() -> statewright::Result<()> {
    let mut op = AllKinds {
        threshold: 42,
        ..Default::default()
    }
    .bind(HeapBackend::new())?;
    let st = op.key(&1)?;
    assert_eq!(st.threshold, 42);
    Ok(())
}

#[test]
fn descriptors_describe_each_state() {
    let d = <AllKinds as StatefulOperator>::DESCRIPTOR;
    assert_eq!(d.name, "all-kinds");
    assert_eq!(d.key_type, "u64");
    assert_eq!(d.max_parallelism, 128);
    let names: Vec<_> = d.states.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "seen",
            "recent",
            "per_merchant",
            "largest",
            "smallest",
            "total",
            "longest_note",
            "mean",
            "labels"
        ]
    );
    let map = d.state("per_merchant").unwrap();
    assert_eq!(map.kind, statewright::StateKind::Map);
    assert_eq!(map.user_key_type, Some("u32"));
    assert_eq!(map.value_type, "i64");
}

#[test]
fn errors_name_operator_state_and_key_group() -> statewright::Result<()> {
    use statewright::StateBackend;
    let mut op = AllKinds::default().bind(HeapBackend::new())?;
    // Store bytes that are not a valid `Txn` list under key 4, through the raw backend.
    let key = {
        let mut k = Vec::new();
        let canonical = 4u64.to_key_bytes();
        k.extend_from_slice(&statewright::keygroup::key_group(&canonical, 128).to_be_bytes());
        k.extend_from_slice(&canonical);
        k
    };
    let recent = statewright::StateId(1);
    op.backend_mut()
        .put(recent, &key, &[], &[3, 0, 0, 0, 0xFF, 0xFF, 0xFF])?;
    let err = op.key(&4)?.recent().get_owned().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("operator `all-kinds`"), "{msg}");
    assert!(msg.contains("state `recent`"), "{msg}");
    assert!(msg.contains("key group"), "{msg}");
    assert!(matches!(
        err,
        statewright::Error::State {
            state: "recent",
            ..
        }
    ));
    Ok(())
}

#[test]
fn keys_outside_this_instances_key_groups_are_refused() -> statewright::Result<()> {
    let range = statewright::keygroup::KeyGroupRange::for_instance(128, 2, 0).unwrap();
    let mut op = AllKinds::default()
        .bind(HeapBackend::new())?
        .with_key_groups(range)?;
    let mut refused = 0;
    for k in 0u64..64 {
        match op.key(&k) {
            Ok(mut st) => st.seen().set(&true)?,
            Err(statewright::Error::KeyGroupNotOwned { key_group, .. }) => {
                assert!(!range.contains(key_group));
                refused += 1;
            }
            Err(e) => return Err(e),
        }
    }
    assert!(refused > 10 && refused < 54, "{refused}");
    Ok(())
}
