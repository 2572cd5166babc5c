//! The backend conformance suite: one function per behaviour of the [`StateBackend`] contract.
//!
//! A backend crate instantiates it in a test file; every behaviour becomes its own `#[test]`:
//!
//! ```text
//! statewright_core::conformance_suite!(statewright_heap::HeapBackend::new());
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::data::backend::{EntryHint, Snapshots, StateBackend, StateId};
use crate::model::descriptor::{
    OperatorDescriptor, StateDescriptor, StateKind, TtlConfig, no_user_key,
};
use crate::model::error::Error;
use crate::model::keygroup::{KeyGroupRange, key_group};
use crate::model::schema::{Schema, StateSchema};
use crate::persist::snapshot::{SnapshotOptions, SnapshotReader, restore_operator, write_operator};

fn any_value(_: &[u8]) -> Result<(), crate::model::error::CodecError> {
    Ok(())
}
fn any_key(_: &[u8]) -> Result<(), crate::model::error::KeyError> {
    Ok(())
}

const fn desc(name: &'static str, kind: StateKind) -> StateDescriptor {
    StateDescriptor {
        name,
        kind,
        value_type: "bytes",
        user_key_type: None,
        namespace_type: None,
        ttl: None,
        validate_value: any_value,
        validate_user_key: if matches!(kind, StateKind::Map) {
            any_key
        } else {
            no_user_key
        },
        value_schema: BYTES,
        value_fingerprint: Schema::fingerprint(BYTES),
        user_key_schema: if matches!(kind, StateKind::Map) {
            Some(BYTES)
        } else {
            None
        },
        version: 1,
        migrations: &[],
    }
}

const BYTES: &Schema = <Vec<u8> as StateSchema>::SCHEMA;

pub const VALUE: StateDescriptor = desc("value", StateKind::Value);
pub const LIST: StateDescriptor = desc("list", StateKind::List);
pub const MAP: StateDescriptor = desc("map", StateKind::Map);
/// A value state per namespace: the namespace is the user key.
pub const NS_VALUE: StateDescriptor = namespaced(desc("ns_value", StateKind::Value));
/// A list state per namespace.
pub const NS_LIST: StateDescriptor = namespaced(desc("ns_list", StateKind::List));

const fn namespaced(d: StateDescriptor) -> StateDescriptor {
    StateDescriptor {
        user_key_type: Some("bytes"),
        namespace_type: Some("bytes"),
        validate_user_key: any_key,
        user_key_schema: Some(BYTES),
        ..d
    }
}

/// A timer state: user keys are a domain tag, a timestamp and a namespace; values are empty.
pub const TIMERS: StateDescriptor = StateDescriptor {
    user_key_type: Some("(TimeDomain, i64, bytes)"),
    validate_user_key: any_key,
    user_key_schema: Some(BYTES),
    ..desc("timers", StateKind::Timers)
};

/// An operator with a value state and a timer state, for
/// [`timer_states_hold_a_set_of_timers_per_key`].
pub const TIMER_OPERATOR: OperatorDescriptor = OperatorDescriptor {
    name: "conformance_timers",
    states: &[VALUE, TIMERS],
    ..OPERATOR
};

pub const TTL_VALUE: StateDescriptor = StateDescriptor {
    ttl: Some(TtlConfig::new(Duration::from_secs(60))),
    ..desc("ttl_value", StateKind::Value)
};
pub const OPERATOR: OperatorDescriptor = OperatorDescriptor {
    name: "conformance",
    key_type: "bytes",
    max_parallelism: 16,
    validate_key: any_key,
    key_schema: BYTES,
    key_fingerprint: Schema::fingerprint(BYTES),
    operator_states: &[],
    states: &[VALUE, LIST, MAP, TTL_VALUE, NS_VALUE, NS_LIST],
};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
const fn with_ttl(d: StateDescriptor) -> StateDescriptor {
    StateDescriptor {
        ttl: Some(TtlConfig::new(YEAR)),
        ..d
    }
}

