//! `statebench --backend heap,rocksdb --workload value_rmw --K 100000 --N 1000000 --seed 42`
//!
//! Runs the workloads of `WORKLOAD.md` and prints one line per result:
//! `statewright <backend> <workload> K=<K> N=<N> ops_per_s=<f> secs=<f> checksum=<u64>
//! verify=<u64> [peak_rss=<bytes>] [vs_raw=<f>]`: the peak resident set size of the process
//! (when it ran one workload on one backend), and the throughput over the same run's raw
//! baseline (`raw-hashmap` for the heap backends, `raw-rocksdb` for the RocksDB ones) when it
//! ran too.

use statewright_bench::{BACKENDS, Params, WORKLOADS, read_path, run, snapshot, zero_copy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut backends: Vec<String> = vec!["heap".into()];
    let mut workloads: Vec<String> = WORKLOADS.iter().map(|w| (*w).to_owned()).collect();
    workloads.push("snapshot".into());
    let mut p = Params {
        k: 1_000_000,
        n: 10_000_000,
        seed: 42,
        m: 10,
    };
    let mut read_path_only = false;
    let mut dir: Option<std::path::PathBuf> = None;
    let mut store: Option<String> = None;
    let mut zero_copy_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let list = |v: String| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--backend" => backends = list(value()?),
            "--workload" => workloads = list(value()?),
            "--K" => p.k = value()?.parse()?,
            "--N" => p.n = value()?.parse()?,
            "--seed" => p.seed = value()?.parse()?,
            "--M" => p.m = value()?.parse()?,
            "--dir" => dir = Some(value()?.into()),
            "--store" => store = Some(value()?),
            "--read-path" => read_path_only = true,
            "--zero-copy" => zero_copy_only = true,
            "--help" | "-h" => {
                println!(
                    "statebench [--backend {},rocksdb-timers-in-memory (timer workloads)] [--workload {},timer_register,timer_fire,window_add,window_add_spread,job_value_rmw,snapshot,snapshot_store,large_state] [--K keys] [--N ops] [--seed s] [--M map-keys] [--dir scratch-dir] [--store URL (snapshot_store: s3://..., redis://...)] | --read-path | --zero-copy [--N reads]",
                    BACKENDS.join(","),
                    WORKLOADS.join(",")
                );
                return Ok(());
            }
            other => return Err(format!("unknown flag `{other}`; see --help").into()),
        }
    }
    if p.k == 0 || p.m == 0 {
        return Err("--K and --M must be positive".into());
    }
    if zero_copy_only {
        for (name, ns) in zero_copy(p.n)? {
            println!(
                "statewright value read_1KiB_{name} N={} ns_per_op={ns:.1}",
                p.n
            );
        }
        return Ok(());
    }
    if read_path_only {
        // Point reads of SST-resident values: in place vs copied vs raw.
        for (name, ns) in read_path(p.k, p.n)? {
            println!(
                "statewright rocksdb read_path_{name} K={} N={} ns_per_op={ns:.0}",
                p.k, p.n
            );
        }
        return Ok(());
    }
    if workloads.iter().any(|w| w == "large_state") {
        // RocksDB only, larger than the memory it is given; its own scratch directory.
        for line in statewright_bench::large::run(p, dir.as_deref())? {
            println!("{line}");
        }
        workloads.retain(|w| w != "large_state");
    }
    let mut measured = Vec::new();
    for backend in &backends {
        for workload in &workloads {
            if workload == "snapshot_store" {
                if backend.starts_with("raw-") {
                    continue;
                }
                for line in statewright_bench::store::run(backend, p, store.as_deref(), &[])? {
                    println!("{line}");
                }
                continue;
            }
            if workload == "snapshot" {
                if backend.starts_with("raw-") {
                    continue;
                }
                for line in snapshot::run(backend, p)? {
                    println!("{line}");
                }
                continue;
            }
            if statewright_bench::job::JOB_WORKLOADS.contains(&workload.as_str()) {
                measured.extend(statewright_bench::job::run(backend, p)?);
                continue;
            }
            if statewright_bench::timers::TIMER_WORKLOADS.contains(&workload.as_str()) {
                measured.extend(statewright_bench::timers::run(backend, workload, p)?);
                continue;
            }
            measured.extend(run(backend, workload, p)?);
        }
    }
    // Each line with its ratio to the same run's raw baseline, printed once all have run.
    statewright_bench::with_ratios(&mut measured);
    // The peak RSS is the process's: it says what one workload on one backend needs only when
    // the process ran nothing else (memory an earlier workload freed may stay with the
    // allocator, and the peak cannot be reset below it).
    if backends.len() != 1 || workloads.len() != 1 {
        for line in &mut measured {
            line.peak_rss = None;
        }
    }
    for line in &measured {
        println!("{line}");
    }
    Ok(())
}
