"""Convert the trained dense ViT into an ACM model: the phases of DESIGN §2, each resumable.

    python3 -m models.toolchain.convert --run .cache/runs/fashion-conv               # one model, every budget
    python3 -m models.toolchain.convert --run .cache/runs/fashion-conv --target 0.5  # published way, one target

Phases 1 and 2 are shared. Phase 3 then either trains the single budget-conditioned model
(<run>/phase3.ckpt: a budget target drawn per batch, fine-tuned under the request cap it is served
with) or, with --target, one model the published way (<run>/phase3-t<target>.ckpt: that target
only, no cap). The defaults are the ones the bundled model was made with.

Every phase checkpoints at least every few minutes and at its end; a rerun skips finished phases
and resumes an interrupted one at its last step. Each phase ends with its metrics on validation
items (index 5500..5999 of each class file).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import time

import numpy as np
import torch

from . import data
from .acm import from_dense
from .checkpoint import load_file, load_into, load_state, save_state
from .metrics import used_fraction
from .phases import acm_pairs, distil_loss, gate_loss, phase3_loss, teacher_pairs
from .train_base import augment
from .vit import ViTConfig, add_training_options, build_vit, start_training


DEFAULT_BUDGET_WEIGHT = 0.1  # DESIGN §2


def phase3_name(target: float | None, budget_weight: float = DEFAULT_BUDGET_WEIGHT) -> str:
    """phase3, or phase3-t<target> for a published-way model (-bw<weight> when not the default)."""
    if target is None:
        return "phase3"
    return f"phase3-t{target:.2f}" + ("" if budget_weight == DEFAULT_BUDGET_WEIGHT else f"-bw{budget_weight:g}")


_PHASE3_TARGET = re.compile(r"phase3-t(\d+(?:\.\d+)?)(?:-bw(\d+(?:\.\d+)?))?\.ckpt")


def parse_phase3_name(filename: str) -> tuple[float, float] | None:
    """(target, budget weight) of a published-way checkpoint's file name (see phase3_name); None for
    any other checkpoint (phase3-tuned.ckpt also starts with phase3-t)."""
    m = _PHASE3_TARGET.fullmatch(os.path.basename(filename))
    if m is None:
        return None
    return float(m[1]), float(m[2]) if m[2] else DEFAULT_BUDGET_WEIGHT


def load_base(run: str):
    saved = load_file(os.path.join(run, "base-best.pt"))
    cfg = ViTConfig(**saved["config"])
    vit = build_vit(cfg)
    vit.load_state_dict(saved["model"])
    for p in vit.parameters():  # the base is a fixed teacher from here on
        p.requires_grad_(False)
    return cfg, vit.eval(), saved


def load_acm(vit, cfg, path: str):
    """The ACM model converted from `vit`, with the weights (and cap weights) of checkpoint `path`."""
    model = from_dense(vit, cfg)
    model.load_state_dict(load_state(path)["model"])
    return model


class Batches:
    """Deterministic shuffled training batches, addressable by step so a resumed phase sees the same data."""

    def __init__(self, split: data.Split, batch: int, seed: int, device: torch.device | str = "cpu"):
        self.batch, self.seed = batch, seed
        self.x, self.y = torch.from_numpy(split.x).to(device), torch.from_numpy(split.y).to(device)
        self.per_epoch = len(split.y) // batch

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        perm = np.random.default_rng(self.seed + epoch).permutation(len(self.y))
        idx = torch.from_numpy(perm[i * self.batch:(i + 1) * self.batch]).to(self.x.device)
        x = augment(data.normalise(self.x[idx]), torch.Generator().manual_seed(self.seed * 100003 + step))
        return x, self.y[idx]


def run_phase(name: str, run: str, steps: int, model, params, lr: float, step_fn, every_minutes: float,
              snapshot_every: int = 0) -> bool:
    """Train `params` for `steps`, resuming from <run>/<name>.ckpt. Returns False if it was already done.

    params: a list of tensors, or of optimizer groups each with its own "lr"; `lr` scales them all.
    snapshot_every: also keep the weights every that many steps as <run>/<name>@<step>.ckpt (weights
    only), for averaging along the trajectory (models.toolchain.average).
    """
    path = os.path.join(run, f"{name}.ckpt")
    groups = params if params and isinstance(params[0], dict) else [{"params": params, "lr": lr}]
    base_lrs = [g["lr"] for g in groups]
    opt = torch.optim.Adam(groups, lr=lr)
    state = load_state(path)
    step = 0
    if state:
        load_into(model, state["model"]); step = state["step"]
        if step >= steps:  # a finished phase's checkpoint may be kept without its optimizer state
            print(f"{name}: already done ({step} steps)", flush=True)
            return False
        opt.load_state_dict(state["opt"])
        print(f"{name}: resumed at step {step}/{steps}", flush=True)
    t0, last_save, running, start = time.time(), time.time(), None, step
    first_loss = None
    while step < steps:
        for g, base in zip(opt.param_groups, base_lrs):  # cosine decay to 10%
            g["lr"] = base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        loss, info = step_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        first_loss = first_loss if first_loss is not None else loss.item()
        if step % 25 == 0 or step == steps:
            extra = " ".join(f"{k} {v:.4f}" for k, v in info.items())
            print(f"{name} step {step}/{steps} loss {running:.5f} (first {first_loss:.5f}) {extra} "
                  f"{(time.time() - t0) / (step - start):.2f}s/step", flush=True)
        if snapshot_every and step % snapshot_every == 0:
            save_state(snapshot_path(run, name, step), {"model": model.state_dict(), "step": step})
        if time.time() - last_save > every_minutes * 60 or step == steps:
            save_state(path, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step})
            last_save = time.time()
    return True


def snapshot_path(run: str, name: str, step: int) -> str:
    return os.path.join(run, f"{name}@{step}.ckpt")


def phase3_groups(model, gate_lr: float, lr: float, norm_lr: float | None = None) -> list[dict]:
    """Phase 3's optimizer groups: the gates at gate_lr, the norms' per-budget corrections (if the
    model has them) at norm_lr, everything else at lr."""
    gates = [p for _, _, a in model.acms() for p in a.gate.parameters()]
    tables = model.norm_corrections()
    special = {id(p) for p in gates + tables}
    groups = [{"params": gates, "lr": gate_lr},
              {"params": [p for p in model.parameters() if id(p) not in special], "lr": lr}]
    if tables:
        groups.append({"params": tables, "lr": lr if norm_lr is None else norm_lr})
    return groups


@torch.no_grad()
def phase_metrics(name: str, model, vit, val: data.Split, items: int = 1000) -> None:
    """Print how far the phase got, on `items` validation items spread evenly over the classes."""
    pick = np.linspace(0, len(val.y) - 1, items).round().astype(int)
    device = next(model.parameters()).device
    x = data.to_tensor(val.x[pick]).to(device)
    y = torch.from_numpy(val.y[pick]).to(device)
    pairs = acm_pairs(model, teacher_pairs(vit, x))
    if name == "phase1":
        # Relative error of h(z, k) against the dense block, averaged over ACMs, for every k.
        rel = torch.stack([(a.prefix_outputs(z) - o.unsqueeze(-2)).norm(dim=-1).mean(tuple(range(z.dim() - 1)))
                           / o.norm(dim=-1).mean() for a, z, o in pairs]).mean(0)
        print(f"phase1 metrics: relative error by k = {[round(v, 3) for v in rel.tolist()]}", flush=True)
    elif name == "phase2":
        hits, total = 0, 0
        for a, z, o in pairs:
            ones = torch.ones(len(y), device=device)
            _, labels = gate_loss(a, z, o, ones)
            hits += (a.gate_logits(z, ones).argmax(-1) + a.min_choice == labels).sum().item()
            total += labels.numel()
        print(f"phase2 metrics: gate label accuracy {hits / total:.4f}", flush=True)
    model.eval()
    report = []
    for b in (0.25, 0.5, 1.0):
        logits, counts = model(x, torch.full((len(y),), b, dtype=torch.float64, device=device))
        acc = (logits.argmax(-1) == y).float().mean().item()
        report.append(f"b={b}: acc {acc:.4f} used {used_fraction(model, counts).mean().item():.3f}")
    print(f"{name} metrics ({'capped' if model.capped else 'uncapped'}, {items} validation items): "
          + "; ".join(report), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--phase1-steps", type=int, default=300)
    ap.add_argument("--phase2-steps", type=int, default=150)
    ap.add_argument("--phase3-steps", type=int, default=600)
    ap.add_argument("--target", type=float, default=None,
                    help="train phase 3 the published way for this one budget target (no cap)")
    ap.add_argument("--budget-weight", type=float, default=DEFAULT_BUDGET_WEIGHT,
                    help="phase 3 weight of the budget loss (DESIGN §2: 0.1); a published-way model that "
                         "settles above its --target needs more")
    ap.add_argument("--gate-lr", type=float, default=1e-3, help="phase 3 learning rate of the gates")
    ap.add_argument("--lr", type=float, default=1e-4, help="phase 3 learning rate of everything else")
    add_training_options(ap)
    args = ap.parse_args()
    device = start_training(args)
    cfg, vit, _ = load_base(args.run)
    model = from_dense(vit, cfg, args.n).to(device)  # built on the CPU, where the base was read
    vit.to(device)
    batches = Batches(data.load("train"), args.batch, seed=1000, device=device)
    val = data.load("val")

    # Phase 1: learners distilled on their own block's inputs; gates unused.
    learner_params = [p for _, _, a in model.acms() for p in (a.w1, a.b1, a.w2)]

    def phase1(step: int):
        x, _ = batches(step)
        pairs = acm_pairs(model, teacher_pairs(vit, x))
        return sum(distil_loss(acm, z, o) for acm, z, o in pairs), {}

    if run_phase("phase1", args.run, args.phase1_steps, model, learner_params, 1e-3, phase1, args.checkpoint_minutes):
        phase_metrics("phase1", model, vit, val)

    # Phase 2: learners frozen, gates trained on error-ratio labels. The budget input is random
    # here (labels do not depend on it); phase 3 teaches the gates to use it.
    model.load_state_dict(load_state(os.path.join(args.run, "phase1.ckpt"))["model"])
    gate_params = [p for _, _, a in model.acms() for p in a.gate.parameters()]
    rng = random.Random(7)

    def phase2(step: int):
        x, _ = batches(args.phase1_steps + step)
        budget = torch.tensor([rng.uniform(0.05, 1.0) for _ in range(x.shape[0])], device=device)
        losses = [gate_loss(acm, z, o, budget)[0] for acm, z, o in acm_pairs(model, teacher_pairs(vit, x))]
        return sum(losses) / len(losses), {}

    if run_phase("phase2", args.run, args.phase2_steps, model, gate_params, 3e-3, phase2, args.checkpoint_minutes):
        phase_metrics("phase2", model, vit, val)
    model.load_state_dict(load_state(os.path.join(args.run, "phase2.ckpt"))["model"])

    if args.phase3_steps:
        if args.target is None:
            name, targets, capped = "phase3", [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0], True
        else:
            name, targets, capped = phase3_name(args.target, args.budget_weight), [args.target], False
        groups = phase3_groups(model, args.gate_lr, args.lr)
        model.capped = capped

        def phase3(step: int):
            x, y = batches(args.phase1_steps + args.phase2_steps + step)
            # One budget target per batch, chosen by step so a resumed run sees the same sequence.
            return phase3_loss(model, x, y, random.Random(step).choice(targets), capped=capped,
                               budget_weight=args.budget_weight)

        model.train()
        run_phase(name, args.run, args.phase3_steps, model, groups, 1.0, phase3, args.checkpoint_minutes)
        model.load_state_dict(load_state(os.path.join(args.run, f"{name}.ckpt"))["model"])
        phase_metrics(name, model, vit, val)
    print("conversion done", flush=True)


if __name__ == "__main__":
    main()