/// [`OPERATOR`] with a one-year TTL on every state: nothing expires while the suite runs, so
/// a TTL backend must behave exactly as any other backend.
pub const OPERATOR_TTL: OperatorDescriptor = OperatorDescriptor {
    name: "conformance",
    key_type: "bytes",
    max_parallelism: 16,
    validate_key: any_key,
    key_schema: BYTES,
    key_fingerprint: Schema::fingerprint(BYTES),
    operator_states: &[],
    states: &[
        with_ttl(VALUE),
        with_ttl(LIST),
        with_ttl(MAP),
        with_ttl(TTL_VALUE),
        with_ttl(NS_VALUE),
        with_ttl(NS_LIST),
    ],
};

/// List state bytes: each part as one frame (`u32` little-endian length, then the bytes).
pub fn frames(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// A key with its key-group prefix, as `Bound::key` builds it.
pub fn key(canonical: &[u8]) -> Vec<u8> {
    let mut k = key_group(canonical, OPERATOR.max_parallelism)
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(canonical);
    k
}

fn register_all<B: StateBackend>(b: &mut B, op: &OperatorDescriptor) -> Vec<StateId> {
    op.states
        .iter()
        .map(|s| b.register(op, s).unwrap())
        .collect()
}

fn dump<B: StateBackend>(b: &B, col: StateId) -> BTreeMap<(Vec<u8>, Vec<u8>), Vec<u8>> {
    let mut out = BTreeMap::new();
    b.for_each_entry(col, &mut |k, u, v| {
        assert!(
            out.insert((k.to_vec(), u.to_vec()), v.to_vec()).is_none(),
            "visited twice"
        );
        Ok(())
    })
    .unwrap();
    out
}

pub fn missing_entry_is_none<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), None);
    assert_eq!(b.get(c[2], &key(b"k"), b"u").unwrap(), None);
}

pub fn put_then_get_returns_the_bytes<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"hello").unwrap();
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), Some(&b"hello"[..]));
}

pub fn put_replaces<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"a long first value").unwrap();
    b.put(c[0], &key(b"k"), &[], b"b").unwrap();
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), Some(&b"b"[..]));
}

pub fn empty_values_are_stored<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"").unwrap();
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), Some(&b""[..]));
}

pub fn delete_removes_and_missing_delete_is_ok<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"v").unwrap();
    b.delete(c[0], &key(b"k"), &[]).unwrap();
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), None);
    b.delete(c[0], &key(b"never"), &[]).unwrap();
    b.delete(c[2], &key(b"never"), b"u").unwrap();
}

