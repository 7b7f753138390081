"""Convert the trained dense speech model into an ACM model: the three phases of DESIGN §2, each
resumable, with budget-conditioned gates (one model serves every budget).

    nice -n 15 /usr/bin/python3 -m models.toolchain.speech.convert --corpus .cache/speech/espeak-v1 \\
        --run .cache/runs/speech

Every phase checkpoints to <run>/phaseN.ckpt every --checkpoint-minutes and at its end; a rerun
skips finished phases and resumes an interrupted one at its last step (the image conversion's
run_phase, reused).
"""
from __future__ import annotations

import argparse
import os
import random

import torch

from ..checkpoint import load_file, load_into, load_state
from ..convert import run_phase
from . import data
from ..vit import add_training_options, start_training
from .model import SpeechConfig, build_dense, dense_frames_logits, from_dense
from .phases import distil_step, gate_step, phase3_loss, window_frames


# Budget targets of phase 3, one drawn per batch.
PHASE3_TARGETS = [0.25, 0.4, 0.5, 0.6, 0.75, 1.0]


def draw_target(step: int, targets: dict[float, float] | None = None) -> float:
    """The budget target of phase-3 step `step`: one of PHASE3_TARGETS, equally likely (None), or
    one of `targets` {budget: weight} with probability in proportion to its weight. Seeded by the
    step alone, so a resumed run draws what it would have drawn."""
    if targets is None:
        return random.Random(step).choice(PHASE3_TARGETS)
    budgets = sorted(targets)
    return random.Random(step).choices(budgets, weights=[targets[b] for b in budgets])[0]


def phase3_params(model) -> list:
    """What phase 3 trains: the transformer; the conv encoder stays the dense one's."""
    return [p for name, p in model.named_parameters() if not name.startswith(("feature_extractor", "feature_projection"))]


def phase3_step_fn(model, dense, cfg, batches, device, speed_perturb: float = 0.0, first_batch: int = 0,
                   capped: bool = True, distil_weight: float = 0.0, targets: dict[float, float] | None = None):
    """One phase-3 step on batch first_batch + step: gain (and speed) augmentation, the dense conv
    features of every window, CTC + budget losses at one budget target drawn for the batch
    (draw_target with `targets`; with distil_weight, part of the CTC loss is traded for the dense
    model's per-frame posteriors)."""
    def step_fn(step: int):
        audio, samples, tg, tl = batches(first_batch + step)
        audio = data.gain_augment(audio, step, seed=2).to(device)
        samples, tg, tl = samples.to(device), tg.to(device), tl.to(device)
        if speed_perturb:
            audio, samples = data.speed_perturb(audio, samples, step, seed=3, spread=speed_perturb)
        frames = window_frames(dense, audio, cfg)
        teacher = None
        if distil_weight:
            with torch.no_grad():
                teacher = dense_frames_logits(dense, frames, audio.shape[0], cfg)
        return phase3_loss(model, frames, audio.shape[0], samples, tg, tl, draw_target(step, targets),
                           capped=capped, teacher=teacher, distil_weight=distil_weight)
    return step_fn


def load_dense(path: str):
    """(config, dense model, saved dict) from a saved dense model (base-best.pt: config + state)."""
    saved = load_file(path)
    cfg = SpeechConfig(**saved["config"])
    dense = build_dense(cfg)
    load_into(dense, saved["model"])
    return cfg, dense, saved


def load_base(run: str):
    cfg, dense, saved = load_dense(os.path.join(run, "base-best.pt"))
    return cfg, dense.eval(), saved


def load_checkpoint(run: str, name: str, cfg: SpeechConfig, dense) -> tuple:
    """(ACM model, checkpoint dict) of <run>/<name>.ckpt, built on the run's dense model; the
    checkpoint says whether q/k/v/o are ACMs (`convert --no-projections` leaves attention dense)."""
    state = load_state(os.path.join(run, f"{name}.ckpt"))
    if not state:
        raise SystemExit(f"{run} has no {name}.ckpt")
    model = from_dense(dense, cfg, projections=any(".q.w1" in k for k in state["model"]))
    load_into(model, state["model"])
    return model, state


def add_source_options(ap: argparse.ArgumentParser) -> None:
    """--corpus, --run, and the checkpoint a command starts from (--source) and writes (--name)."""
    ap.add_argument("--corpus", default=".cache/speech/espeak-v1")
    ap.add_argument("--run", required=True)
    ap.add_argument("--source", default="phase3", help="checkpoint of --run to start from")
    ap.add_argument("--name", required=True, help="checkpoint of --run to write (--source is kept)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".cache/speech/espeak-v1")
    ap.add_argument("--run", default=".cache/runs/speech")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--projections", action=argparse.BooleanOptionalAction, default=True,
                    help="also turn q/k/v/o into ACMs (--no-projections: FFNs only)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--phase1-steps", type=int, default=300)
    ap.add_argument("--phase2-steps", type=int, default=150)
    ap.add_argument("--phase3-steps", type=int, default=400)
    ap.add_argument("--capped", action=argparse.BooleanOptionalAction, default=True,
                    help="fine-tune under the request cap, as served (--no-capped: the published relaxation)")
    ap.add_argument("--speed-perturb", type=float, default=0.0, metavar="SPREAD",
                    help="phase 3: play each utterance 1 +- SPREAD times as fast (as the base was trained)")
    ap.add_argument("--distil", type=float, default=0.0, metavar="W",
                    help="phase 3: weight of the dense model's per-frame posteriors in the task loss (0: CTC only)")
    add_training_options(ap, threads=True)
    args = ap.parse_args()
    device = start_training(args)
    cfg, dense, _ = load_base(args.run)
    for p in dense.parameters():
        p.requires_grad_(False)
    model = from_dense(dense, cfg, args.n, args.projections).to(device)  # built where the base was read
    dense.to(device)
    batches = data.Batches(data.load(args.corpus, "train"), args.batch, seed=1000)

    learner_params = [p for _, _, a in model.acms() for p in (a.w1, a.b1, a.w2)]

    def phase1(step: int):
        audio, _, _, _ = batches(step)
        return distil_step(model, dense, window_frames(dense, audio.to(device), cfg)), {}

    run_phase("phase1", args.run, args.phase1_steps, model, learner_params, 1e-3, phase1, args.checkpoint_minutes)
    load_into(model, load_state(os.path.join(args.run, "phase1.ckpt"))["model"])

    gate_params = [p for _, _, a in model.acms() for p in a.gate.parameters()]

    def phase2(step: int):
        audio, _, _, _ = batches(args.phase1_steps + step)
        frames = window_frames(dense, audio.to(device), cfg)
        rng = random.Random(step)
        budget = torch.tensor([rng.uniform(0.05, 1.0) for _ in range(frames.shape[0])], dtype=torch.float64,
                              device=device)
        return gate_step(model, dense, frames, budget), {}

    run_phase("phase2", args.run, args.phase2_steps, model, gate_params, 3e-3, phase2, args.checkpoint_minutes)
    load_into(model, load_state(os.path.join(args.run, "phase2.ckpt"))["model"])

    if args.phase3_steps:
        model.train()
        step_fn = phase3_step_fn(model, dense, cfg, batches, device, args.speed_perturb,
                                 first_batch=args.phase1_steps + args.phase2_steps, capped=args.capped,
                                 distil_weight=args.distil)
        run_phase("phase3", args.run, args.phase3_steps, model, phase3_params(model), 1e-4, step_fn, args.checkpoint_minutes)
    print("conversion done", flush=True)


if __name__ == "__main__":
    main()
