//! Top N items per category with `MapState`: units sold per item, kept per category, ranked
//! when asked.
//!
//! A `MapState<String, u64>` per category holds the units sold of every item. An update touches
//! one entry (`update` on the map: a read and a write of that entry, whatever the map's size);
//! a ranking iterates the category's entries, in the backend's user-key order, and keeps the
//! N largest. On RocksDB the entries of a category are one contiguous key range, so the
//! iteration is a prefix scan.
//!
//! ```text
//! cargo run --example top_n -- [--purchases N] [--n 3]
//! cargo run --example top_n --features rocksdb -- --backend rocksdb
//! ```

use std::collections::HashMap;

use statewright::prelude::*;

// ANCHOR: operator
/// Units sold per item, per category.
#[derive(StatefulOperator, Default)]
#[operator(name = "top-n", key = u32)]
pub struct TopN {
    /// Units sold, by item.
    sold: MapState<String, u64>,
    /// How many items a ranking holds.
    n: usize,
}

/// A purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// The category (the key).
    pub category: u32,
    /// The item.
    pub item: String,
    /// Units bought.
    pub units: u64,
}

fn record<B: AnyBackend>(op: &mut Bound<TopN, B>, p: &Purchase) -> statewright::Result<()> {
    op.key(&p.category)?
        .sold()
        .update(p.item.as_str(), |units| units.unwrap_or(0) + p.units)
}

/// Items with their units sold, most first.
pub type Ranking = Vec<(String, u64)>;

/// The `n` items of `category` with the most units sold, most first (ties by name).
pub fn ranking<B: AnyBackend>(
    op: &mut Bound<TopN, B>,
    category: u32,
) -> statewright::Result<Ranking> {
    let mut st = op.key(&category)?;
    let n = st.n;
    let mut top: Vec<(String, u64)> = Vec::with_capacity(n + 1);
    for entry in st.sold().entries()? {
        let (item, units) = entry?;
        let units = units.to_native();
        // Keep the n largest so far, sorted; a new entry goes in only if it beats the last.
        let at = top.partition_point(|(i, u)| {
            (*u, std::cmp::Reverse(i.as_str())) > (units, std::cmp::Reverse(item.as_str()))
        });
        if at < n {
            top.insert(at, (item, units));
            top.truncate(n);
        }
    }
    Ok(top)
}
// ANCHOR_END: operator

/// The `i`-th purchase: categories uniform, items skewed (a few sell most).
pub fn purchase(i: u64) -> Purchase {
    let mut z = 0x7019_u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64) / ((1u64 << 53) as f64);
    Purchase {
        category: (z % 8) as u32,
        item: format!("item-{}", (u * u * u * 500.0) as u32),
        units: 1 + (z >> 60),
    }
}

/// The same ranking from a plain `HashMap`, for comparison.
pub fn reference(purchases: u64, n: usize) -> HashMap<u32, Ranking> {
    let mut sold: HashMap<u32, HashMap<String, u64>> = HashMap::new();
    for i in 0..purchases {
        let p = purchase(i);
        *sold
            .entry(p.category)
            .or_default()
            .entry(p.item)
            .or_default() += p.units;
    }
    sold.into_iter()
        .map(|(c, items)| {
            let mut items: Vec<(String, u64)> = items.into_iter().collect();
            items.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            items.truncate(n);
            (c, items)
        })
        .collect()
}

/// Processes `purchases` purchases on `backend` and ranks every category.
pub fn run<B: AnyBackend>(
    purchases: u64,
    n: usize,
    backend: B,
) -> statewright::Result<Vec<(u32, Ranking)>> {
    let mut op = TopN {
        n,
        ..Default::default()
    }
    .bind(backend)?;
    for i in 0..purchases {
        record(&mut op, &purchase(i))?;
    }
    (0..8).map(|c| Ok((c, ranking(&mut op, c)?))).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut purchases, mut n, mut backend) = (1_000_000u64, 3usize, "heap".to_owned());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--purchases" => purchases = value()?.parse()?,
            "--n" => n = value()?.parse()?,
            "--backend" => backend = value()?,
            other => {
                return Err(format!(
                    "unknown argument `{other}`; use --purchases N, --n N, --backend heap|rocksdb"
                )
                .into());
            }
        }
    }
    let start = std::time::Instant::now();
    let rankings = match backend.as_str() {
        "heap" => run(purchases, n, HeapBackend::new())?,
        #[cfg(feature = "rocksdb")]
        "rocksdb" => run(
            purchases,
            n,
            statewright::RocksDbBackend::open_temporary(statewright::RocksDbOptions::default())?,
        )?,
        #[cfg(not(feature = "rocksdb"))]
        "rocksdb" => {
            return Err("this build has no RocksDB backend; run with `--features rocksdb`".into());
        }
        other => return Err(format!("unknown backend `{other}`").into()),
    };
    let secs = start.elapsed().as_secs_f64();
    println!(
        "top_n on the {backend} backend: {purchases} purchases in {secs:.2} s ({:.0} per second)",
        purchases as f64 / secs
    );
    let expected = reference(purchases, n);
    let mut matched = true;
    for (category, top) in &rankings {
        let items: Vec<String> = top.iter().map(|(i, u)| format!("{i} ({u})")).collect();
        println!("  category {category}: {}", items.join(", "));
        matched &= expected.get(category).map_or(top.is_empty(), |e| e == top);
    }
    println!(
        "  equal to a plain HashMap's ranking: {}",
        if matched { "yes" } else { "NO" }
    );
    if matched {
        Ok(())
    } else {
        Err("the ranking differs from the reference".into())
    }
}