/// A hinted write lands on its own entry whatever the hint: its own read's, another key's or
/// state's, a read that found nothing, one from before the entry was deleted, or made up.
pub fn hints_never_reach_another_entry<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    let canonical = |i: u64| i.to_be_bytes();
    let mut model = BTreeMap::new();
    // Fixed-length keys and values: what a heap backend keeps in fixed rows.
    for i in 0..2000u64 {
        let (k, v) = (key(&canonical(i)), (i * 10).to_le_bytes());
        b.put(c[0], &k, &[], &v).unwrap();
        model.insert((k, Vec::new()), v.to_vec());
    }
    let mut hints = Vec::new();
    for i in 0..2000u64 {
        let mut hint = EntryHint::NONE;
        let k = key(&canonical(i));
        let got = b.get_hinted(c[0], &k, &[], &mut hint).unwrap();
        assert_eq!(got, Some(&(i * 10).to_le_bytes()[..]));
        hints.push(hint);
    }
    let write = |b: &mut B, model: &mut BTreeMap<_, _>, i: u64, v: u64, hint: EntryHint| {
        let k = key(&canonical(i));
        b.put_hinted(c[0], &k, &[], &v.to_le_bytes(), hint).unwrap();
        model.insert((k, Vec::new()), v.to_le_bytes().to_vec());
    };
    // Its own read's hint (a read-modify-write), then every key with another key's hint.
    for i in 0..2000u64 {
        write(&mut b, &mut model, i, i + 1, hints[i as usize]);
    }
    for i in 0..2000u64 {
        write(
            &mut b,
            &mut model,
            i,
            i + 2,
            hints[((i + 1) % 2000) as usize],
        );
    }
    // A read that found nothing, then writes of keys that exist and of one that does not.
    let mut absent = EntryHint::NONE;
    assert_eq!(
        b.get_hinted(c[0], &key(b"nothing"), &[], &mut absent)
            .unwrap(),
        None
    );
    write(&mut b, &mut model, 7, 70, absent);
    write(&mut b, &mut model, 5000, 5, absent);
    // Deleted keys whose buckets new keys may take, written with their old hints.
    for i in 0..100u64 {
        let k = key(&canonical(i));
        b.delete(c[0], &k, &[]).unwrap();
        model.remove(&(k, Vec::new()));
    }
    for i in 10_000..10_100u64 {
        write(&mut b, &mut model, i, i, EntryHint::NONE);
    }
    for i in 0..50u64 {
        write(&mut b, &mut model, i, i + 3, hints[i as usize]);
    }
    // Made-up hints, and a hint used on another state of the same key.
    for (n, position) in [1, 2, 1 << 20, 1 << 40, u64::MAX - 1, u64::MAX]
        .into_iter()
        .enumerate()
    {
        write(
            &mut b,
            &mut model,
            1000 + n as u64,
            4,
            EntryHint::new(position),
        );
    }
    let k = key(&canonical(500));
    b.put_hinted(c[3], &k, &[], b"other state", hints[500])
        .unwrap();
    let mut hint = EntryHint::NONE;
    assert_eq!(
        b.get_hinted(c[3], &k, &[], &mut hint).unwrap(),
        Some(&b"other state"[..])
    );
    b.put_hinted(c[2], &k, b"user key", b"a map entry", hint)
        .unwrap();
    assert_eq!(
        b.get_hinted(c[2], &k, b"user key", &mut hint).unwrap(),
        Some(&b"a map entry"[..])
    );
    // A value of another length after a hinted read of the entry.
    let mut hint = EntryHint::NONE;
    b.get_hinted(c[0], &k, &[], &mut hint).unwrap();
    b.put_hinted(c[0], &k, &[], b"a longer value", hint)
        .unwrap();
    model.insert((k, Vec::new()), b"a longer value".to_vec());
    assert_eq!(dump(&b, c[0]), model);
}

