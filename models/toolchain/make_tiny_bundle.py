"""A random ACM image bundle: no data, no training. The tiny one (default) builds in seconds for
tests; `--config vit-b16` gives the paper's geometry for performance measurements.

    python3 -m models.toolchain.make_tiny_bundle --out /tmp/tiny [--reference] [--budget-norms]
    python3 -m models.toolchain.make_tiny_bundle --out .cache/bench/vit-b16 --config vit-b16 --name vit-b16-acm [--floor-path]

With --reference, reference.json holds inputs and PyTorch outputs (logits, learner counts) for a
single request, a mixed batch with different budgets and two batches at or near the budget floor,
for the ONNX parity test.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from .acm import from_dense, set_floor_path
from .export import export_bundle, manifest
from .vit import CONFIGS, build_vit, set_threads


def build(seed: int = 0, config: str = "tiny", budget_norms: bool = False):
    cfg = CONFIGS[config]
    torch.manual_seed(seed)
    vit = build_vit(cfg)
    # torchvision zero-initialises the head; random logits make the parity test meaningful.
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)
    model = from_dense(vit, cfg).eval()
    with torch.no_grad():
        for _, _, acm in model.acms():
            # Spread the random gates' choices so every group of the kernel is exercised.
            for p in acm.gate.parameters():
                p.mul_(4.0)
        if config == "tiny":  # unequal cap weights, so the parity test covers their sharing rule
            model.cap_weights.copy_(torch.linspace(0.3, 1.0, len(model.acms()), dtype=torch.float64))
    if budget_norms:  # norms with a scale and shift per budget, random so that each budget differs
        model.condition_norms()
        with torch.no_grad():
            for p in model.norm_corrections():
                p.normal_(std=0.3)
    return cfg, vit.eval(), model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--name", default="tiny-vit-acm")
    ap.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    ap.add_argument("--floor-path", action="store_true",
                    help="export each ACM's floor path under an If (acm.ACM.floor_or)")
    ap.add_argument("--budget-norms", action="store_true",
                    help="condition the layer norms on the budget (ACMViT.condition_norms), with random corrections")
    args = ap.parse_args()
    set_threads()
    cfg, vit, model = build(config=args.config, budget_norms=args.budget_norms)
    set_floor_path(model, args.floor_path)
    labels = [f"class-{i}" for i in range(cfg.num_classes)]
    meta = manifest(model, args.name, labels, mean=[0.5] * cfg.channels, std=[0.25] * cfg.channels, dense_graph="dense.onnx",
                    training={"note": "random weights, for tests", "floor_path": args.floor_path})
    export_bundle(model, args.out, meta, dense=vit)
    if args.reference:
        gen = torch.Generator().manual_seed(1)
        cases = []
        # The last two: a batch below the model's budget floor (every ACM at its minimum) and
        # one at 0.25 (the projections at theirs, the FFNs not), for the floor path.
        # 0.65 lies between two of the budget knots of conditioned norms.
        for budgets in ([0.5], [1.0, 0.25, 0.65, 0.1, 0.75], [0.05, 0.02], [0.25, 0.25]):
            pixels = torch.randn(len(budgets), cfg.channels, cfg.image_size, cfg.image_size, generator=gen)
            budget = torch.tensor(budgets, dtype=torch.float64)
            with torch.no_grad():
                logits, counts = model(pixels, budget)
            cases.append({"budget": budgets, "pixels": pixels.flatten().tolist(),
                          "shape": list(pixels.shape), "logits": logits.flatten().tolist(),
                          "learner_counts": counts.flatten().tolist(), "counts_shape": list(counts.shape)})
        with open(os.path.join(args.out, "reference.json"), "w") as f:
            json.dump({"cases": cases}, f)


if __name__ == "__main__":
    main()
