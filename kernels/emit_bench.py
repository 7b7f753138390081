"""Emit the standalone graphs the kernel microbenchmark times (kernels/bench.ts).

    python3 -m kernels.emit_bench --out .cache/bench --dim 768 --mlp 3072 --n 4 --tokens-per-request 64

acm_ffn.onnx:   x [R, T, d], desired [R, T] int64, budget [R] float64 -> y [R, T, d], k [R, T] int64
                (the per-request cap, then the grouped-learner kernel; no gate, so the benchmark
                controls the choices)
dense_ffn.onnx: x [R, T, d] -> y [R, T, d] (Linear, GELU, Linear of the same total width)
"""
from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F
from torch import nn

from .grouped import cap_counts, grouped_learners


class CappedGroupedFFN(nn.Module):
    def __init__(self, dim: int, mlp: int, n: int):
        super().__init__()
        self.dim, self.n, self.width = dim, n, mlp // n
        self.w1 = nn.Parameter(torch.randn(dim, mlp) / dim ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(mlp))
        self.w2 = nn.Parameter(torch.randn(mlp, dim) / mlp ** 0.5)

    def forward(self, x, desired, budget):
        k = cap_counts(desired, budget, self.n, 0)
        y = grouped_learners(x.reshape(-1, self.dim), k.reshape(-1), self.w1, self.b1, self.w2,
                             self.n, self.width, gelu=True)
        return y.view_as(x), k


class DenseFFN(nn.Module):
    def __init__(self, dim: int, mlp: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".cache/bench")
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--mlp", type=int, default=3072)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--tokens-per-request", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    r, t, d = 2, args.tokens_per_request, args.dim
    x = torch.randn(r, t, d)
    desired = torch.randint(0, args.n + 1, (r, t))
    budget = torch.tensor([1.0, 0.5], dtype=torch.float64)
    dyn = {0: "requests"}
    with torch.no_grad():
        torch.onnx.export(CappedGroupedFFN(d, args.mlp, args.n).eval(), (x, desired, budget),
                          os.path.join(args.out, "acm_ffn.onnx"), opset_version=17, do_constant_folding=False,
                          input_names=["x", "desired", "budget"], output_names=["y", "k"],
                          dynamic_axes={"x": dyn, "desired": dyn, "budget": dyn, "y": dyn, "k": dyn})
        torch.onnx.export(DenseFFN(d, args.mlp).eval(), (x,), os.path.join(args.out, "dense_ffn.onnx"),
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": dyn, "y": dyn})
    with open(os.path.join(args.out, "shape.json"), "w") as f:
        json.dump(vars(args), f)


if __name__ == "__main__":
    main()
