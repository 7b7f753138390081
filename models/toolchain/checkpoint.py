"""Atomic checkpoints: a run interrupted at any moment resumes from the last complete file."""
from __future__ import annotations

import os

import torch


def save_state(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_file(path: str) -> dict:
    """A checkpoint written by save_state or torch.save, on the CPU whatever device wrote it.

    Our own files hold plain Python values beside tensors (configs, metrics), which newer PyTorch
    refuses to unpickle unless asked.
    """
    return torch.load(path, map_location="cpu", weights_only=False)


def load_state(path: str) -> dict | None:
    return load_file(path) if os.path.exists(path) else None
