"""Agent-memory benchmarks: the synthetic long-horizon timeline, LoCoMo evidence recall, and the speed
and memory of the store at 10k and 100k memories for each vector index.

    OMP_NUM_THREADS=1 python benchmarks/bench_agent_memory.py timeline [--seeds 0 1 2] [--page memory.html]
    OMP_NUM_THREADS=1 python benchmarks/bench_agent_memory.py locomo PATH/locomo10.json [--embedder minilm]
    OMP_NUM_THREADS=1 python benchmarks/bench_agent_memory.py speed [--sizes 10000 100000] [--indexes exact faiss hnsw]

Each prints a table and writes its raw numbers as JSON under benchmarks/results/ (`--out` to change).
Not a test: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

RESULTS = Path(__file__).parent / "results"

POLICIES = [   # (label, policy, settings): every bounded policy at the same capacity per user
    ("none (unbounded)", "none", {}),
    ("fifo, cap 64", "fifo", {"capacity": 64}),
    ("ebbinghaus, cap 64", "ebbinghaus", {"capacity": 64}),
    ("ebbinghaus, published form, cap 64", "ebbinghaus_published", {"capacity": 64}),
    ("mark, cap 64", "mark", {"capacity": 64}),
    ("think_in_memory, cap 64", "think_in_memory", {"capacity": 64}),
]


def _register_published() -> None:
    """MemoryBank's published curve as a policy, only for this comparison (never registered in the library)."""
    from palimpsest.memory.policies.ebbinghaus import Ebbinghaus, published_retention
    from palimpsest.memory.registries import MEMORY_POLICIES

    if "ebbinghaus_published" in MEMORY_POLICIES:
        return

    @MEMORY_POLICIES.register("ebbinghaus_published", summary="benchmark only: exp(-t / 5*S) as published")
    class Published(Ebbinghaus):
        name = "ebbinghaus_published"

        def retention(self, memory, now):
            return published_retention(memory.days_since_recall(now), memory.strength, self.config.scale_days)


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def timeline(args) -> dict:
    from palimpsest.memory.timeline import TimelineSettings, run_timeline
    _register_published()
    rows = []
    for label, policy, settings in POLICIES:
        for seed in args.seeds:
            r = run_timeline(policy, settings, TimelineSettings(seed=seed, users=args.users, days=args.days))
            r["label"] = label
            rows.append(r)
            print(f"  {label:<36} seed {seed}: rehearsed {r['rehearsed_recall']:.3f}  old unrehearsed "
                  f"{r['old_unrehearsed_recall']:.3f}  recent {r['recent_recall']:.3f}  size {r['size']:.1f}  "
                  f"{r['seconds']:.1f} s", flush=True)
    print(f"\n{'policy':<36} {'rehearsed':>15} {'old unrehearsed':>17} {'recent':>15} {'size/user':>10}")
    for label, _, _ in POLICIES:
        group = [r for r in rows if r["label"] == label]
        cells = [mean_std([r[k] for r in group]) for k in ("rehearsed_recall", "old_unrehearsed_recall",
                                                           "recent_recall", "size")]
        print(f"{label:<36} " + " ".join(f"{m:>9.3f} ± {s:.3f}" if i < 3 else f"{m:>10.1f}"
                                          for i, (m, s) in enumerate(cells)))
    if args.page:
        from palimpsest.report.agent_memory import write_memory_page
        settings = TimelineSettings(users=args.users, days=args.days)
        notes = (f"{settings.users} users x {settings.days} days x {settings.facts_per_day} facts a day; "
                 f"{settings.rehearse_fraction:.0%} rehearsed every {settings.rehearse_every} days; recall@"
                 f"{settings.k} at the last day; old = at least {settings.old_days} days old; recent = the last "
                 f"{settings.recent_days} days; seeds {list(args.seeds)}; hybrid retrieval, hashing embedder.")
        print(f"page: {write_memory_page(args.page, rows, notes)}")
    return {"rows": rows}


