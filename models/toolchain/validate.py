"""Validation accuracy of phase-3 checkpoints side by side, to choose a model before any test figure.

    python3 -m models.toolchain.validate --run .cache/runs/fashion phase3-shared phase3-kd

Every checkpoint is evaluated on all validation items (index 5500..5999 of each class file) at the
served budgets, under the request cap, with build_bundle's evaluation. The test split is not read.
`--split val-b` evaluates on the second half of them only (5750..5999), for a model whose cap
weights were searched on the first half (tune_caps --split val-a). `--plain-caps` evaluates
without passing a layer's unspent budget on to the later layers (acm.pass_on_unspent).
"""
from __future__ import annotations

import argparse
import os

from . import data
from .build_bundle import BUDGETS, evaluate
from .convert import load_acm, load_base
from .vit import set_threads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--budgets", default=",".join(str(b) for b in BUDGETS))
    ap.add_argument("--split", default="val", choices=["val", "val-a", "val-b"])
    ap.add_argument("--plain-caps", action="store_true",
                    help="do not pass a layer's unspent budget on to the later layers (ACMViT.pass_unspent), "
                         "as models were served before that")
    ap.add_argument("checkpoints", nargs="+", help="checkpoint names in --run, without .ckpt")
    args = ap.parse_args()
    set_threads()
    budgets = [float(b) for b in args.budgets.split(",")]
    cfg, vit, _ = load_base(args.run)
    val = data.load(args.split)
    print(f"{len(val.y)} items of {args.split}; accuracy % (learner fraction used) per budget", flush=True)
    print("checkpoint".ljust(24) + "".join(f"{b:>17g}" for b in budgets), flush=True)
    for name in args.checkpoints:
        model = load_acm(vit, cfg, os.path.join(args.run, f"{name}.ckpt"))  # capped, as served
        model.pass_unspent = not args.plain_caps
        r = evaluate(model, None, val, budgets)["acm"]
        print(name.ljust(24) + "".join(f"{100 * r[b]['accuracy']:>9.2f} ({r[b]['used']:.3f})" for b in budgets),
              flush=True)


if __name__ == "__main__":
    main()
