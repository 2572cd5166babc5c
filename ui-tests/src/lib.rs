//! Generated code is lint-clean: this crate derives under the strictest lints a user may set,
//! and CI builds it with `clippy -D warnings` (which includes `clippy::pedantic` here).
//! The compile-fail and compile-pass cases live in `tests/ui/`.

#![deny(warnings, unused_qualifications, missing_docs, unreachable_pub)]
#![deny(clippy::pedantic)]

use statewright::prelude::*;

/// A payment.
#[statewright::value]
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// The amount in cents.
    pub amount_cents: i64,
    /// The merchant.
    pub merchant: u32,
}

/// A key with several parts.
#[derive(StateKey, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Account {
    /// Region number.
    pub region: u16,
    /// Account id within the region.
    pub id: String,
}

/// Adds amounts.
pub struct Total;

impl Aggregate for Total {
    type In = i64;
    type Acc = i64;
    type Out = i64;
    fn create() -> i64 {
        0
    }
    fn add(acc: &mut i64, v: &i64) {
        *acc += v;
    }
    fn result(acc: &i64) -> i64 {
        *acc
    }
    fn merge(acc: &mut i64, other: i64) {
        *acc += other;
    }
}

/// Every kind of state, with every attribute.
#[derive(StatefulOperator, Default)]
#[operator(name = "lint-clean", key = Account, max_parallelism = 64)]
pub struct LintClean {
    /// Whether the account was seen.
    #[state(ttl = "10m", update = "on_read_and_write")]
    pub seen: ValueState<bool>,
    /// Recent payments.
    pub payments: ListState<Payment>,
    /// Totals per merchant.
    #[state(name = "per-merchant")]
    pub per_merchant: MapState<u32, i64>,
    /// The largest payment.
    #[state(reduce = max)]
    pub largest: ReducingState<i64>,
    /// The sum of all payments.
    #[state(aggregate = Total)]
    pub total: AggregatingState<i64, i64>,
    /// A plain field.
    pub limit: i64,
}

/// Records a payment.
///
/// # Errors
///
/// Any state error.
pub fn record(
    op: &mut Bound<LintClean, HeapBackend>,
    account: &Account,
    payment: &Payment,
) -> statewright::Result<bool> {
    let mut st = op.key(account)?;
    st.seen().set(&true)?;
    st.payments().add(payment)?;
    st.per_merchant()
        .update(&payment.merchant, |v| v.unwrap_or(0) + payment.amount_cents)?;
    st.largest().add(&payment.amount_cents)?;
    st.total().add(&payment.amount_cents)?;
    Ok(st.total().get()?.unwrap_or(0) > st.limit)
}