/// `read_modify_write` hands the update the stored value (`None` for a new entry), calls it
/// exactly once, stores what it wrote whatever its length, and stores nothing when it fails,
/// on plain and namespaced states alike.
pub fn read_modify_write_updates_in_one_call<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    let (value, spaced) = (c[0], c[4]);
    let mut model: BTreeMap<(StateId, Vec<u8>, Vec<u8>), Vec<u8>> = BTreeMap::new();
    let mut out = b"left over".to_vec();
    let mut calls = 0;
    // Counters of a fixed length: new entries, then each entry again, on many keys (a heap
    // backend keeps them in fixed rows and grows its table on the way).
    for round in 0..3u64 {
        for i in 0..3000u64 {
            let k = key(&i.to_be_bytes());
            let (state, ns) = if i % 3 == 0 {
                (value, Vec::new())
            } else {
                // 16 bytes, as a time window's: new in rounds 0 and 1, stored in round 2.
                (
                    spaced,
                    [(round % 2).to_be_bytes(), i.to_be_bytes()].concat(),
                )
            };
            let seen = model.get(&(state, k.clone(), ns.clone())).cloned();
            b.read_modify_write(state, &k, &ns, &mut out, &mut |old, out| {
                calls += 1;
                assert_eq!(old.map(<[u8]>::to_vec), seen, "the stored value");
                assert!(out.is_empty(), "the output starts empty");
                let n = old.map_or(0, |o| u64::from_le_bytes(o.try_into().unwrap()));
                out.extend_from_slice(&(n + 1).to_le_bytes());
                Ok(())
            })
            .unwrap();
            let n = seen.map_or(0, |o| u64::from_le_bytes(o.try_into().unwrap()));
            model.insert((state, k, ns), (n + 1).to_le_bytes().to_vec());
        }
    }
    assert_eq!(calls, 9000, "one call of the update per read_modify_write");
    // A value of another length, for a stored entry and for a new one.
    for (state, ns) in [(value, &b""[..]), (spaced, &b"window"[..])] {
        for canonical in [&3u64.to_be_bytes()[..], b"a new key"] {
            let k = key(canonical);
            b.read_modify_write(state, &k, ns, &mut out, &mut |old, out| {
                out.extend_from_slice(old.unwrap_or(b"new"));
                out.extend_from_slice(b" and more");
                Ok(())
            })
            .unwrap();
            let entry = model
                .entry((state, k, ns.to_vec()))
                .or_insert(b"new".to_vec());
            entry.extend_from_slice(b" and more");
        }
    }
    // A failing update: its error comes back as it is, and nothing changes.
    for (state, ns) in [(value, &b""[..]), (spaced, &1u64.to_be_bytes()[..])] {
        for canonical in [&4u64.to_be_bytes()[..], b"never stored"] {
            let err = b
                .read_modify_write(state, &key(canonical), ns, &mut out, &mut |_, out| {
                    out.extend_from_slice(b"half written");
                    Err(Error::Backend {
                        backend: "update",
                        message: "refused".into(),
                    })
                })
                .unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Backend {
                        backend: "update",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
    for state in [value, spaced] {
        let want: BTreeMap<_, _> = model
            .iter()
            .filter(|((s, _, _), _)| *s == state)
            .map(|((_, k, u), v)| ((k.clone(), u.clone()), v.clone()))
            .collect();
        assert_eq!(dump(&b, state), want);
    }
}

pub fn merge_appends_and_creates<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.merge(c[1], &key(b"k"), &[], &frames(&[b"ab"])).unwrap();
    b.merge(c[1], &key(b"k"), &[], b"").unwrap();
    b.merge(c[1], &key(b"k"), &[], &frames(&[b"cd", b""]))
        .unwrap();
    let want = frames(&[b"ab", b"cd", b""]);
    assert_eq!(b.get(c[1], &key(b"k"), &[]).unwrap(), Some(&want[..]));
    b.put(c[1], &key(b"k"), &[], &frames(&[b"x"])).unwrap();
    b.merge(c[1], &key(b"k"), &[], &frames(&[b"y"])).unwrap();
    let want = frames(&[b"x", b"y"]);
    assert_eq!(b.get(c[1], &key(b"k"), &[]).unwrap(), Some(&want[..]));
}

pub fn states_are_independent<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"value").unwrap();
    assert_eq!(b.get(c[1], &key(b"k"), &[]).unwrap(), None);
    assert_eq!(b.get(c[3], &key(b"k"), &[]).unwrap(), None);
    b.clear_state(c[1]).unwrap();
    assert_eq!(b.get(c[0], &key(b"k"), &[]).unwrap(), Some(&b"value"[..]));
}

pub fn keys_that_prefix_each_other_are_distinct<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    // Same key group prefix, one key a prefix of the other.
    let k1 = key(&[7]);
    let k2 = (0..=u8::MAX)
        .map(|n| key(&[7, n]))
        .find(|k2| k2[..2] == k1[..2])
        .expect("one of 256 keys shares the group of [7]");
    b.put(c[0], &k1, &[], b"1").unwrap();
    b.put(c[0], &k2, &[], b"2").unwrap();
    assert_eq!(b.get(c[0], &k1, &[]).unwrap(), Some(&b"1"[..]));
    assert_eq!(b.get(c[0], &k2, &[]).unwrap(), Some(&b"2"[..]));
}

pub fn scan_yields_user_keys_in_order<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    let k = key(b"k");
    for u in [&b"b"[..], b"\xff", b"a", b"", b"ab", b"\x00"] {
        b.put(c[2], &k, u, u).unwrap();
    }
    b.put(c[2], &key(b"other"), b"0", b"x").unwrap();
    let got: Vec<Vec<u8>> = b
        .scan(c[2], &k)
        .unwrap()
        .map(|e| {
            let (u, v) = e.unwrap();
            assert_eq!(u, v);
            u.to_vec()
        })
        .collect();
    let want: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"\x00".to_vec(),
        b"a".to_vec(),
        b"ab".to_vec(),
        b"b".to_vec(),
        b"\xff".to_vec(),
    ];
    assert_eq!(got, want);
}

pub fn scan_of_a_value_state_yields_its_value<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"v").unwrap();
    let got: Vec<_> = b
        .scan(c[0], &key(b"k"))
        .unwrap()
        .map(|e| e.map(|(u, v)| (u.to_vec(), v.to_vec())).unwrap())
        .collect();
    assert_eq!(got, vec![(Vec::new(), b"v".to_vec())]);
    assert_eq!(b.scan(c[0], &key(b"none")).unwrap().count(), 0);
}

