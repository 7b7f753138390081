"""Continue phase 3 of a converted speech model from one of its checkpoints, under a new name.

    python3 -m models.toolchain.speech.finetune --run .cache/runs/speech-import --source phase3 \\
        --name phase3-sp --steps 450 --speed-perturb 0.1 --threads 1

The same training as phase 3 of `speech.convert` (CTC + budget, entropy and diversity losses, one
budget target per batch, the transformer only, Adam with a cosine decay to 10% of --lr), started
from <run>/<source>.ckpt and written to <run>/<name>.ckpt, resumable; --targets draws the budget
targets with other weights. Its use: more training for
a model whose run folder was rebuilt from its bundle (`speech.import_bundle`), for instance with
speed perturbation, which the bundled model's phase 3 did not have. `speech.build_bundle
--checkpoint <name>` evaluates and exports the result.
"""
from __future__ import annotations

import argparse

from ..convert import run_phase
from ..vit import add_training_options, start_training
from . import data
from ..tune_caps import parse_budgets
from .convert import PHASE3_TARGETS, add_source_options, load_base, load_checkpoint, phase3_params, phase3_step_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_options(ap)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--speed-perturb", type=float, default=0.0, metavar="SPREAD",
                    help="play each utterance 1 +- SPREAD times as fast (see data.speed_perturb)")
    ap.add_argument("--distil", type=float, default=0.0, metavar="W",
                    help="phase 3: weight of the dense model's per-frame posteriors in the task loss (0: CTC only)")
    ap.add_argument("--targets", default=None, metavar="B:W,...",
                    help="budget:weight pairs the batches' budget targets are drawn from (default: "
                         f"{', '.join(map(str, PHASE3_TARGETS))}, equally likely), e.g. 0.25,0.5:2,1:0.5 "
                         "to train the middle budgets more")
    ap.add_argument("--seed", type=int, default=4242, help="order of the training batches")
    add_training_options(ap, threads=True)
    args = ap.parse_args()
    if args.name == args.source:
        raise SystemExit("--name must differ from --source: the source checkpoint is kept")
    targets = None
    if args.targets is not None:
        try:
            targets = parse_budgets(args.targets)
        except ValueError as e:
            ap.error(f"--targets: {e}")
    device = start_training(args)
    cfg, dense, _ = load_base(args.run)
    for p in dense.parameters():
        p.requires_grad_(False)
    model, _ = load_checkpoint(args.run, args.source, cfg, dense)
    model.to(device)
    dense.to(device)
    batches = data.Batches(data.load(args.corpus, "train"), args.batch, seed=args.seed)

    model.train()
    step_fn = phase3_step_fn(model, dense, cfg, batches, device, args.speed_perturb, distil_weight=args.distil,
                              targets=targets)
    run_phase(args.name, args.run, args.steps, model, phase3_params(model), args.lr, step_fn, args.checkpoint_minutes)
    print(f"{args.name} done", flush=True)


if __name__ == "__main__":
    main()
