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


# Weight norm's two tensors, as PyTorch spells them before 2.1 (torch.nn.utils.weight_norm) and
# after (parametrizations). torchaudio's Wav2Vec2 positional conv uses whichever the installed
# PyTorch has, so a checkpoint trained on one version names them differently from the other.
_WEIGHT_NORM = ((".weight_g", ".parametrizations.weight.original0"),
                (".weight_v", ".parametrizations.weight.original1"))


def load_into(module: torch.nn.Module, state: dict) -> None:
    """module.load_state_dict(state), with weight-norm keys renamed to the installed PyTorch's names."""
    expected = set(module.state_dict())
    renamed = {}
    for key, value in state.items():
        if key not in expected:
            for old, new in _WEIGHT_NORM:
                for a, b in ((old, new), (new, old)):
                    if key.endswith(a) and key[:-len(a)] + b in expected:
                        key = key[:-len(a)] + b
        renamed[key] = value
    module.load_state_dict(renamed)