pub fn count_and_read_agree_with_scan_and_get<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    let k = key(b"k");
    for i in 0u8..200 {
        b.put(c[2], &k, &[i], &[i; 3]).unwrap();
    }
    b.put(c[2], &key(b"other"), b"0", b"x").unwrap();
    b.delete(c[2], &k, &[7]).unwrap();
    assert_eq!(b.count(c[2], &k).unwrap(), 199);
    assert_eq!(
        b.count(c[2], &k).unwrap(),
        b.scan(c[2], &k).unwrap().count()
    );
    assert_eq!(b.count(c[2], &key(b"none")).unwrap(), 0);
    // A scan read part of the way stops there.
    let first: Vec<Vec<u8>> = b
        .scan(c[2], &k)
        .unwrap()
        .take(3)
        .map(|e| e.unwrap().0.to_vec())
        .collect();
    assert_eq!(first, vec![vec![0], vec![1], vec![2]]);
    for u in [&[5u8][..], &[7], &[250]] {
        let mut seen = None;
        b.read(c[2], &k, u, &mut |v| {
            seen = v.map(<[u8]>::to_vec);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.as_deref(), b.get(c[2], &k, u).unwrap(), "{u:?}");
    }
    // The reader's error is the read's.
    let err = b
        .read(c[2], &k, &[5], &mut |_| {
            Err(Error::Backend {
                backend: "reader",
                message: "refused".into(),
            })
        })
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
}

pub fn delete_key_removes_every_user_key<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    let k = key(b"k");
    for i in 0u8..50 {
        b.put(c[2], &k, &[i], &[i]).unwrap();
    }
    b.put(c[2], &key(b"j"), b"x", b"keep").unwrap();
    b.delete_key(c[2], &k).unwrap();
    assert_eq!(b.scan(c[2], &k).unwrap().count(), 0);
    assert_eq!(b.get(c[2], &key(b"j"), b"x").unwrap(), Some(&b"keep"[..]));
    b.put(c[0], &k, &[], b"v").unwrap();
    b.delete_key(c[0], &k).unwrap();
    assert_eq!(b.get(c[0], &k, &[]).unwrap(), None);
}

/// Namespaced value and list states: one value per key and namespace, listed by `scan` in
/// namespace byte order, counted, merged, and removed one by one and with their key.
pub fn namespaced_states_keep_a_value_per_namespace<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    let (value, list) = (c[4], c[5]);
    let (k, other) = (key(b"k"), key(b"other"));
    // Namespaces of several lengths, written out of order.
    let spaces: [&[u8]; 3] = [b"w2", b"w10", b"w1!"];
    for (i, ns) in spaces.iter().enumerate() {
        b.put(value, &k, ns, &[i as u8; 8]).unwrap();
        b.merge(list, &k, ns, &frames(&[&[i as u8]])).unwrap();
    }
    b.put(value, &other, b"w2", b"other").unwrap();
    for (i, ns) in spaces.iter().enumerate() {
        assert_eq!(b.get(value, &k, ns).unwrap(), Some(&[i as u8; 8][..]));
    }
    b.merge(list, &k, b"w2", &frames(&[b"again"])).unwrap();
    let mut list_bytes = Vec::new();
    b.read(list, &k, b"w2", &mut |v| {
        list_bytes = v.unwrap_or_default().to_vec();
        Ok(())
    })
    .unwrap();
    assert_eq!(list_bytes, frames(&[&[0], b"again"]));

    let listed = |b: &B, k: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        b.scan(value, k)
            .unwrap()
            .map(|e| e.map(|(n, v)| (n.to_vec(), v.to_vec())).unwrap())
            .collect()
    };
    let mut want: Vec<(Vec<u8>, Vec<u8>)> = spaces
        .iter()
        .enumerate()
        .map(|(i, ns)| (ns.to_vec(), vec![i as u8; 8]))
        .collect();
    want.sort();
    assert_eq!(listed(&b, &k), want);
    assert_eq!(b.count(value, &k).unwrap(), 3);
    assert_eq!(b.count(value, &other).unwrap(), 1);
    assert_eq!(b.count(list, &k).unwrap(), 3);

    // One namespace, then the whole key.
    b.delete(value, &k, b"w10").unwrap();
    assert_eq!(b.get(value, &k, b"w10").unwrap(), None);
    want.retain(|(ns, _)| ns != b"w10");
    assert_eq!(listed(&b, &k), want);
    b.delete_key(value, &k).unwrap();
    assert_eq!(listed(&b, &k), vec![]);
    assert_eq!(b.get(value, &k, b"w2").unwrap(), None);
    assert_eq!(b.get(value, &other, b"w2").unwrap(), Some(&b"other"[..]));
    // The key's lists are another state: untouched.
    assert_eq!(b.count(list, &k).unwrap(), 3);

    // Written again after the delete, the key lists what it holds now.
    b.put(value, &k, b"w3", b"new").unwrap();
    assert_eq!(listed(&b, &k), vec![(b"w3".to_vec(), b"new".to_vec())]);
    let mut entries = BTreeMap::new();
    entries.insert((other.clone(), b"w2".to_vec()), b"other".to_vec());
    entries.insert((k.clone(), b"w3".to_vec()), b"new".to_vec());
    assert_eq!(dump(&b, value), entries);
    assert_eq!(dump(&b, list).len(), 3);
}

