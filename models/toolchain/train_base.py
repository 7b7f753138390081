"""Train the dense ViT on the Fashion-MNIST training items; resumable, model selected on validation.

    python3 -m models.toolchain.train_base --run .cache/runs/fashion --epochs 12
    python3 -m models.toolchain.train_base --run .cache/runs/fashion --device cuda   # on a GPU
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
from .vit import CONFIGS, add_training_options, build_vit, start_training


def augment(x: torch.Tensor, gen: torch.Generator, erase: bool = False) -> torch.Tensor:
    """Random 2-pixel shifts and horizontal flips (garments are left-right symmetric); with
    `erase`, also a random 8x8 square set to the background value in half of the images.

    x: [B, 1, 28, 28] on any device; the random draws come from `gen` (CPU), so a batch is the
    same on every device.
    """
    b, size = x.shape[0], x.shape[-1]
    background = float(x.min())
    padded = F.pad(x, (2, 2, 2, 2), value=background)
    dx = torch.randint(0, 5, (b,), generator=gen).to(x.device)
    dy = torch.randint(0, 5, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    offsets = torch.arange(size, device=x.device)
    rows = (dy[:, None] + offsets)[:, :, None]  # [B, 28, 1]
    cols = (dx[:, None] + offsets)[:, None, :]  # [B, 1, 28]
    cols = torch.where(flip[:, None, None], dx[:, None, None] + size - 1 - offsets[None, None, :], cols)
    out = padded[torch.arange(b, device=x.device)[:, None, None], 0, rows, cols].unsqueeze(1)
    if erase:
        side = 8
        ex = torch.randint(0, size - side + 1, (b,), generator=gen).to(x.device)
        ey = torch.randint(0, size - side + 1, (b,), generator=gen).to(x.device)
        on = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        inside_y = (offsets[None, :] >= ey[:, None]) & (offsets[None, :] < ey[:, None] + side)
        inside_x = (offsets[None, :] >= ex[:, None]) & (offsets[None, :] < ex[:, None] + side)
        square = (inside_y[:, :, None] & inside_x[:, None, :] & on[:, None, None]).unsqueeze(1)
        out = out.masked_fill(square, background)
    return out


@torch.no_grad()
def evaluate(model, split: data.Split, batch: int = 500, device: torch.device | str = "cpu") -> float:
    model.eval()
    correct = 0
    for i in range(0, len(split.y), batch):
        x = data.to_tensor(split.x[i:i + batch]).to(device)
        correct += (model(x).argmax(-1).cpu().numpy() == split.y[i:i + batch]).sum()
    return float(correct / len(split.y))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=".cache/runs/fashion")
    ap.add_argument("--config", default="fashion-small")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=None,
                    help="instead of --epochs: as many epochs as fit in about this many minutes, counted "
                         "from the first epoch's duration (the schedule is fixed from then on)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training items (quick checks)")
    ap.add_argument("--erase", action="store_true", help="also random-erase an 8x8 square (see augment)")
    add_training_options(ap)
    args = ap.parse_args()
    device = start_training(args)
    cfg = CONFIGS[args.config]
    model = build_vit(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    train, val = data.load("train"), data.load("val")
    if args.train_limit:
        train = data.Split(train.x[:args.train_limit], train.y[:args.train_limit], train.index[:args.train_limit])
    train_x, train_y = torch.from_numpy(train.x).to(device), torch.from_numpy(train.y).to(device)
    steps_per_epoch = len(train.y) // args.batch
    total = steps_per_epoch * args.epochs
    warmup = steps_per_epoch

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return 0.5 * args.lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    os.makedirs(args.run, exist_ok=True)
    ckpt = os.path.join(args.run, "base.ckpt")
    state = load_state(ckpt)
    step, best = 0, -1.0
    if state:
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        step, best, total = state["step"], state["best"], state.get("total", total)
        print(f"resumed at step {step}/{total}, best val {best:.4f}", flush=True)
    started = time.time()
    last_save = time.time()
    while step < total:
        epoch = step // steps_per_epoch
        perm = np.random.default_rng(epoch).permutation(len(train.y))
        gen = torch.Generator().manual_seed(epoch)
        model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0
        for s in range(step % steps_per_epoch, steps_per_epoch):
            idx = torch.from_numpy(perm[s * args.batch:(s + 1) * args.batch]).to(device)
            x = augment(data.normalise(train_x[idx]), gen, args.erase)
            y = train_y[idx]
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
                save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                                  "total": total})
                last_save = time.time()
        acc = evaluate(model, val, device=device)
        if args.minutes and step == steps_per_epoch:
            epochs = max(1, int(args.minutes * 60 / (time.time() - started)))
            total = steps_per_epoch * epochs
            print(f"first epoch took {time.time() - started:.1f}s: training {epochs} epochs", flush=True)
        print(f"epoch {epoch} done: train loss {loss_sum / max(seen, 1):.4f} val acc {acc:.4f}", flush=True)
        if acc > best:
            best = acc
            torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "val_acc": acc, "epoch": epoch},
                       os.path.join(args.run, "base-best.pt"))
        save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                          "total": total})
        last_save = time.time()
    print(f"done: best val acc {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
