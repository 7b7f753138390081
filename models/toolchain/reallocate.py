"""Share each request's budget among the ACMs the way the gates ask, and fine-tune under that cap.

    python3 -m models.toolchain.reallocate --run .cache/runs/fashion --steps 600

The single every-budget model is served under a per-request cap (ACMViT.cap_budgets). With equal
cap weights every ACM gets the same fraction of its learners: at budget 0.25, one learner in four
everywhere, although the gates of some layers ask for three and others for one. This step
  1. measures, on training items, the fraction of its learners each ACM's gate asks for without a
     cap, and sets the model's cap weights to those fractions (to the power --power): the caps
     then follow the gates while still costing exactly the budget;
  2. continues phase 3 from <run>/phase3.ckpt under the new cap (same losses and budget draw as
     `convert`, or --targets), into <run>/phase3-shared.ckpt, resumable like every phase;
  3. prints the phase metrics on validation items.
--budget-norms gives every layer norm a scale and shift per budget (trained with the rest, or alone
with --norms-only). --distil W takes W of the task loss from a teacher's answers: the dense model's, or with --teacher self
the model's own at budget 1.0; --budget-weight sets the budget loss's weight (phases.phase3_loss).
`build_bundle --single phase3-shared` evaluates and exports the result. Started from a checkpoint
that has weights of its own (--source phase3-shared), it keeps them unless --recalibrate.
"""
from __future__ import annotations

import argparse
import os
import random

import numpy as np
import torch

from . import data
from .checkpoint import load_state
from .convert import Batches, load_acm, load_base, phase3_groups, phase_metrics, run_phase
from .phases import phase3_loss
from .vit import add_training_options, start_training

TARGETS = [0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0]  # as convert's phase 3


@torch.no_grad()
def asked_fractions(model, x: torch.Tensor, budgets=TARGETS, batch: int = 500) -> torch.Tensor:
    """Per ACM [A], the mean fraction of its learners the gate asks for with no cap, over the
    items x and the budgets."""
    capped, model.capped = model.capped, False
    model.eval()
    total = torch.zeros(len(model.acms()), dtype=torch.float64)
    for b in budgets:
        for i in range(0, len(x), batch):
            _, counts = model(x[i:i + batch], torch.full((len(x[i:i + batch]),), b, dtype=torch.float64))
            total += counts.to(torch.float64).mean(-1).sum(0)
    model.capped = capped
    n = torch.tensor([a.n for _, _, a in model.acms()], dtype=torch.float64)
    return total / (len(x) * len(budgets)) / n


@torch.no_grad()
def teacher_logits(model, vit, x: torch.Tensor, teacher: str | None) -> torch.Tensor | None:
    """The answers the task loss distils from: the dense model's ("dense"), the ACM model's own at
    budget 1.0 as served, under the cap ("self"), or none."""
    if teacher == "dense":
        return vit(x)
    if teacher == "self":
        return model(x, torch.ones(x.shape[0], dtype=torch.float64, device=x.device))[0]
    return None


