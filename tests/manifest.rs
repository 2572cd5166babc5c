//! `Operator::manifest()`: every state described without a backend, as JSON.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use statewright::OperatorManifest;
use statewright::prelude::*;

#[derive(StatefulOperator, Default)]
#[operator(name = "carts", key = String, max_parallelism = 64)]
struct Carts {
    #[state(
        name = "items",
        ttl = "1h",
        update = "on_read_and_write",
        time = "event"
    )]
    by_sku: MapState<u32, u16>,
    #[state(reduce = max)]
    largest: ReducingState<i64>,
    history: ListState<(u32, i64)>,
}

#[test]
fn the_manifest_describes_every_state_without_a_backend() {
    let m = Carts::manifest();
    let want = r#"{
  "operator": "carts",
  "key_type": "String",
  "key_schema": {
    "primitive": "String"
  },
  "key_fingerprint": 9401058753934243835,
  "max_parallelism": 64,
  "states": [
    {
      "name": "items",
      "kind": "MapState",
      "value_type": "u16",
      "user_key_type": "u32",
      "value_schema": {
        "primitive": "u16"
      },
      "value_fingerprint": 15297344762365278345,
      "user_key_schema": {
        "primitive": "u32"
      },
      "version": 1,
      "ttl": {
        "ttl_ms": 3600000,
        "update": "on_read_and_write",
        "visibility": "never_return_expired",
        "time": "event"
      }
    },
    {
      "name": "largest",
      "kind": "ReducingState",
      "value_type": "i64",
      "value_schema": {
        "primitive": "i64"
      },
      "value_fingerprint": 12832283673033603360,
      "version": 1
    },
    {
      "name": "history",
      "kind": "ListState",
      "value_type": "(u32, i64)",
      "value_schema": {
        "tuple": [
          {
            "primitive": "u32"
          },
          {
            "primitive": "i64"
          }
        ]
      },
      "value_fingerprint": 4003880320551834777,
      "version": 1
    }
  ]
}"#;
    assert_eq!(m.to_json(), want);
    let back: OperatorManifest = serde_json::from_str(want).unwrap();
    assert_eq!(back, m);
}
