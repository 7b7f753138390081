"""The three phases of the conversion recipe (DESIGN §2), one training step each.

Kept free of data loading and checkpointing so tests can run each step on a small fixed batch.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kernels.grouped import cap_counts
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


class Relaxed(NamedTuple):
    """What one relaxed forward pass produced."""
    logits: torch.Tensor
    fractions: torch.Tensor  # [B] cost-weighted fraction of learners the gates asked for
    executed: torch.Tensor   # [B] the same for the learners that ran (after the cap, if any)
    onehots: list            # per ACM: (acm, straight-through one-hot of the gate's choice [B, T, choices])
    counts: list             # per ACM: learner counts that ran [B, T]


class StraightThrough:
    """Phase 3's ACM runner: straight-through Gumbel-softmax gate, exactly k learners per token.

    Each call outputs sum_k onehot_k * h(z, k), so the task loss reaches the gate through the
    one-hot while the forward value is h(z, k) itself. Given `cap` (per-request cap budgets [B], or
    [B, A] per ACM in call order: see ACMViT.cap_budgets), the request cap the server applies
    lowers the sampled choices before they run, so the network is fine-tuned in the regime it is
    served in; the gradient still reaches the gate through its relaxed probabilities. Budget,
    entropy and diversity losses read `asked`, the gate's own (uncapped) choices, which teaches the
    gate to ask for what the budget allows.
    """

    def __init__(self, budget: torch.Tensor, cap: torch.Tensor | None, tau: float = 0.8,
                 token_bonus: torch.Tensor | None = None):
        self.budget, self.cap, self.tau, self.token_bonus = budget, cap, tau, token_bonus
        self.asked: list[tuple[ACM, torch.Tensor]] = []
        self.ran: list[tuple[ACM, torch.Tensor]] = []
        self.counts: list[torch.Tensor] = []

    def __call__(self, acm: ACM, z: torch.Tensor) -> torch.Tensor:
        logits = acm.gate_logits(z, self.budget)
        gumbel = -torch.empty_like(logits).exponential_().log()
        soft = ((logits + gumbel) / self.tau).softmax(-1)
        choice = soft.argmax(-1)
        k = choice
        if self.cap is not None:
            # One cap budget per request [B], or one per request and ACM [B, A] in call order.
            cap = self.cap if self.cap.dim() == 1 else self.cap[:, len(self.counts)]
            with torch.no_grad():
                priority = acm.cap_priority(logits, self.token_bonus)
                k = cap_counts(choice + acm.min_choice, cap, acm.n, acm.min_choice, priority) - acm.min_choice
        relax = soft - soft.detach()
        self.asked.append((acm, F.one_hot(choice, acm.choices).to(soft.dtype) + relax))
        hot = F.one_hot(k, acm.choices).to(soft.dtype) + relax
        self.ran.append((acm, hot))
        self.counts.append(k + acm.min_choice)
        return (hot.unsqueeze(-1) * acm.prefix_outputs(z)[..., acm.min_choice:, :]).sum(-2)


def relaxed_forward(model: ACMViT, pixels: torch.Tensor, budget: torch.Tensor, tau: float = 0.8,
                    capped: bool = False) -> Relaxed:
    """Phase 3 forward of the image model (see StraightThrough); `capped` applies the request cap."""
    x = model.embed(pixels)
    run = StraightThrough(budget, model.cap_budgets(budget) if capped else None, tau, model.token_bonus)
    mix = model.norm_mix(budget)
    for layer in model.layers:
        h = layer.ln_1(x, mix)
        a = attention(run(layer.q, h), run(layer.k, h), run(layer.v, h), layer.heads)
        x = x + run(layer.o, a)
        x = x + run(layer.mlp, layer.ln_2(x, mix))
    logits = model.head(model.ln(x, mix)[:, 0])
    return Relaxed(logits, compute_fraction(run.asked), compute_fraction(run.ran).detach(), run.asked, run.counts)


def compute_fraction(onehots: list[tuple[ACM, torch.Tensor]]) -> torch.Tensor:
    """Cost-weighted fraction of all learners that the one-hot choices run, per sample [B]."""
    spent = sum(acm.learner_macs * (oh * acm.choice_values(oh)).sum((-1, -2))
                for acm, oh in onehots)
    full = sum(acm.learner_macs * acm.n * oh.shape[1] for acm, oh in onehots)
    return spent / full


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
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(n + 1)
    return -entropy.mean()


def diversity_loss(fractions: torch.Tensor) -> torch.Tensor:
    """Minus the mean pairwise |b_i - b_m| of per-sample compute fractions."""
    return -(fractions[:, None] - fractions[None, :]).abs().mean()


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the class distributions, averaged over the batch."""
    return F.kl_div(logits.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="batchmean")


def phase3_loss(model: ACMViT, pixels: torch.Tensor, labels: torch.Tensor, target: float, tau: float = 0.8,
                capped: bool = False, budget_weight: float = 0.1, teacher: torch.Tensor | None = None,
                distil_weight: float = 0.0):
    """Task + 0.1 budget + 0.05 entropy + 0.05 diversity (DESIGN §2) at one budget target.

    `capped` trains the single every-budget model as it is served (see relaxed_forward); without
    it this is the published per-target recipe, where the budget loss is the only thing holding
    the gates to the target: `budget_weight` raises it for a model that settles above its target.
    Given the dense model's logits (`teacher`), the task loss becomes (1 - w) * cross-entropy
    + w * distillation_loss with w = `distil_weight`: the low budgets learn from the full model's
    answers as well as from the labels (in-place distillation, Yu & Huang 2019).
    """
    budget = torch.full((pixels.shape[0],), target, dtype=torch.float64, device=pixels.device)
    out = relaxed_forward(model, pixels, budget, tau, capped)
    task = F.cross_entropy(out.logits, labels)
    if teacher is not None and distil_weight:
        task = (1 - distil_weight) * task + distil_weight * distillation_loss(out.logits, teacher)
    total = (task + budget_weight * budget_loss(out.fractions, target) + 0.05 * entropy_loss(out.onehots)
             + 0.05 * diversity_loss(out.fractions))
    return total, {"task": task.item(), "asked": out.fractions.mean().item(), "ran": out.executed.mean().item()}
