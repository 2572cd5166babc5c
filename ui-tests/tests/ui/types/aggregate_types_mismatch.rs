use statewright::prelude::*;

struct Mean;

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
        acc.0 as f64 / acc.1 as f64
    }
    fn merge(acc: &mut (i64, u64), other: (i64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

#[derive(StatefulOperator)]
#[operator(key = u64)]
struct Detector {
    #[state(aggregate = Mean)]
    mean: AggregatingState<i64, i64>,
}

fn main() {}
