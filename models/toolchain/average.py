"""Average the weights of checkpoints of one model, to be chosen (or not) on validation items.

    python3 -m models.toolchain.average --run .cache/runs/fashion-cur --name phase3-avg \\
        phase3 phase3-swa@100 phase3-swa@200 phase3-swa@300 phase3-swa@400

Checkpoints fine-tuned from one parent stay close in weight space, and the mean of their weights
often generalises better than any one of them (Izmailov et al., "Averaging Weights Leads to Wider
Optima and Better Generalization", 2018; Wortsman et al., "Model soups", 2022). Snapshots along one
phase come from `reallocate --snapshot-every N`. Every floating-point tensor of the checkpoints'
"model" state is averaged (uniformly, or by --weights); every other tensor, and the cap weights,
which decide what each budget costs, must be the same in all of them. The result carries the first
checkpoint's recipe and step counts, extended by what was averaged, for build_bundle's manifest;
`validate` compares it with its sources, `build_bundle --single <name>` exports it.
"""
from __future__ import annotations

import argparse
import os

import torch

from .checkpoint import load_state, save_state

# Tensors averaging must not change: they are settings of the model, not learned weights.
FIXED = ("cap_weights",)


def average_states(states: list[dict[str, torch.Tensor]], weights: list[float] | None = None) -> dict[str, torch.Tensor]:
    """The weighted mean of model state dicts with the same keys and shapes.

    Floating-point tensors are averaged in float64 and returned in their own dtype; integer tensors
    (step counters, batch-norm counts) and the FIXED settings must agree exactly.
    """
    if not states:
        raise ValueError("nothing to average")
    weights = [1.0] * len(states) if weights is None else [float(w) for w in weights]
    if len(weights) != len(states):
        raise ValueError(f"{len(weights)} weights for {len(states)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise ValueError(f"checkpoint {i} has other tensors than checkpoint 0: {diff[:5]}")
    total = sum(weights)
    out = {}
    for key in keys:
        tensors = [s[key] for s in states]
        first = tensors[0]
        for i, t in enumerate(tensors[1:], 1):
            if t.shape != first.shape:
                raise ValueError(f"{key}: shape {tuple(t.shape)} in checkpoint {i}, {tuple(first.shape)} in checkpoint 0")
        if not first.is_floating_point() or key.split(".")[-1] in FIXED:
            for i, t in enumerate(tensors[1:], 1):
                if not torch.equal(t, first):
                    raise ValueError(f"{key} differs between checkpoint 0 and checkpoint {i}; "
                                     "only weights of one model under one setting can be averaged")
            out[key] = first.clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64)
        for w, t in zip(weights, tensors):
            acc += (w / total) * t.to(torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def averaged_checkpoint(sources: dict[str, dict], weights: list[float] | None = None) -> dict:
    """The checkpoint of the average of `sources` (name -> checkpoint, in order): the mean weights,
    no training steps of its own, the first source's step counts and recipe carried on, and the
    recipe extended by what was averaged."""
    names = list(sources)
    first = sources[names[0]]
    steps = dict(first.get("steps", {}))
    for name, state in sources.items():  # each phase behind them (name@step: a snapshot of it), its longest run
        phase = name.split("@")[0]
        if int(state.get("step", 0)) > 0:
            steps[phase] = max(steps.get(phase, 0), int(state["step"]))
    how = "uniformly" if weights is None else "with weights " + ", ".join(f"{w:g}" for w in weights)
    return {
        "model": average_states([s["model"] for s in sources.values()], weights),
        "step": 0,
        "steps": steps,
        "averaged": {"checkpoints": names, "weights": weights},
        "recipe": (first.get("recipe") or f"checkpoint {names[0]}") +
                  f"; then the weights of {', '.join(names)} averaged {how} (models.toolchain.average)",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--name", required=True, help="the checkpoint to write, in --run")
    ap.add_argument("--weights", default=None, help="comma-separated, one per checkpoint (default: equal)")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint names in --run, without .ckpt (name@step for snapshots)")
    args = ap.parse_args()
    if len(args.checkpoints) < 2:
        ap.error("give at least two checkpoints to average")
    weights = None if args.weights is None else [float(w) for w in args.weights.split(",")]
    if weights is not None and len(weights) != len(args.checkpoints):
        ap.error(f"--weights has {len(weights)} values for {len(args.checkpoints)} checkpoints")
    out = os.path.join(args.run, f"{args.name}.ckpt")
    if args.name in args.checkpoints:
        ap.error(f"--name {args.name} is one of the checkpoints to average")
    sources = {}
    for name in args.checkpoints:
        state = load_state(os.path.join(args.run, f"{name}.ckpt"))
        if state is None:
            ap.error(f"no checkpoint {name}.ckpt in {args.run}")
        sources[name] = state
    try:
        state = averaged_checkpoint(sources, weights)
    except ValueError as e:
        ap.error(str(e))
    save_state(out, state)
    print(f"wrote {out}: the average of {', '.join(args.checkpoints)}", flush=True)


if __name__ == "__main__":
    main()