def locomo(args) -> dict:
    from palimpsest.memory.locomo import evidence_recall, load_locomo
    conversations = load_locomo(args.path)
    started = time.perf_counter()
    result = evidence_recall(conversations, ks=tuple(args.k), embedder=args.embedder)
    result["seconds"] = time.perf_counter() - started
    result["conversations"] = len(conversations)
    result["turns"] = sum(len(c.turns) for c in conversations)
    print(f"{len(conversations)} conversations, {result['turns']} turns, {result['questions']} questions with "
          f"evidence; embedder {args.embedder}")
    print(f"{'retriever':<10} " + " ".join(f"{'recall@' + str(k):>10}" for k in args.k))
    for r, by_k in result["recall"].items():
        print(f"{r:<10} " + " ".join(f"{by_k[k]:>10.3f}" for k in args.k))
    return result


WORDS = ("apple river stone cloud piano garden lamp coffee train window paper silver forest candle mirror "
         "ticket violin harbor tiger orange basket pencil rocket winter summer castle bridge engine marble "
         "planet bottle jacket wallet camera doctor parrot ladder button cotton desert meadow saddle").split()


def synthetic_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"user {rng.randrange(1000)} said the {rng.choice(WORDS)} {rng.choice(WORDS)} number {i} is "
            f"{rng.choice(WORDS)} {rng.randrange(10000)}" for i in range(n)]


def _percentiles(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"p50_ms": statistics.median(ms), "p95_ms": ms[int(0.95 * (len(ms) - 1))], "mean_ms": sum(ms) / len(ms)}


