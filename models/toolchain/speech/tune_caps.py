"""Search the speech model's cap weights by the CTC loss they cost (the image model's tune_caps).

    python3 -m models.toolchain.speech.tune_caps --corpus .cache/speech/espeak-v1x --run .cache/runs/speech-ft5 \\
        --source phase3b --name phase3b-caps --items 200

The window cap shares a budget among the ACMs in proportion to ACMWav2Vec2.cap_weights
(acm.weighted_cap_budgets). Phase 3 trains with equal weights, which cap every ACM at the budget
itself, and the gates, uncapped, ask for most of their learners at any budget: the cap decides
what runs, and an equal share need not be the best use of it. This step searches the weights
directly: coordinate descent (tune_caps.search_weights), one ACM at a time, its weight multiplied
or divided by --factor and the change kept when the mean CTC loss per character of --items
training utterances, weighted over --budgets, goes down. Every candidate spends exactly the
budget (the caps always cost it) and no parameter is trained; the checkpoint --name is --source
with the new weights. Each window's conv features are computed once: a candidate runs only the
transformer.

At the end it compares --source and --name by greedy CER and WER on --val-limit validation
utterances at each searched budget (the served path). `speech.build_bundle --checkpoint <name>`
exports the result, and `npm run evaluate:speech -- --model-dir <out> --split val` scores it with
the bundle's decoder.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from torch.nn import functional as F

from ..checkpoint import save_state
from ..tune_caps import add_search_options, search_budgets, search_weights, tuned_state
from . import data
from .convert import add_source_options, load_base, load_checkpoint
from .model import ACMWav2Vec2, keep_chunk, output_frames, window_rows
from .phases import acm_windows_logits
from .train import evaluate

Batch = tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, torch.Tensor]


@torch.no_grad()
def projected_batches(model: ACMWav2Vec2, split: data.Split, idx: list[int], batch: int = 16) -> list[Batch]:
    """The utterances `idx` of `split`, in batches of similar length, as what every candidate
    reuses: (projected conv features of every window [B*chunks, window_frames, C], B, samples [B],
    targets, target lengths [B])."""
    order = sorted(idx, key=lambda i: len(split.audio[i]))
    out = []
    for start in range(0, len(order), batch):
        audio, samples, targets, lengths = data.collate(split, order[start:start + batch])
        out.append((model.project(window_rows(audio, model.cfg)), audio.shape[0], samples, targets, lengths))
    return out


@torch.no_grad()
def asked_fractions(model: ACMWav2Vec2, batches: list[Batch], budgets=(0.25, 0.5, 0.75, 1.0)) -> torch.Tensor:
    """Per ACM [A], the mean fraction of its learners its gate asks for with no cap, over every
    frame of every window of `batches` and over `budgets`."""
    capped, model.capped = model.capped, False
    total, frames = torch.zeros(len(model.cap_weights), dtype=torch.float64), 0
    try:
        for budget in budgets:
            for projected, _, _, _, _ in batches:
                _, counts = model.from_projected(projected, torch.full((projected.shape[0],), budget, dtype=torch.float64))
                total += counts.to(torch.float64).sum((0, 2))
                frames += counts.shape[0] * counts.shape[2]
    finally:
        model.capped = capped
    n = torch.tensor([a.n for _, _, a in model.acms()], dtype=torch.float64)
    return total / frames / n


@torch.no_grad()
def ctc_cap_loss(model: ACMWav2Vec2, batches: list[Batch], budgets: dict[float, float]) -> float:
    """Sum over budgets of weight * the capped model's CTC loss per target character, averaged over
    the utterances of `batches` (served path: argmax gates, cap, grouped kernel)."""
    model.eval()
    total, items = 0.0, sum(b for _, b, _, _, _ in batches)
    for budget, weight in budgets.items():
        loss = 0.0
        for projected, b, samples, targets, lengths in batches:
            logits, _ = model.from_projected(projected, torch.full((projected.shape[0],), budget, dtype=torch.float64))
            log_probs = keep_chunk(logits, b, model.cfg).log_softmax(-1).transpose(0, 1)
            frames = output_frames(samples, model.cfg).clamp_max(log_probs.shape[0])
            per_item = F.ctc_loss(log_probs, targets, frames, lengths, blank=0, reduction="none", zero_infinity=True)
            loss += float((per_item / lengths).sum())
        total += weight * loss / items
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_options(ap)
    ap.add_argument("--items", type=int, default=200, help="training utterances the loss is measured on (a seeded sample)")
    ap.add_argument("--start", choices=("source", "asked"), default="source",
                    help="weights the search starts from: --source's own, or each ACM's asked fraction")
    add_search_options(ap, "0.5:1,0.25:0.5", sweeps=2, objective="CTC loss per character")
    ap.add_argument("--val-limit", type=int, default=300, help="validation utterances of the final comparison (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    budgets = search_budgets(ap, args)
    if args.items <= 0:
        ap.error(f"--items must be positive, got {args.items}")
    if args.name == args.source:
        ap.error("--name must differ from --source: the source checkpoint is kept")
    torch.set_num_threads(args.threads)
    cfg, dense, _ = load_base(args.run)
    model, source = load_checkpoint(args.run, args.source, cfg, dense)
    model.eval()

    train = data.load(args.corpus, "train")
    n = min(args.items, len(train))
    pick = np.sort(np.random.default_rng(5).choice(len(train), n, replace=False)).tolist()
    t0 = time.monotonic()
    batches = projected_batches(model, train, pick)
    print(f"{n:,} training utterances, conv features in {time.monotonic() - t0:.0f} s", flush=True)

    def score(w: torch.Tensor) -> float:
        model.cap_weights.copy_(w)
        return ctc_cap_loss(model, batches, budgets)

    names = [name.removeprefix("encoder.") for name, _, _ in model.acms()]
    asked = asked_fractions(model, batches)
    print("asked fraction per ACM without a cap (budgets 0.25-1.0): "
          + ", ".join(f"{name} {v:.2f}" for name, v in zip(names, asked.tolist())), flush=True)
    source_weights = model.cap_weights.clone()
    start = source_weights if args.start == "source" else asked.clamp_min(1e-3) / asked.max()
    weights, _ = search_weights(score, start, args.factor, args.sweeps,
                                log=lambda line: print(f"[{time.monotonic() - t0:6.0f} s] {line}", flush=True))
    settings = {"items": n, "budgets": budgets, "start": args.start, "factor": args.factor, "sweeps": args.sweeps}
    state = tuned_state(source, args.source, weights, settings, items_words="training utterances",
                        objective="CTC loss", tool="models.toolchain.speech.tune_caps")
    save_state(os.path.join(args.run, f"{args.name}.ckpt"), state)
    print("cap weights: " + ", ".join(f"{name} {v:.3f}"
                                       for name, v in zip(names, state["model"]["cap_weights"].tolist())), flush=True)
    if args.val_limit:
        val = data.load(args.corpus, "val", args.val_limit)
        print(f"greedy decoding, {len(val)} validation utterances:", flush=True)
        for label, w in ((args.source, source_weights), (args.name, weights)):
            model.cap_weights.copy_(w)
            for b in budgets:
                r = evaluate(lambda a, b=b: acm_windows_logits(model, a, b), val, cfg)
                print(f"  {label} @ {b:g}: CER {r['cer']:.4f} WER {r['wer']:.4f}", flush=True)


if __name__ == "__main__":
    main()
