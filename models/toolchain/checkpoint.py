"""Atomic checkpoints: a run interrupted at any moment resumes from the last complete file."""
from __future__ import annotations

import os

import torch


def save_state(path: str, state: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str) -> dict | None:
    return torch.load(path) if os.path.exists(path) else None
