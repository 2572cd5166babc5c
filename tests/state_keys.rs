//! `#[derive(StateKey)]`: round trip, and byte order equals the derived `Ord`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use statewright::prelude::*;

#[derive(StateKey, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Account {
    region: u16,
    id: String,
    sub: Option<i32>,
}

#[derive(StateKey, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Route {
    Direct(u32),
    Via { hub: String, hops: u8 },
    Unknown,
}

#[derive(StateKey, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Pair<T>(T, u8);

fn account() -> impl Strategy<Value = Account> {
    (any::<u16>(), "[a-c\\x00]{0,4}", any::<Option<i32>>()).prop_map(|(region, id, sub)| Account {
        region,
        id,
        sub,
    })
}

fn route() -> impl Strategy<Value = Route> {
    prop_oneof![
        any::<u32>().prop_map(Route::Direct),
        ("[a-c]{0,3}", any::<u8>()).prop_map(|(hub, hops)| Route::Via { hub, hops }),
        Just(Route::Unknown),
    ]
}

fn check<K: StateKey + Ord + std::fmt::Debug>(a: &K, b: &K) {
    let (ea, eb) = (a.to_key_bytes(), b.to_key_bytes());
    assert_eq!(&K::from_key_bytes(&ea).unwrap(), a);
    assert_eq!(a.cmp(b), ea.cmp(&eb), "{a:?} vs {b:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn derived_struct_keys(a in account(), b in account()) {
        check(&a, &b);
    }

    #[test]
    fn derived_enum_keys(a in route(), b in route()) {
        check(&a, &b);
    }

    #[test]
    fn derived_generic_keys(a in any::<(i64, u8)>(), b in any::<(i64, u8)>()) {
        check(&Pair(a.0, a.1), &Pair(b.0, b.1));
    }

    #[test]
    fn garbage_never_decodes_into_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        let _ = Route::from_key_bytes(&bytes);
        let _ = Account::from_key_bytes(&bytes);
    }
}

#[test]
fn unknown_variant_is_a_typed_error() {
    let err = Route::from_key_bytes(&[0, 0, 0, 9]).unwrap_err();
    assert_eq!(
        err,
        statewright::KeyError::InvalidTag {
            type_name: "Route",
            tag: 9
        }
    );
}
