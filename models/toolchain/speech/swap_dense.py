"""A copy of a speech bundle whose dense graph is another dense model: to score a retrained dense
base with the bundle's own decoder and language model before converting it.

    /usr/bin/python3 -m models.toolchain.speech.swap_dense --bundle models/speech-w2v2-acm \\
        --dense .cache/runs/speech-ft3/base-best.pt --out .cache/eval/speech-ft3
    npm run evaluate:speech -- --model-dir .cache/eval/speech-ft3 --split val --budgets ''

The ACM graph, manifest and language model are copied as they are, so only the dense rows of the
evaluation describe the new model. The dense model must have the bundle's audio geometry and CTC
vocabulary.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import torch

from ..export import export_dense
from .convert import load_dense
from .export import DenseWindow


def swap_dense(bundle: str, dense_path: str, out: str) -> dict:
    """Writes the copy to `out` (replaced if it exists); returns the dense model's saved metadata."""
    with open(os.path.join(bundle, "acm.json")) as f:
        meta = json.load(f)
    if not meta.get("dense_graph"):
        raise ValueError(f"{bundle}: the manifest names no dense_graph to replace")
    cfg, dense, saved = load_dense(dense_path)
    audio, vocab = meta["audio"], len(meta["ctc"]["vocabulary"])
    if (cfg.window_samples, cfg.chunk_frames, cfg.left_frames, cfg.vocab) != (
            audio["window_samples"], audio["chunk_frames"], audio["left_context_frames"], vocab):
        raise ValueError(f"{dense_path}: windows of {cfg.window_samples} samples ({cfg.left_frames} + {cfg.chunk_frames} "
                         f"frames) and {cfg.vocab} symbols; the bundle has {audio['window_samples']} "
                         f"({audio['left_context_frames']} + {audio['chunk_frames']}) and {vocab}")
    if os.path.abspath(out) == os.path.abspath(bundle):
        raise ValueError("--out must not be the bundle itself")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(bundle, out)
    export_dense(DenseWindow(dense), os.path.join(out, meta["dense_graph"]), torch.randn(2, cfg.window_samples) * 0.1,
                 meta["inputs"]["audio"])
    return {k: saved.get(k) for k in ("step", "val")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="models/speech-w2v2-acm")
    ap.add_argument("--dense", required=True, help="a dense model saved by speech.train (base-best.pt)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    try:
        info = swap_dense(args.bundle, args.dense, args.out)
    except ValueError as e:
        raise SystemExit(str(e))
    print(f"wrote {args.out}: {args.bundle} with the dense model of {args.dense} (step {info['step']})")


if __name__ == "__main__":
    main()
