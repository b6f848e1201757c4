"""palimpsest's Titans memory beside titans-pytorch's NeuralMemory (lucidrains), one CPU thread.

titans-pytorch is NOT a palimpsest dependency: run this script with the Python of a separate virtual
environment that has it (see benchmarks/README.md):

    python3 -m venv /tmp/titans-venv
    /tmp/titans-venv/bin/pip install torch==2.13.0 titans-pytorch pydantic safetensors numpy pyyaml \
        scikit-learn rich typer matplotlib            # (torch first, pinned, so no CUDA build is pulled)
    PYTHONPATH=src OMP_NUM_THREADS=1 /tmp/titans-venv/bin/python benchmarks/bench_titans.py

1. Cross-check where the two define the same update. titans-pytorch with `chunk_size=1` and no
   `batch_size` takes every token's gradient at the weights the call started from, with per-token
   learning rate, momentum and decay; that is palimpsest's mini-batch rule with one chunk spanning the
   sequence. With the same 2-layer GELU MLP (no residual, no norm), the same initial weights and the
   same per-token keys, values and gates (read off titans-pytorch's own projections), the weights
   after the sequence and the reads through them must agree. titans-pytorch's loss is the mean over
   the width of the squared error, so its gradient is 2/d times ours: θ = lr · 2 / d.
2. Forward + backward time at the same sizes (width 64, 2 heads of 32, MLP expansion 4, batch 4,
   sequence 1024): titans-pytorch's NeuralMemory (chunk sizes 64 and 1) against palimpsest's `titans`
   preset (chunked path, chunk 64, and the per-token path). The two chunk-64 models are not the same
   function (titans-pytorch shares the gates within a chunk and takes every gradient at the call's
   starting weights; palimpsest has per-token gates and gradients at each chunk's start).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from palimpsest.memory import create_memory
from palimpsest.memory.associative import AssociativeMemory, MemoryConfig, MemoryState, memory_forward

from bench_memory import timed  # the same median-of-repetitions clock (this folder is on sys.path)


def cross_check(dim: int = 16, seq: int = 24, batch: int = 2) -> dict:
    from titans_pytorch import MemoryMLP, NeuralMemory
    torch.manual_seed(0)
    theirs = NeuralMemory(dim=dim, chunk_size=1, heads=1, model=MemoryMLP(dim, depth=2, expansion_factor=2.0),
                          pre_rmsnorm=False, mem_model_norm_add_residual=False, momentum=True,
                          default_step_transform_max_lr=1.0)
    x = torch.randn(batch, seq, dim)
    with torch.no_grad():
        updates, _ = theirs.store_memories(x, return_surprises=False)[:2]
        keys, values = theirs.to_keys(x), theirs.to_values(x)
        lr = theirs.adaptive_step_transform(theirs.to_adaptive_step(x)).view(batch, 1, seq)
        momentum = theirs.to_momentum(x).sigmoid()[0].view(batch, 1, seq)
        decay = theirs.to_decay_factor(x).sigmoid().view(batch, 1, seq)
        w0 = [p[0] for p in theirs.memory_model_parameters]          # per-head parameters, (in, out)
        cfg = MemoryConfig(architecture="mlp", depth=2, expansion=2.0, activation="gelu", residual=False, bias="l2",
                           retention="decay", rule="momentum", chunk_size=seq)
        core = AssociativeMemory(cfg, 1, dim)
        names = core.names
        state = MemoryState({n: w.t().unsqueeze(0).unsqueeze(0).expand(batch, 1, *w.t().shape).contiguous()
                             for n, w in zip(names, w0)},
                            {n: torch.zeros(batch, 1, *w.t().shape) for n, w in zip(names, w0)})
        k, v = keys.view(batch, 1, seq, dim), values.view(batch, 1, seq, dim)
        _, ours = core(k, k, v, lr * 2 / dim, 1 - decay, momentum, state=state, path="chunked", chunk_size=seq)
        final_theirs = [t[:, -1] for t in updates.values()]          # (batch, in, out) after the last token
        weight_diff = max(float((a.transpose(-1, -2) - ours.weights[n][:, 0]).abs().max())
                          for a, n in zip(final_theirs, names))
        scale = max(float(a.abs().max()) for a in final_theirs)
        q = torch.randn(batch, 7, dim)
        read_theirs = torch.func.functional_call(theirs.memory_model, {f"weights.{i}": w for i, w in enumerate(final_theirs)}, q)
        read_ours = memory_forward([ours.weights[n][:, 0] for n in names], q, cfg)[0]
        read_diff = float((read_theirs - read_ours).abs().max())
    return {"dim": dim, "seq": seq, "batch": batch, "max_abs_weight_diff": weight_diff, "weight_scale": scale,
            "max_abs_read_diff": read_diff, "read_scale": float(read_theirs.abs().max())}


def timings(reps: int = 3, seq: int = 1024, batch: int = 4, dim: int = 64) -> list[dict]:
    from titans_pytorch import NeuralMemory
    rows = []
    x = torch.randn(batch, seq, dim)
    for chunk in (64, 1):
        torch.manual_seed(0)
        mem = NeuralMemory(dim=dim, chunk_size=chunk, heads=2, dim_head=dim // 2)

        def run_theirs():
            mem.zero_grad()
            y, _ = mem(x)
            y.pow(2).mean().backward()
        rows.append({"model": f"titans-pytorch NeuralMemory, chunk_size={chunk}",
                     "parameters": sum(p.numel() for p in mem.parameters()), "seconds": timed(run_theirs, reps)})
    for path in ("chunked", "recurrent"):
        torch.manual_seed(0)
        layer = create_memory("titans", dim, heads=2, chunk_size=64, expansion=4.0)

        def run_ours():
            layer.zero_grad()
            y, _ = layer(x, path=path)
            y.pow(2).mean().backward()
        rows.append({"model": f"palimpsest titans preset, {path} path, chunk_size=64",
                     "parameters": sum(p.numel() for p in layer.parameters()),
                     "seconds": timed(run_ours, 1 if path == "recurrent" else reps)})
    return rows


def main() -> None:
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    import titans_pytorch  # noqa: F401  (fails clearly outside the benchmark's environment)
    from importlib.metadata import version
    print(f"titans-pytorch {version('titans-pytorch')}, torch {torch.__version__}, 1 thread, flush denormal on")
    check = cross_check()
    print("cross-check:", json.dumps(check))
    rows = timings()
    for r in rows:
        print(f"{r['model']:58s} params {r['parameters']:7d}  forward+backward {r['seconds']:.3f} s")
    out = Path(__file__).parent / "results" / "titans.json"
    out.write_text(json.dumps({"titans_pytorch": version("titans-pytorch"), "cross_check": check, "timings": rows},
                              indent=1))


if __name__ == "__main__":
    main()