def speed(args) -> dict:
    """Each (size, index) in its own process, so that its peak memory is its own."""
    import subprocess
    out = []
    for size in args.sizes:
        for index in args.indexes:
            with tempfile.TemporaryDirectory() as tmp:
                one = Path(tmp) / "one.json"
                cmd = [sys.executable, __file__, "speed-one", "--size", str(size), "--index", index, "--queries",
                       str(args.queries), "--single", str(args.single), "--batch", str(args.batch), "--out", str(one)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    print(done.stderr[-3000:])
                    raise SystemExit(f"speed-one {size} {index} failed")
                row = json.loads(one.read_text())["row"]
            out.append(row)
            print(f"{size:>7} {index:<6} build {row['build_seconds']:6.1f} s ({row['add_many_per_second']:7.0f}/s)  "
                  f"add one p50 {row['add_one']['p50_ms']:.2f} ms  search p50 dense {row['search_dense']['p50_ms']:.2f}"
                  f" / bm25 {row['search_bm25']['p50_ms']:.2f} / hybrid {row['search_hybrid']['p50_ms']:.2f} ms "
                  f"(p95 {row['search_hybrid']['p95_ms']:.2f}); one user hybrid "
                  f"{row['search_hybrid_one_user']['p50_ms']:.2f} ms; reinforcing hybrid "
                  f"{row['search_hybrid_reinforce']['p50_ms']:.2f} ms; index {row['index_bytes'] / 2**20:.1f} MiB, "
                  f"bm25 ~{row['bm25_bytes'] / 2**20:.1f} MiB, peak RSS +{row['peak_rss_delta_bytes'] / 2**20:.0f} "
                  f"MiB, file {row['file_bytes'] / 2**20:.0f} MiB; open {row['open_seconds']:.1f} s"
                  + (f"; dense recall@5 vs exact {row['dense_recall_at_5_vs_exact']:.3f}"
                     if "dense_recall_at_5_vs_exact" in row else ""), flush=True)
    return {"rows": out}


def _peak_rss() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def speed_one(args) -> dict:
    import numpy as np
    from palimpsest.memory import ExactIndex, MemoryStore
    size, index = args.size, args.index
    texts = synthetic_texts(size, seed=0)
    picked = random.Random(1).sample(range(size), args.queries)
    queries = [f"what is the {texts[i].split()[4]} {texts[i].split()[5]} number {texts[i].split()[7]}?"
               for i in picked]
    user_of = [f"u{(i // args.batch) % 100}" for i in range(size)]     # 100 users, one batch at a time
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _peak_rss()
        started = time.perf_counter()
        store = MemoryStore(Path(tmp) / "speed.sqlite", index=index, policy="none", synchronous="normal")
        for start in range(0, size, args.batch):          # one transaction per batch
            store.add_many(texts[start:start + args.batch], user_id=user_of[start])
        build = time.perf_counter() - started
        single = []
        for i in range(args.single):
            t0 = time.perf_counter()
            store.add(f"a single new memory number {i} about {WORDS[i % len(WORDS)]}", user_id=f"s{i}")
            single.append(time.perf_counter() - t0)
        row = {"size": size, "index": index, "build_seconds": build, "add_many_per_second": size / build,
               "add_one": _percentiles(single), "index_bytes": store.index.nbytes(), "bm25_bytes": store.bm25.nbytes()}
        for retriever in ("dense", "bm25", "hybrid"):
            store.search(queries[0], retriever=retriever, reinforce=False)      # warm
            times, scoped = [], []
            for q in queries:
                t0 = time.perf_counter()
                store.search(q, retriever=retriever, reinforce=False, limit=5)
                times.append(time.perf_counter() - t0)
            for q, i in list(zip(queries, picked))[:50]:
                t0 = time.perf_counter()
                hits = store.search(q, retriever=retriever, reinforce=False, limit=5, user_id=user_of[i])
                scoped.append(time.perf_counter() - t0)
                assert hits, "a scoped search found nothing"
            row[f"search_{retriever}"] = _percentiles(times)
            row[f"search_{retriever}_one_user"] = _percentiles(scoped)
        times = []
        for q in queries[:50]:
            t0 = time.perf_counter()
            store.search(q, limit=5)            # hybrid, reinforcing what it returns (a write)
            times.append(time.perf_counter() - t0)
        row["search_hybrid_reinforce"] = _percentiles(times)
        if index != "exact":        # recall@5 against exact search (ties at the 5th score count as hits)
            exact = ExactIndex(store.embedder.dim)
            rows = store.conn.execute("SELECT n, vector FROM memories").fetchall()
            exact.add(np.asarray([r[0] for r in rows]), np.stack([np.frombuffer(r[1], np.float32) for r in rows]))
            hits = 0
            for vector in store.embedder.embed(queries):
                fifth = float(exact.search(vector, 5)[1][-1])
                hits += min(5, int((store.index.search(vector, 5)[1] >= fifth - 1e-5).sum()))
            row["dense_recall_at_5_vs_exact"] = hits / (5 * len(queries))
        row["peak_rss_delta_bytes"] = _peak_rss() - baseline
        store.close()
        row["file_bytes"] = sum(p.stat().st_size for p in Path(tmp).iterdir())
        t0 = time.perf_counter()
        MemoryStore(Path(tmp) / "speed.sqlite", index=index).close()
        row["open_seconds"] = time.perf_counter() - t0
    return {"row": row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("timeline")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--users", type=int, default=5)
    t.add_argument("--days", type=int, default=60)
    t.add_argument("--page", type=Path, default=None, help="write the HTML page (curves + recalls) here")
    lo = sub.add_parser("locomo")
    lo.add_argument("path", type=Path)
    lo.add_argument("--k", type=int, nargs="+", default=[1, 5, 10])
    lo.add_argument("--embedder", default="hashing")
    s = sub.add_parser("speed")
    s.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    s.add_argument("--indexes", nargs="+", default=["exact", "faiss", "hnsw"])
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--single", type=int, default=100, help="single adds timed (one transaction each)")
    s.add_argument("--batch", type=int, default=1000)
    one = sub.add_parser("speed-one", help="one size and index (what `speed` runs in a subprocess)")
    one.add_argument("--size", type=int, required=True)
    one.add_argument("--index", required=True)
    one.add_argument("--queries", type=int, default=200)
    one.add_argument("--single", type=int, default=100)
    one.add_argument("--batch", type=int, default=1000)
    for p in (t, lo, s, one):
        p.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)
    print(f"python {platform.python_version()}, torch threads {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, {platform.processor() or platform.machine()}")
    result = {"timeline": timeline, "locomo": locomo, "speed": speed, "speed-one": speed_one}[args.what](args)
    result["command"] = " ".join(sys.argv)
    out = args.out or RESULTS / f"agent_memory_{args.what}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(f"raw numbers: {out}")


if __name__ == "__main__":
    main()
