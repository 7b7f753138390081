"""The three phases of the conversion recipe (DESIGN §2), one training step each.

Kept free of data loading and checkpointing so tests can run each step on a small fixed batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .acm import KINDS, ACM, ACMViT, attention, dense_trace

RATIO = 1.2


def acm_pairs(model: ACMViT, pairs: list[dict]) -> list[tuple[ACM, torch.Tensor, torch.Tensor]]:
    """Match each ACM with the (input, output) its dense block produced."""
    return [(acm, *layer_pairs[kind]) for layer, layer_pairs in zip(model.layers, pairs)
            for kind, acm in zip(KINDS, layer.acms())]


def distil_loss(acm: ACM, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Phase 1: MSE between h(z, n) and the block's output, summed over every n = 0..N."""
    prefix = acm.prefix_outputs(z)
    return ((prefix - target.unsqueeze(-2)) ** 2).mean(dim=tuple(range(prefix.dim() - 2)) + (-1,)).sum()


def gate_labels(errors: torch.Tensor, n: int) -> torch.Tensor:
    """Phase 2 labels from e_0..e_N ([..., N+1]): the smallest n >= 2 with e_{n-1} / e_n < 1.2, else N."""
    ratio = errors[..., 1:n] / errors[..., 2:n + 1].clamp_min(1e-12)  # entry j is n = j + 2
    below = ratio < RATIO
    candidates = torch.arange(2, n + 1, device=errors.device).expand_as(below)
    return torch.where(below, candidates, torch.full_like(candidates, n)).min(-1).values


def gate_loss(acm: ACM, z: torch.Tensor, target: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 2: cross-entropy of the gate against the error-ratio labels. Returns (loss, labels)."""
    with torch.no_grad():
        errors = (acm.prefix_outputs(z) - target.unsqueeze(-2)).norm(dim=-1)
        labels = gate_labels(errors, acm.n)
    logits = acm.gate_logits(z, budget)
    return F.cross_entropy(logits.flatten(0, -2), (labels - acm.min_choice).flatten()), labels


@torch.no_grad()
def teacher_pairs(vit, pixels: torch.Tensor) -> list[dict]:
    return dense_trace(vit, pixels)[1]


def relaxed_forward(model: ACMViT, pixels: torch.Tensor, budget: torch.Tensor, tau: float = 0.8):
    """Phase 3 forward: straight-through Gumbel-softmax gates, exactly k learners per token.

    Each ACM outputs sum_k onehot_k * h(z, k), so the task loss reaches the gates through the
    one-hot while the forward value is h(z, k) itself. Returns (logits, fractions [B]), with
    fractions the cost-weighted learner fraction of each sample, and the per-ACM one-hots.
    """
    x = model.embed(pixels)
    onehots: list[tuple[ACM, torch.Tensor]] = []

    def run(acm: ACM, z: torch.Tensor) -> torch.Tensor:
        onehot = F.gumbel_softmax(acm.gate_logits(z, budget), tau=tau, hard=True)
        onehots.append((acm, onehot))
        prefix = acm.prefix_outputs(z)[..., acm.min_choice:, :]
        return (onehot.unsqueeze(-1) * prefix).sum(-2)

    for layer in model.layers:
        h = layer.ln_1(x)
        a = attention(run(layer.q, h), run(layer.k, h), run(layer.v, h), layer.heads)
        x = x + run(layer.o, a)
        x = x + run(layer.mlp, layer.ln_2(x))
    logits = model.head(model.ln(x)[:, 0])
    spent = sum(acm.learner_macs * (oh * torch.arange(acm.min_choice, acm.n + 1, dtype=oh.dtype)).sum((-1, -2))
                for acm, oh in onehots)
    full = sum(acm.learner_macs * acm.n * oh.shape[1] for acm, oh in onehots)
    return logits, spent / full, onehots


def budget_loss(fractions: torch.Tensor, target: float) -> torch.Tensor:
    return (fractions.mean() - target).abs()


def entropy_loss(onehots: list[tuple[ACM, torch.Tensor]]) -> torch.Tensor:
    """Minus the normalised entropy of each sample's histogram of learner counts."""
    n = max(acm.n for acm, _ in onehots)
    hist = 0
    for acm, oh in onehots:
        counts = oh.sum(1)  # [B, choices]
        hist = hist + F.pad(counts, (acm.min_choice, n - acm.n))
    p = hist / hist.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / torch.log(torch.tensor(float(n + 1)))
    return -entropy.mean()


def diversity_loss(fractions: torch.Tensor) -> torch.Tensor:
    """Minus the mean pairwise |b_i - b_m| of per-sample compute fractions."""
    return -(fractions[:, None] - fractions[None, :]).abs().mean()


def phase3_loss(model: ACMViT, pixels: torch.Tensor, labels: torch.Tensor, target: float, tau: float = 0.8):
    budget = torch.full((pixels.shape[0],), target)
    logits, fractions, onehots = relaxed_forward(model, pixels, budget, tau)
    task = F.cross_entropy(logits, labels)
    total = task + 0.1 * budget_loss(fractions, target) + 0.05 * entropy_loss(onehots) + 0.05 * diversity_loss(fractions)
    return total, {"task": task.item(), "fraction": fractions.mean().item()}
