"""Train the dense ViT on the Fashion-MNIST training items; resumable, model selected on validation.

    python3 -m models.toolchain.train_base --run .cache/runs/fashion --epochs 12
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .checkpoint import load_state, save_state
from .vit import CONFIGS, build_vit, set_threads


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-pixel shifts and horizontal flips (garments are left-right symmetric)."""
    b = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), value=float(x.min()))
    dx = torch.randint(0, 5, (b,), generator=gen)
    dy = torch.randint(0, 5, (b,), generator=gen)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(b)])
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def evaluate(model, split: data.Split, batch: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(split.y), batch):
        x = data.to_tensor(split.x[i:i + batch])
        correct += (model(x).argmax(-1).numpy() == split.y[i:i + batch]).sum()
    return correct / len(split.y)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--config", default="fashion-small")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--checkpoint-minutes", type=float, default=3.0)
    args = ap.parse_args()
    set_threads()
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]
    model = build_vit(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    train, val = data.load("train"), data.load("val")
    steps_per_epoch = len(train.y) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    ckpt = os.path.join(args.run, "base.ckpt")
    state = load_state(ckpt)
    step, best = 0, -1.0
    if state:
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        step, best = state["step"], state["best"]
        print(f"resumed at step {step}/{total}, best val {best:.4f}", flush=True)
    last_save = time.time()
    while step < total:
        epoch = step // steps_per_epoch
        perm = np.random.default_rng(epoch).permutation(len(train.y))
        gen = torch.Generator().manual_seed(epoch)
        model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        for s in range(step % steps_per_epoch, steps_per_epoch):
            idx = perm[s * args.batch:(s + 1) * args.batch]
            x = augment(data.to_tensor(train.x[idx]), gen)
            y = torch.from_numpy(train.y[idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            seen += len(idx); loss_sum += loss.item() * len(idx)
            if s % 50 == 0:
                print(f"epoch {epoch} step {s}/{steps_per_epoch} loss {loss_sum / seen:.4f} "
                      f"{seen / (time.time() - t0):.0f} img/s", flush=True)
            if time.time() - last_save > args.checkpoint_minutes * 60:
                save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best})
                last_save = time.time()
        acc = evaluate(model, val)
        print(f"epoch {epoch} done: train loss {loss_sum / max(seen, 1):.4f} val acc {acc:.4f}", flush=True)
        if acc > best:
            best = acc
            torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "val_acc": acc, "epoch": epoch},
                       os.path.join(args.run, "base-best.pt"))
        save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best})
        last_save = time.time()
    print(f"done: best val acc {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