def norm_groups(model, lr: float) -> list[dict]:
    """The norms' per-budget corrections alone, at lr; every other parameter is frozen."""
    tables = model.norm_corrections()
    ids = {id(p) for p in tables}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    return [{"params": tables, "lr": lr}]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--source", default="phase3", help="the checkpoint to start from, in --run")
    ap.add_argument("--name", default="phase3-shared", help="the checkpoint to write, in --run")
    ap.add_argument("--power", type=float, default=1.0,
                    help="cap weight = asked fraction ** power (0: equal weights, the plain cap)")
    ap.add_argument("--calibration-items", type=int, default=2000)
    ap.add_argument("--recalibrate", action="store_true",
                    help="measure the weights again even if --source already has its own")
    ap.add_argument("--targets", default=",".join(str(t) for t in TARGETS),
                    help="budget targets, one drawn per batch; repeat one to draw it more often")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--gate-lr", type=float, default=5e-4)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--budget-weight", type=float, default=0.1,
                    help="weight of the budget loss (DESIGN's 0.1); more holds the gates' own asks closer "
                         "to each drawn target, so the cap cuts less of what they ask")
    ap.add_argument("--distil", type=float, default=0.0,
                    help="weight of the teacher's answers in the task loss (0: labels only)")
    ap.add_argument("--teacher", choices=["dense", "self"], default="dense",
                    help="whose answers --distil learns from: the dense model's, or the model's own at "
                         "budget 1.0 as served (capped, no gradient), so the low budgets learn from the full one")
    ap.add_argument("--budget-norms", action="store_true",
                    help="give every layer norm a scale and shift per budget (ACMViT.condition_norms), "
                         "starting at zero, if --source has none")
    ap.add_argument("--norms-only", action="store_true",
                    help="train only the norms' per-budget corrections; every shared weight stays the source's")
    ap.add_argument("--norm-lr", type=float, default=1e-3, help="learning rate of the per-budget norm corrections")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also keep the weights every N steps as <name>@<step>.ckpt, to average "
                         "(models.toolchain.average); 0: none")
    add_training_options(ap)
    args = ap.parse_args()
    if args.snapshot_every < 0:
        ap.error(f"--snapshot-every must be >= 0, got {args.snapshot_every}")
    if not 0.0 <= args.distil <= 1.0:
        ap.error(f"--distil must be in [0, 1], got {args.distil}")
    if args.budget_weight < 0:
        ap.error(f"--budget-weight must be >= 0, got {args.budget_weight}")
    device = start_training(args)
    cfg, vit, _ = load_base(args.run)
    model = load_acm(vit, cfg, os.path.join(args.run, f"{args.source}.ckpt"))
    targets = [float(t) for t in args.targets.split(",")]
    resuming = os.path.exists(os.path.join(args.run, f"{args.name}.ckpt"))
    equal = bool((model.cap_weights == model.cap_weights[0]).all())
    train = data.load("train")
    if not resuming and (equal or args.recalibrate):
        pick = np.random.default_rng(11).choice(len(train.y), args.calibration_items, replace=False)
        asked = asked_fractions(model, data.to_tensor(train.x[np.sort(pick)]))
        weights = asked.clamp_min(1e-3) ** args.power
        model.cap_weights.copy_(weights / weights.max())
        print("asked fraction per ACM: " + " ".join(f"{v:.2f}" for v in asked.tolist()), flush=True)
    # Else the weights are the source's, or (resuming) run_phase reads them with the checkpoint.
    model.to(device)
    vit.to(device)

    if args.budget_norms and model.norm_knots is None:
        model.condition_norms()
    if args.norms_only and model.norm_knots is None:
        ap.error("--norms-only needs conditioned norms: --budget-norms, or a --source that has them")
    groups = norm_groups(model, args.norm_lr) if args.norms_only else phase3_groups(model, args.gate_lr, args.lr, args.norm_lr)
    teacher = args.teacher if args.distil else None
    batches = Batches(train, args.batch, seed=2000, device=device)
    model.capped = True

    def step_fn(step: int):
        x, y = batches(step)
        return phase3_loss(model, x, y, random.Random(10_000 + step).choice(targets), capped=True,
                           budget_weight=args.budget_weight, teacher=teacher_logits(model, vit, x, teacher),
                           distil_weight=args.distil)

    model.train()
    run_phase(args.name, args.run, args.steps, model, groups, 1.0, step_fn, args.checkpoint_minutes,
              snapshot_every=args.snapshot_every)
    model.load_state_dict(load_state(os.path.join(args.run, f"{args.name}.ckpt"))["model"])
    print("cap weights: " + " ".join(f"{v:.2f}" for v in model.cap_weights.tolist()), flush=True)
    phase_metrics(args.name, model, vit, data.load("val"))


if __name__ == "__main__":
    main()