pub fn for_each_entry_visits_every_entry_once<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    let mut want = BTreeMap::new();
    for i in 0u32..300 {
        let k = key(&i.to_be_bytes());
        b.put(c[2], &k, &[1], &i.to_le_bytes()).unwrap();
        b.put(c[2], &k, &[2], b"two").unwrap();
        want.insert((k.clone(), vec![1]), i.to_le_bytes().to_vec());
        want.insert((k, vec![2]), b"two".to_vec());
    }
    b.delete(c[2], &key(&7u32.to_be_bytes()), &[2]).unwrap();
    want.remove(&(key(&7u32.to_be_bytes()), vec![2]));
    assert_eq!(dump(&b, c[2]), want);
}

pub fn visitor_error_stops_the_visit<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    for i in 0u8..10 {
        b.put(c[0], &key(&[i]), &[], b"v").unwrap();
    }
    let mut seen = 0;
    let r = b.for_each_entry(c[0], &mut |_, _, _| {
        seen += 1;
        Err(Error::Backend {
            backend: "visitor",
            message: "stop".into(),
        })
    });
    assert!(matches!(
        r,
        Err(Error::Backend {
            backend: "visitor",
            ..
        })
    ));
    assert_eq!(seen, 1);
}

pub fn clear_state_removes_only_that_state<B: StateBackend>(
    mut b: B,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    for i in 0u8..20 {
        b.put(c[0], &key(&[i]), &[], b"v").unwrap();
        b.put(c[2], &key(&[i]), b"u", b"m").unwrap();
    }
    b.clear_state(c[2]).unwrap();
    assert!(dump(&b, c[2]).is_empty());
    assert_eq!(dump(&b, c[0]).len(), 20);
}

pub fn register_is_idempotent<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    b.put(c[0], &key(b"k"), &[], b"v").unwrap();
    let again = b.register(op, &op.states[0]).unwrap();
    assert_eq!(again, c[0]);
    assert_eq!(b.get(again, &key(b"k"), &[]).unwrap(), Some(&b"v"[..]));
    let another = OperatorDescriptor {
        name: "another-operator",
        ..*op
    };
    let other = b.register(&another, &op.states[0]).unwrap();
    assert_ne!(other, c[0]);
}

pub fn unknown_state_is_an_error<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let _ = register_all(&mut b, op);
    let bogus = StateId(9_999);
    assert!(matches!(
        b.get(bogus, &key(b"k"), &[]),
        Err(Error::UnknownState { .. })
    ));
    assert!(matches!(
        b.put(bogus, &key(b"k"), &[], b"v"),
        Err(Error::UnknownState { .. })
    ));
    assert!(b.scan(bogus, &key(b"k")).is_err());
    assert!(b.for_each_entry(bogus, &mut |_, _, _| Ok(())).is_err());
}

