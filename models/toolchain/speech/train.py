"""Train the dense Wav2Vec2 CTC recogniser from scratch on the synthetic corpus; resumable.

    nice -n 15 /usr/bin/python3 -m models.toolchain.speech.train --corpus .cache/speech/espeak-v1 \\
        --run .cache/runs/speech --steps 1600

Every batch runs exactly as the server will: conv encoder over the utterance, transformer over
windows of left context + chunk, CTC over the chunks' frames. A checkpoint (<run>/base.ckpt) is
written every --checkpoint-minutes and at the end; a rerun resumes at its step. Validation
(greedy CTC, CER and WER on held-out voices and sentences) runs every --eval-every steps and the
best model by CER is kept as <run>/base-best.pt.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from ..checkpoint import load_state, save_state
from ..vit import add_training_options, start_training
from . import data
from .convert import load_dense
from .model import CONFIGS, SpeechConfig, build_dense, dense_windows_logits, error_rates, greedy_decode, output_frames


DEFAULT_STEPS = 1600


def ctc_loss(logits: torch.Tensor, samples: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor,
             cfg: SpeechConfig) -> torch.Tensor:
    log_probs = logits.log_softmax(-1).transpose(0, 1)  # [T, B, V]
    lengths = output_frames(samples, cfg).clamp_max(log_probs.shape[0])
    return F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, reduction="mean", zero_infinity=True)


@torch.no_grad()
def transcribe(logits_fn, split: data.Split, cfg: SpeechConfig, batch: int = 16,
               device: torch.device | str = "cpu") -> list[str]:
    """Greedy transcripts of a split; logits_fn(audio [B, S]) -> [B, frames, V]."""
    order = sorted(range(len(split)), key=lambda i: len(split.audio[i]))
    hyps: dict[int, str] = {}
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        audio, samples, _, _ = data.collate(split, idx)
        logits = logits_fn(audio.to(device)).cpu()
        frames = output_frames(samples, cfg)
        for row, i in enumerate(idx):
            hyps[i] = greedy_decode(logits[row, :int(frames[row])])
    return [hyps[i] for i in range(len(split))]


def evaluate(logits_fn, split: data.Split, cfg: SpeechConfig, device: torch.device | str = "cpu") -> dict:
    hyps = transcribe(logits_fn, split, cfg, device=device)
    return {**error_rates(hyps, split.texts), "examples": [[h, r] for h, r in zip(hyps[:3], split.texts[:3])]}


def init_from(cfg: SpeechConfig, path: str) -> torch.nn.Module:
    """The saved dense model at `path` (base-best.pt), which must have configuration `cfg`."""
    saved_cfg, model, saved = load_dense(path)
    if json.dumps(saved_cfg.to_dict()) != json.dumps(cfg.to_dict()):
        raise SystemExit(f"--init {path}: it was trained as {json.dumps(saved_cfg.to_dict())}, "
                         f"not as the configuration asked for, {json.dumps(cfg.to_dict())}")
    print(f"initialised from {path} (its step {saved.get('step')})", flush=True)
    return model


def schedule_total(asked: int | None, saved_total: int, reached: int) -> int:
    """Total steps of a resumed run's schedule: the one it was started with, or `asked` (--steps)
    when given, which must leave steps to run."""
    if asked is None:
        return saved_total
    if asked <= reached:
        raise ValueError(f"--steps must be above the step the run reached ({reached}), got {asked}")
    return asked


def freeze_conv(model: torch.nn.Module, layers: int) -> None:
    """Stop training the first `layers` layers of the conv encoder. Nothing below them trains, so
    autograd skips their backward pass altogether."""
    for i, layer in enumerate(model.feature_extractor.conv_layers):
        for p in layer.parameters():
            p.requires_grad_(i >= layers)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=".cache/speech/espeak-v1")
    ap.add_argument("--run", default=".cache/runs/speech")
    ap.add_argument("--config", default="speech-small", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=None,
                    help="total steps of the learning-rate schedule (default 1600). A resumed run keeps the "
                         "total it was started with unless this is given: then its schedule is re-fitted "
                         "to the new total from the step it reached")
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead of --steps: as many steps as fit in about this many minutes, counted from "
                         "the speed of the first 100 (the schedule is fixed from then on)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--sorted-epochs", type=int, default=0,
                    help="run the first N epochs shortest utterances first (see data.Batches)")
    ap.add_argument("--speed-perturb", type=float, default=0.0, metavar="SPREAD",
                    help="play each training utterance 1 +- SPREAD times as fast (see data.speed_perturb)")
    ap.add_argument("--init", default=None, metavar="MODEL",
                    help="start from this dense model (a base-best.pt) instead of random weights: "
                         "fine-tuning, e.g. on a larger corpus or with --speed-perturb; the optimiser and "
                         "the learning-rate schedule start afresh")
    ap.add_argument("--freeze-conv", type=int, default=0, metavar="N",
                    help="with --init: keep the first N layers of the conv encoder as they are. They run on "
                         "the most frames, so their backward pass is most of a step's time (N = 3: about "
                         "1.8 times as many steps per second for speech-base on two cores)")
    ap.add_argument("--seed", type=int, default=0,
                    help="order of the training batches and draws of their augmentation; a second fine-tune "
                         "from a model trained with the same seed sees the batches in a new order with another")
    ap.add_argument("--eval-every", type=int, default=400)
    ap.add_argument("--val-limit", type=int, default=200, help="validation utterances per evaluation")
    add_training_options(ap, threads=True)
    args = ap.parse_args()
    device = start_training(args)
    cfg = CONFIGS[args.config]
    conv_layers = len(cfg.conv)
    if not 0 <= args.freeze_conv <= conv_layers:
        ap.error(f"--freeze-conv must be in [0, {conv_layers}] (the conv encoder's layers), got {args.freeze_conv}")
    if args.freeze_conv and not args.init:
        ap.error("--freeze-conv needs --init: layers trained from random weights would stay random")
    model = (init_from(cfg, args.init) if args.init else build_dense(cfg)).to(device)
    ckpt = os.path.join(args.run, "base.ckpt")
    state = load_state(ckpt)
    # A resumed run keeps the layers it started with frozen (its optimiser holds the others only).
    frozen = state.get("freeze_conv", 0) if state else args.freeze_conv
    # ... and the batch order it started with (the seed was 0 before it was saved).
    seed = state.get("seed", 0) if state else args.seed
    freeze_conv(model, frozen)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    train, val = data.load(args.corpus, "train"), data.load(args.corpus, "val", args.val_limit)
    batches = data.Batches(train, args.batch, seed=seed, sorted_epochs=args.sorted_epochs)
    print(f"train {len(train)} utterances, val {len(val)}; config {json.dumps(cfg.to_dict())}", flush=True)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))

    os.makedirs(args.run, exist_ok=True)
    step, best = 0, math.inf
    if state:
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        step, best = state["step"], state["best"]
        saved_total = state.get("total", DEFAULT_STEPS)
        try:
            args.steps = schedule_total(args.steps, saved_total, step)
        except ValueError as e:
            ap.error(str(e))
        if args.steps != saved_total:
            print(f"schedule re-fitted from {saved_total} to {args.steps} steps: learning rate "
                  f"{lr_at(step):.2e} at step {step}", flush=True)
        print(f"resumed at step {step}/{args.steps}, best val CER {best:.4f}", flush=True)
    elif args.steps is None:
        args.steps = DEFAULT_STEPS
    if frozen:
        print(f"conv encoder layers 0..{frozen - 1} frozen", flush=True)

    def save() -> None:
        save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                          "config": cfg.to_dict(), "total": args.steps, "freeze_conv": frozen,
                          "seed": seed})

    last_save, t0, seen, start = time.time(), time.time(), 0.0, step
    running = None
    while step < args.steps:
        model.train()
        audio, samples, targets, target_lengths = batches(step)
        # Seed 0 draws what runs drew before --seed existed.
        audio = data.gain_augment(audio, step, seed=1 + 10 * seed).to(device)
        samples, targets, target_lengths = samples.to(device), targets.to(device), target_lengths.to(device)
        if args.speed_perturb:
            audio, samples = data.speed_perturb(audio, samples, step, seed=2 + 10 * seed, spread=args.speed_perturb)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = ctc_loss(dense_windows_logits(model, audio, cfg), samples, targets, target_lengths, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        if args.minutes and step == 100 and start == 0:
            # 10% of the time is left for validation passes and checkpoints.
            args.steps = max(step + 1, int(0.9 * args.minutes * 60 * step / (time.time() - t0)))
            print(f"100 steps took {time.time() - t0:.1f}s: training {args.steps} steps", flush=True)
        seen += samples.sum().item() / 16000
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 25 == 0 or step == args.steps:
            print(f"step {step}/{args.steps} ctc {running:.4f} lr {lr_at(step):.2e} "
                  f"{seen / (time.time() - t0):.1f} s audio/s", flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            result = evaluate(lambda a: dense_windows_logits(model, a, cfg), val, cfg, device)
            print(f"step {step}: val CER {result['cer']:.4f} WER {result['wer']:.4f} e.g. {result['examples'][0]}", flush=True)
            if result["cer"] < best:
                best = result["cer"]
                torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "val": result, "step": step},
                           os.path.join(args.run, "base-best.pt"))
            save()
            last_save = time.time()
        elif time.time() - last_save > args.checkpoint_minutes * 60:
            save()
            last_save = time.time()
    print(f"done after {step - start} steps this run: best val CER {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
