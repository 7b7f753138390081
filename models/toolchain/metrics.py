"""Compute accounting of an ACMViT's outputs, as models/BUNDLE.md defines it and the server reports it."""
from __future__ import annotations

import torch


def used_fraction(model, counts: torch.Tensor) -> torch.Tensor:
    """Cost-weighted fraction of learner compute per image [B], from counts [B, A, T]."""
    acms = [a for _, _, a in model.acms()]
    cost = torch.tensor([a.learner_macs for a in acms], dtype=torch.float64, device=counts.device)
    full = sum(a.n * a.learner_macs for a in acms) * counts.shape[-1]
    return (counts.double().sum(-1) * cost).sum(-1) / full


def gflops(model, counts: torch.Tensor) -> torch.Tensor:
    """(fixed + gates + executed learners) multiply-adds / 1e9 per image [B]."""
    acms = [a for _, _, a in model.acms()]
    t = counts.shape[-1]
    learners = used_fraction(model, counts) * sum(a.n * a.learner_macs for a in acms) * t
    return (model.fixed_macs() + t * sum(a.gate_macs for a in acms) + learners) / 1e9
