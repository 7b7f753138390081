"""The published way as a peer: a boolean-mask loop per learner, against the grouped kernel.

    python3 -m kernels.peer_bench [--dim 768 --mlp 3072 --tokens 256,1024,4096 --repeats 7]

`npm run bench:peer` runs this first, then times the same cells in onnxruntime (kernels/peer-ort.ts).

The reference ACM implementation executes learner i on the tokens whose count exceeds i, through
a boolean mask, and accumulates into the output. This re-expresses that loop in PyTorch and times
it against kernels/grouped.py (the code exported into the bundles) on the same weights, the same
token choices and the same threads, interleaved, as medians. Both are checked to agree first.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import subprocess
import sys

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from .grouped import grouped_learners


def mask_loop(x, k, w1, b1, w2, n: int, width: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    for i in range(n):
        mask = k > i
        rows = x[mask]
        h = F.gelu(rows @ w1[:, i * width:(i + 1) * width] + b1[i * width:(i + 1) * width])
        out[mask] += h @ w2[i * width:(i + 1) * width]
    return out


def choices(m: int, n: int, budget: float, gen: torch.Generator) -> torch.Tensor:
    """Counts scattered around budget * n, as a trained gate under a cap produces them."""
    raw = torch.round(budget * n + 1.5 * torch.randn(m, generator=gen))
    return raw.clamp(0, n).to(torch.int64) if budget < 1 else torch.full((m,), n, dtype=torch.int64)


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--mlp", type=int, default=3072)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--tokens", default="256,1024,4096")
    ap.add_argument("--budgets", default="1.0,0.75,0.5,0.25")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=".cache/bench/peer-torch.json",
                    help="where the timings go; the cells' inputs go into peer-inputs/ beside it")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    d, n, width = args.dim, args.n, args.mlp // args.n
    # The weights of the graph kernels/bench.ts emitted, so onnxruntime runs the very same layer.
    graph = os.path.join(os.path.dirname(args.json), "acm_ffn.onnx")
    if not os.path.exists(graph):
        subprocess.run([sys.executable, "-m", "kernels.emit_bench", "--out", os.path.dirname(args.json),
                        "--dim", str(d), "--mlp", str(args.mlp), "--n", str(n)], check=True)
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(graph).graph.initializer}
    w1, b1, w2 = weights["w1"], weights["b1"], weights["w2"]
    assert w1.shape == (d, args.mlp), f"{graph} has another shape; rerun kernels.emit_bench with --dim {d} --mlp {args.mlp}"
    rows = []
    print(f"FFN {d} -> {args.mlp} -> {d}, N = {n}, PyTorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} (ms)")
    print("tokens | budget | used  | mask loop | grouped | grouped speedup")
    with torch.no_grad():
        for m in (int(t) for t in args.tokens.split(",")):
            x = torch.randn(m, d, generator=gen)
            for budget in (float(b) for b in args.budgets.split(",")):
                k = choices(m, n, budget, gen)
                ref = mask_loop(x, k, w1, b1, w2, n, width)
                ours = grouped_learners(x, k, w1, b1, w2, n, width, gelu=True)
                torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
                times = {"mask": [], "grouped": []}
                for rep in range(args.repeats + 1):
                    for name, fn in (("mask", lambda: mask_loop(x, k, w1, b1, w2, n, width)),
                                     ("grouped", lambda: grouped_learners(x, k, w1, b1, w2, n, width, True))):
                        t0 = time.perf_counter()
                        fn()
                        if rep:
                            times[name].append((time.perf_counter() - t0) * 1e3)
                row = {"tokens": m, "budget": budget, "used": k.float().mean().item() / n,
                       "mask_ms": median(times["mask"]), "grouped_ms": median(times["grouped"]),
                       "mask_spread": [min(times["mask"]), max(times["mask"])],
                       "grouped_spread": [min(times["grouped"]), max(times["grouped"])]}
                rows.append(row)
                # The same inputs and choices for the onnxruntime run of the exported kernel (peer-ort.ts).
                row["inputs"] = f"{m}-{budget}"
                stem = os.path.join(os.path.dirname(args.json), "peer-inputs", row["inputs"])
                os.makedirs(os.path.dirname(stem), exist_ok=True)
                x.numpy().tofile(stem + ".x.f32")
                k.numpy().tofile(stem + ".k.i64")
                ref.numpy().tofile(stem + ".y.f32")
                print(f"{m:6d} | {budget:6.2f} | {row['used']:.3f} | {row['mask_ms']:9.2f} | {row['grouped_ms']:7.2f} | "
                      f"{row['mask_ms'] / row['grouped_ms']:.2f}x", flush=True)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"dim": d, "mlp": args.mlp, "n": n, "threads": args.threads, "torch": torch.__version__, "rows": rows},
                  f, indent=2)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