pub fn large_values_roundtrip<B: StateBackend>(mut b: B, op: &'static OperatorDescriptor) {
    let c = register_all(&mut b, op);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    b.put(c[0], &key(b"big"), &[], &big).unwrap();
    assert_eq!(b.get(c[0], &key(b"big"), &[]).unwrap(), Some(&big[..]));
}

/// Fills every state of `op`, writes a snapshot, restores it into `fresh` and compares.
pub fn snapshot_roundtrips<B: Snapshots, F: Snapshots>(
    mut b: B,
    mut fresh: F,
    op: &'static OperatorDescriptor,
) {
    let c = register_all(&mut b, op);
    for i in 0u32..2_000 {
        let k = key(&i.to_be_bytes());
        b.put(c[0], &k, &[], &i.to_le_bytes()).unwrap();
        if i % 3 == 0 {
            b.merge(c[1], &k, &[], &frames(&[b"xy"])).unwrap();
        }
        if i % 5 == 0 {
            for u in 0u8..4 {
                b.put(c[2], &k, &[u], &[u; 9]).unwrap();
            }
        }
        if i % 7 == 0 {
            b.put(c[4], &k, b"ns-1", &i.to_le_bytes()).unwrap();
            b.put(c[4], &k, b"ns-2", &[7; 8]).unwrap();
            b.merge(c[5], &k, b"ns-1", &frames(&[b"xy", b"z"])).unwrap();
        }
    }
    let mut bytes = Vec::new();
    let path = std::path::Path::new("conformance.snap");
    let range = KeyGroupRange::all(op.max_parallelism);
    let summary = write_operator(
        &b,
        op,
        &c,
        range,
        SnapshotOptions {
            compression: true,
            block_size: 4096,
        },
        path,
        &mut bytes,
    )
    .unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.entries, 2_000 + 667 + 400 * 4 + 286 * 3);
    let reader = SnapshotReader::parse(path, &bytes).unwrap();
    let cf = register_all(&mut fresh, op);
    fresh
        .put(cf[0], &key(b"stale"), &[], b"gone after restore")
        .unwrap();
    restore_operator(&reader, &mut fresh, op, &cf, range).unwrap();
    for (i, (&from, &to)) in c.iter().zip(&cf).enumerate() {
        assert_eq!(dump(&b, from), dump(&fresh, to), "state {i}");
    }
    // Same content, same bytes, whatever the backend.
    let mut again = Vec::new();
    write_operator(
        &fresh,
        op,
        &cf,
        range,
        SnapshotOptions {
            compression: true,
            block_size: 4096,
        },
        path,
        &mut again,
    )
    .unwrap();
    assert_eq!(bytes, again);
}

