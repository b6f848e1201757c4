"""Chunked vs per-token path of every associative-memory preset (palimpsest.memory), one CPU thread.

Both paths compute the same function (tests/memory/test_associative.py checks them equal); this
measures what the chunked path saves. For every preset: a MemoryLayer of width 64 with 2 heads, a
batch of 2 sequences of 1024 vectors, chunk size 64, the median wall time of the forward pass and of
forward + backward over `--reps` repetitions, and the largest absolute difference between the two
paths' outputs (float32). `--clock process` times CPU seconds of this process (time.process_time)
instead of wall seconds: steadier when other jobs share the cores.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py [--reps 3] [--seq 1024] [--chunk 64] [--clock wall|process]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from palimpsest.memory import create_memory, preset_names


def timed(fn, reps, clock=time.perf_counter):
    times = []
    for _ in range(reps):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--presets", default=",".join(preset_names()))
    parser.add_argument("--clock", choices=("wall", "process"), default="wall")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"threads {torch.get_num_threads()}, flush denormal on, seq {args.seq}, chunk {args.chunk}, "
          f"batch {args.batch}, width 64, 2 heads, {args.reps} reps (median), {args.clock} clock")
    rows = []
    for name in args.presets.split(","):
        torch.manual_seed(0)
        layer = create_memory(name, 64, heads=2, chunk_size=args.chunk)
        x = torch.randn(args.batch, args.seq, 64, requires_grad=True)
        row = {"preset": name}
        with torch.no_grad():
            outs = {p: layer(x, path=p)[0] for p in ("chunked", "recurrent")}
        row["max_abs_diff"] = float((outs["chunked"] - outs["recurrent"]).abs().max())
        for path in ("chunked", "recurrent"):
            def forward():
                with torch.no_grad():
                    layer(x, path=path)

            def forward_backward():
                layer.zero_grad()
                y, _ = layer(x, path=path)
                y.pow(2).mean().backward()
            row[f"{path}_forward_s"] = timed(forward, args.reps, clock)
            row[f"{path}_forward_backward_s"] = timed(forward_backward, args.reps, clock)
        row["speedup_forward"] = row["recurrent_forward_s"] / row["chunked_forward_s"]
        row["speedup_forward_backward"] = row["recurrent_forward_backward_s"] / row["chunked_forward_backward_s"]
        rows.append(row)
        print(f"{name:17s} fwd {row['chunked_forward_s']:.3f} s vs {row['recurrent_forward_s']:.3f} s "
              f"({row['speedup_forward']:.1f}x)  fwd+bwd {row['chunked_forward_backward_s']:.3f} s vs "
              f"{row['recurrent_forward_backward_s']:.3f} s ({row['speedup_forward_backward']:.1f}x)  "
              f"max |diff| {row['max_abs_diff']:.1e}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
