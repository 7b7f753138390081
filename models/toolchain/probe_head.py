"""Would a classifier of its own help a budget? A diagnostic that changes no checkpoint.

    python3 -m models.toolchain.probe_head --run .cache/runs/fashion-cur --source phase3 --budgets 0.25,0.1

For each budget, the model runs capped as served and the head's input (the class token after the
final norm) is kept, on augmented passes over the training items and on the validation items.
The head is then refitted on those training features alone, starting from the trained head and
pulled towards it (cross-entropy plus `pull` times the squared distance to it), bias only or
whole, and both heads are scored on the validation features. A gain says the budget's features
hold more than the shared head reads from them; none says that what the budget lacks is in the
features. The test split is not read.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from . import data
from .convert import load_acm, load_base
from .train_base import augment
from .vit import set_threads


def head_features(model, split: data.Split, budget: float, aug_seed: int | None = None,
                  batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input [n, d] for every item of `split` at `budget` (capped, eval mode), and the
    labels; with `aug_seed`, of the items augmented as in training (train_base.augment)."""
    model.eval()
    kept: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda _m, inputs, _out: kept.append(inputs[0].detach()))
    try:
        for i in range(0, len(split.y), batch):
            raw = torch.from_numpy(split.x[i:i + batch])
            if aug_seed is None:
                x = data.to_tensor(split.x[i:i + batch])
            else:
                x = augment(data.normalise(raw), torch.Generator().manual_seed(aug_seed * 100003 + i))
            with torch.no_grad():
                model(x, torch.full((len(x),), budget, dtype=torch.float64))
    finally:
        hook.remove()
    return torch.cat(kept), torch.from_numpy(split.y).clone()


def refit_head(weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor,
               pull: float, steps: int = 300, bias_only: bool = False,
               lr: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """A head fitted to (feats, labels) by full-batch Adam from (weight, bias), with pull times the
    squared distance to them added to the cross-entropy. bias_only keeps the weight as it is."""
    w = weight.detach().clone().requires_grad_(not bias_only)
    b = bias.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([b] if bias_only else [w, b], lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(feats @ w.t() + b, labels)
        loss = loss + pull * (((w - weight) ** 2).sum() + ((b - bias) ** 2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def accuracy(weight: torch.Tensor, bias: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> float:
    return ((feats @ weight.t() + bias).argmax(-1) == labels).double().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--source", default="phase3", help="checkpoint name in --run, without .ckpt")
    ap.add_argument("--budgets", default="0.25,0.1")
    ap.add_argument("--pulls", default="0.01,0.001")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--passes", type=int, default=2, help="augmented passes over the training items")
    args = ap.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    pulls = [float(p) for p in args.pulls.split(",")]
    if any(not 0 < b <= 1 for b in budgets):
        ap.error(f"--budgets must lie in (0, 1]; got {args.budgets}")
    if args.steps < 1 or args.passes < 1 or any(p < 0 for p in pulls):
        ap.error("--steps and --passes must be at least 1 and --pulls at least 0")
    set_threads()
    cfg, vit, _ = load_base(args.run)
    model = load_acm(vit, cfg, os.path.join(args.run, f"{args.source}.ckpt"))
    train, val = data.load("train"), data.load("val")
    w0, b0 = model.head.weight.detach(), model.head.bias.detach()
    for budget in budgets:
        start = time.time()
        passes = [head_features(model, train, budget, aug_seed=seed) for seed in range(1, args.passes + 1)]
        feats, labels = torch.cat([f for f, _ in passes]), torch.cat([y for _, y in passes])
        vfeats, vlabels = head_features(model, val, budget)
        base = accuracy(w0, b0, vfeats, vlabels)
        print(f"budget {budget:g}: trained head {100 * accuracy(w0, b0, feats, labels):.2f}% on augmented training "
              f"items, {100 * base:.2f}% on validation ({time.time() - start:.0f} s of features)", flush=True)
        for pull in pulls:
            for bias_only in (True, False):
                w, b = refit_head(w0, b0, feats, labels, pull, args.steps, bias_only)
                acc = accuracy(w, b, vfeats, vlabels)
                print(f"  refitted {'bias' if bias_only else 'head'}, pull {pull:g}: training "
                      f"{100 * accuracy(w, b, feats, labels):.2f}%, validation {100 * acc:.2f}% "
                      f"({100 * (acc - base):+.2f} points)", flush=True)


if __name__ == "__main__":
    main()