/// A timer state through the backend contract: a set of `(domain, timestamp, namespace)` per
/// key (registering twice leaves one), listed per key in user-key order, counted, read,
/// deleted one by one and per key, visited whole, beside other states and keys. Backends that
/// store timers in a layout of their own (RocksDB in time order, the heap as a queue) must
/// still keep this contract.
pub fn timer_states_hold_a_set_of_timers_per_key<B: StateBackend>(
    mut b: B,
    _: &'static OperatorDescriptor,
) {
    use crate::model::key::EncodeKey;
    use std::collections::BTreeSet;

    let c = register_all(&mut b, &TIMER_OPERATOR);
    let (value, timers) = (c[0], c[1]);
    let timer = |tag: u8, ts: i64, ns: &[u8]| {
        let mut u = vec![tag];
        ts.encode_key(&mut u);
        u.extend_from_slice(ns);
        u
    };
    // A key whose length takes two bytes in a length prefix, and two short ones.
    let keys = [key(b"k"), key(b"other"), key(&[7u8; 300])];
    let mut model: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        let at: [(u8, i64, &[u8]); 6] = [
            (0, 50, b"a"),
            (0, -3, b""),
            (1, 7, b"zz"),
            (0, 50, b"b"),
            (0, 1 << 40, b"a"),
            (1, -(1 << 40), b"a"),
        ];
        for (tag, ts, ns) in at {
            let u = timer(tag, ts + i as i64, ns);
            b.put(timers, k, &u, &[]).unwrap();
            // A second registration leaves one timer.
            b.put(timers, k, &u, &[]).unwrap();
            model.entry(k.clone()).or_default().insert(u);
        }
    }
    b.put(value, &keys[0], &[], b"v").unwrap();
    let check = |b: &B, model: &BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>| {
        for k in &keys {
            let want: Vec<Vec<u8>> = model
                .get(k)
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default();
            let listed: Vec<Vec<u8>> = b
                .scan(timers, k)
                .unwrap()
                .map(|e| {
                    let (u, v) = e.unwrap();
                    assert!(v.is_empty());
                    u.to_vec()
                })
                .collect();
            assert_eq!(listed, want, "the timers of {k:?} in user-key order");
            assert_eq!(b.count(timers, k).unwrap(), want.len());
            for u in &want {
                assert_eq!(b.get(timers, k, u).unwrap(), Some(&[][..]));
            }
        }
        let mut all = BTreeSet::new();
        b.for_each_entry(timers, &mut |k, u, v| {
            assert!(v.is_empty());
            assert!(all.insert((k.to_vec(), u.to_vec())), "visited twice");
            Ok(())
        })
        .unwrap();
        let want_all: BTreeSet<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .flat_map(|(k, s)| s.iter().map(move |u| (k.clone(), u.clone())))
            .collect();
        assert_eq!(all, want_all);
    };
    check(&b, &model);
    assert_eq!(b.get(timers, &keys[0], &timer(0, 51, b"a")).unwrap(), None);
    b.release_reads();

    // One timer out; deleting a timer that is not there does nothing.
    let gone = timer(0, 50, b"a");
    b.delete(timers, &keys[0], &gone).unwrap();
    b.delete(timers, &keys[0], &timer(0, 999, b"q")).unwrap();
    if let Some(s) = model.get_mut(&keys[0]) {
        s.remove(&gone);
    }
    check(&b, &model);
    assert_eq!(b.get(timers, &keys[0], &gone).unwrap(), None);
    b.release_reads();

    // A key's timers out: the other keys' timers and the other state stay.
    b.delete_key(timers, &keys[2]).unwrap();
    model.remove(&keys[2]);
    check(&b, &model);
    assert_eq!(b.get(value, &keys[0], &[]).unwrap(), Some(&b"v"[..]));
    b.release_reads();

    // Registered again after the key's timers were deleted.
    let again = timer(1, 5, b"x");
    b.put(timers, &keys[2], &again, &[]).unwrap();
    model.entry(keys[2].clone()).or_default().insert(again);
    check(&b, &model);
}

/// Expands to one `#[test]` per behaviour of the [`StateBackend`] contract, each on a backend
/// made by `$make`. With `ttl:` in front, every state declares a (one-year) TTL: for backends
/// that stamp values, such as [`TtlBackend`](crate::data::ttl::TtlBackend).
#[macro_export]
macro_rules! conformance_suite {
    (ttl: $make:expr) => {
        $crate::conformance_suite!(@all $make, &$crate::conformance::OPERATOR_TTL);
    };
    ($make:expr) => {
        $crate::conformance_suite!(@all $make, &$crate::conformance::OPERATOR);
    };
    (@all $make:expr, $op:expr) => {
        $crate::conformance_suite!(@tests $make, $op;
            missing_entry_is_none,
            put_then_get_returns_the_bytes,
            put_replaces,
            empty_values_are_stored,
            delete_removes_and_missing_delete_is_ok,
            hints_never_reach_another_entry,
            read_modify_write_updates_in_one_call,
            merge_appends_and_creates,
            states_are_independent,
            keys_that_prefix_each_other_are_distinct,
            scan_yields_user_keys_in_order,
            scan_of_a_value_state_yields_its_value,
            count_and_read_agree_with_scan_and_get,
            delete_key_removes_every_user_key,
            namespaced_states_keep_a_value_per_namespace,
            for_each_entry_visits_every_entry_once,
            visitor_error_stops_the_visit,
            clear_state_removes_only_that_state,
            register_is_idempotent,
            unknown_state_is_an_error,
            large_values_roundtrip,
            timer_states_hold_a_set_of_timers_per_key,
        );
        #[test]
        fn snapshot_roundtrips() {
            $crate::conformance::snapshot_roundtrips($make, $make, $op);
        }
    };
    (@tests $make:expr, $op:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::conformance::$name($make, $op);
            }
        )*
    };
}
