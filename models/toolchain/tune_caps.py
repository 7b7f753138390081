"""Tune the cap weights by what they cost in loss, not by what the gates ask.

    python3 -m models.toolchain.tune_caps --run .cache/runs/fashion --source phase3-shared --name phase3-tuned

The request cap shares a budget among the ACMs in proportion to ACMViT.cap_weights
(acm.weighted_cap_budgets). `reallocate` sets those weights to the fraction of its learners each
gate asks for. What the gates ask is not what each ACM is worth to the answer: an ACM may ask for
many learners that change little. This step searches the weights directly on training items:
coordinate descent, one ACM at a time, multiplying its weight by --factor or dividing by it and
keeping the change if the weighted cross-entropy over --budgets goes down (the caps keep costing
exactly each budget, so every candidate spends the same compute). No parameter is trained; the
checkpoint --name is --source with the new weights.

By default the search reads training items only, and `validate` compares the result with the
source on the validation items. The model has fitted its training items, so their loss at a low
budget can favour weights that do worse on new items; `--split val-a` searches on the first half
of the validation items instead, and `validate --split val-b` is then the held-out check.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from . import data
from .checkpoint import load_state, save_state
from .convert import load_acm, load_base
from .vit import set_threads


def search_weights(score: Callable[[torch.Tensor], float], weights: torch.Tensor, factor: float = 1.4,
                   sweeps: int = 3, log: Callable[[str], None] = print) -> tuple[torch.Tensor, float]:
    """Coordinate descent on `weights` (each in (0, 1]) for the lowest score(weights).

    Per sweep, each weight in turn is multiplied by `factor`, then divided by it (clamped to 1);
    the first change that lowers the score is kept. Stops after `sweeps`, or after a sweep that
    kept nothing. Returns the weights and their score; the score never rises.
    """
    if factor <= 1.0:
        raise ValueError(f"factor must be above 1; got {factor}")
    best_w = weights.clone()
    best = score(best_w)
    log(f"start: score {best:.5f}")
    for sweep in range(sweeps):
        kept = 0
        for a in range(len(best_w)):
            for f in (factor, 1.0 / factor):
                cand = best_w.clone()
                cand[a] = min(float(cand[a]) * f, 1.0)
                if cand[a] == best_w[a]:
                    continue
                s = score(cand)
                if s < best:
                    best, best_w, kept = s, cand, kept + 1
                    log(f"sweep {sweep + 1}: weight {a} x{f:.3g} -> score {best:.5f}")
                    break
        if kept == 0:
            break
    return best_w, best


@torch.no_grad()
def cap_loss(model, x: torch.Tensor, y: torch.Tensor, budgets: dict[float, float], batch: int = 1000) -> float:
    """Sum over budgets of weight * mean cross-entropy of the capped model on (x, y)."""
    model.eval()
    total = 0.0
    for b, w in budgets.items():
        ce = 0.0
        for i in range(0, len(y), batch):
            logits, _ = model(x[i:i + batch], torch.full((len(y[i:i + batch]),), b, dtype=torch.float64))
            ce += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        total += w * ce / len(y)
    return total


def tuned_state(source: dict, source_name: str, weights: torch.Tensor, settings: dict,
                items_words: str | None = None, objective: str = "cross-entropy",
                tool: str = "models.toolchain.tune_caps") -> dict:
    """The checkpoint of the tuned model: the source's, with the new cap weights (largest 1), no
    training steps of its own, the source's step counts carried on (build_bundle's manifest), and
    the recipe extended by what this step did: on what (`items_words`, by default the image
    split's words), for which loss, by which command."""
    state = {k: v for k, v in source.items() if k != "optimizer"}
    state["model"] = dict(source["model"])
    state["model"]["cap_weights"] = (weights / weights.max()).clone()
    steps = dict(source.get("steps", {}))
    if int(source.get("step", 0)) > 0:
        steps.setdefault(source_name, int(source["step"]))
    budgets = ", ".join(f"{b:g} (weight {w:g})" for b, w in settings["budgets"].items())
    state.update(step=0, steps=steps, cap_search=settings, recipe=(
        (source.get("recipe") or f"checkpoint {source_name}") +
        f"; then the cap weights searched on {settings['items']:,} "
        f"{items_words or SPLIT_WORDS[settings.get('split', 'train')]} for the lowest {objective} "
        f"at budgets {budgets}, no parameter trained ({tool})"))
    return state


SPLIT_WORDS = {"train": "training items", "val-a": "validation items (index 5500..5749 of each class)"}


def parse_budgets(text: str) -> dict[float, float]:
    """'0.25:1,0.1:0.25' -> {0.25: 1.0, 0.1: 0.25}; a budget without ':w' weighs 1."""
    out = {}
    for part in text.split(","):
        b, _, w = part.partition(":")
        budget, weight = float(b), float(w or 1.0)
        if not 0.0 < budget <= 1.0 or weight <= 0.0:
            raise ValueError(f"each budget must be in (0, 1] with a positive weight; got {part!r}")
        out[budget] = weight
    return out


def add_search_options(ap: argparse.ArgumentParser, budgets: str, sweeps: int, objective: str) -> None:
    """The options of the search itself, shared by the image and the speech command."""
    ap.add_argument("--budgets", default=budgets, help=f"budget:weight pairs of the objective (weighted {objective})")
    ap.add_argument("--factor", type=float, default=1.4)
    ap.add_argument("--sweeps", type=int, default=sweeps, help="0: only score the start")


def search_budgets(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict[float, float]:
    """--budgets parsed, after --factor and --sweeps are checked; a bad value ends the command with
    a message naming the option."""
    if args.factor <= 1.0:
        ap.error(f"--factor must be above 1, got {args.factor}")
    if args.sweeps < 0:
        ap.error(f"--sweeps must be >= 0, got {args.sweeps}")
    try:
        return parse_budgets(args.budgets)
    except ValueError as e:
        ap.error(f"--budgets: {e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--source", default="phase3-shared", help="the checkpoint to start from, in --run")
    ap.add_argument("--name", default="phase3-tuned", help="the checkpoint to write, in --run")
    ap.add_argument("--split", default="train", choices=sorted(SPLIT_WORDS),
                    help="the items the loss is measured on: training items, or the first half of validation")
    ap.add_argument("--items", type=int, default=5000,
                    help="how many items of --split (a seeded sample; all of them when above the count)")
    add_search_options(ap, "0.25:1,0.1:0.25,0.5:0.25", sweeps=3, objective="cross-entropy")
    args = ap.parse_args()
    budgets = search_budgets(ap, args)
    set_threads()
    cfg, vit, _ = load_base(args.run)
    source = os.path.join(args.run, f"{args.source}.ckpt")
    model = load_acm(vit, cfg, source)
    items = data.load(args.split)
    if args.items <= 0:
        ap.error(f"--items must be positive, got {args.items}")
    n = min(args.items, len(items.y))
    pick = np.sort(np.random.default_rng(5).choice(len(items.y), n, replace=False))
    x = data.to_tensor(items.x[pick])
    y = torch.from_numpy(items.y[pick]).long()
    print(f"{n:,} items of {args.split}", flush=True)

    def score(w: torch.Tensor) -> float:
        model.cap_weights.copy_(w)
        return cap_loss(model, x, y, budgets)

    t0 = time.monotonic()
    weights, _ = search_weights(score, model.cap_weights.clone(), args.factor, args.sweeps,
                                log=lambda line: print(f"[{time.monotonic() - t0:6.0f} s] {line}", flush=True))
    settings = {"split": args.split, "items": n, "budgets": budgets, "factor": args.factor, "sweeps": args.sweeps}
    state = tuned_state(load_state(source), args.source, weights, settings)
    save_state(os.path.join(args.run, f"{args.name}.ckpt"), state)
    print("cap weights: " + " ".join(f"{v:.3f}" for v in state["model"]["cap_weights"].tolist()), flush=True)
    check = " --split val-b" if args.split == "val-a" else ""
    print(f"wrote {os.path.join(args.run, args.name + '.ckpt')}; compare on held-out items with "
          f"`python3 -m models.toolchain.validate --run {args.run}{check} {args.source} {args.name}`", flush=True)


if __name__ == "__main__":
    main()
