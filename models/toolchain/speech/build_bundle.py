"""Evaluate the converted speech model on the held-out test split (unseen voices and sentences)
and export the bundle.

    nice -n 15 /usr/bin/python3 -m models.toolchain.speech.build_bundle --corpus .cache/speech/espeak-v1 \\
        --run .cache/runs/speech --out models/speech-w2v2-acm

The evaluation runs the served path: windows, argmax gates, per-request cap, grouped kernel,
greedy CTC. The figures go into the manifest's `quality` (CER and WER per budget).
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from .. import metrics
from ..checkpoint import load_state
from . import data
from .convert import load_base, load_checkpoint
from .export import export_bundle, manifest
from .model import dense_windows_logits, window_rows
from .phases import acm_windows_logits
from .train import evaluate

BUDGETS = [0.25, 0.5, 0.75, 1.0]


def used_fraction(model, audio: torch.Tensor, budget: float) -> float:
    """Mean cost-weighted learner fraction per window, as the server reports it."""
    w = window_rows(audio, model.cfg)
    _, counts = model(w, torch.full((w.shape[0],), budget, dtype=torch.float64))
    return metrics.used_fraction(model, counts).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".cache/speech/espeak-v1")
    ap.add_argument("--run", default=".cache/runs/speech")
    ap.add_argument("--out", default="models/speech-w2v2-acm")
    ap.add_argument("--name", default="speech-w2v2-acm")
    ap.add_argument("--test-limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint of --run to export (default: phase3, else phase2), e.g. one of speech.finetune")
    ap.add_argument("--recipe-note", default=None, help="appended to the manifest's training recipe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, dense, base = load_base(args.run)
    phases = [p for p in ("phase3", "phase2") if os.path.exists(os.path.join(args.run, f"{p}.ckpt"))]
    if args.checkpoint:
        phases = [args.checkpoint] + phases
    model, _ = load_checkpoint(args.run, phases[0], cfg, dense)
    model.eval()
    test = data.load(args.corpus, "test", args.test_limit)
    with open(os.path.join(args.corpus, "corpus.json")) as f:
        corpus_meta = json.load(f)
    dataset = f"synthetic espeak-ng corpus (seed {corpus_meta['seed']}) test split: voices and sentences unseen in training"
    with torch.no_grad():
        dense_result = evaluate(lambda a: dense_windows_logits(dense, a, cfg), test, cfg)
        print(f"dense: CER {dense_result['cer']:.4f} WER {dense_result['wer']:.4f}", flush=True)
        quality = []
        for b in BUDGETS:
            r = evaluate(lambda a, b=b: acm_windows_logits(model, a, b), test, cfg)
            used = sum(used_fraction(model, data.collate(test, [i])[0], b) for i in range(len(test))) / len(test)
            print(f"budget {b}: CER {r['cer']:.4f} WER {r['wer']:.4f} used {used:.4f}", flush=True)
            for metric in ("cer", "wer"):
                quality.append({"budget": b, "metric": metric, "value": round(r[metric], 4), "used": round(used, 4),
                                "dataset": dataset, "items": len(test)})
    done = "1 and 2" if phases[0] == "phase2" else "1, 2 and 3"
    recipe = (f"dense Wav2Vec2 CTC from scratch, then phases {done} of the conversion recipe "
              f"({'FFN and q/k/v/o' if model.projections else 'FFN'} ACMs)")
    training = {"recipe": recipe + (f"; {args.recipe_note}" if args.recipe_note else ""),
                "dense_test_cer": round(dense_result["cer"], 4), "dense_test_wer": round(dense_result["wer"], 4),
                "base_step": int(base["step"]),
                "phase_steps": {p: int(load_state(os.path.join(args.run, f"{p}.ckpt"))["step"]) for p in reversed(phases)
                                if os.path.exists(os.path.join(args.run, f"{p}.ckpt"))},
                "corpus": corpus_meta}
    meta = manifest(model, args.name, quality=quality, training=training, dense_graph="dense.onnx")
    export_bundle(model, args.out, meta, dense=dense)
    print(f"bundle written to {args.out}", flush=True)


if __name__ == "__main__":
    main()
