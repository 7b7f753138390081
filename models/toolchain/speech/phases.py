"""Speech-specific pieces of the conversion recipe (DESIGN §2). The per-ACM losses (distillation,
gate labels, budget, entropy, diversity) are the generic ones of models/toolchain/phases.py; what
differs is how the speech model runs: over windows, with a CTC task loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import phases
from ..acm import ACM
from .model import ACMWav2Vec2, SpeechConfig, chunk_count, dense_trace, features, keep_chunk, output_frames, \
    pad_for_windows, window_rows, windowed_frames


def window_frames(dense, audio: torch.Tensor, cfg: SpeechConfig) -> torch.Tensor:
    """Projected conv features of every window of a batch: [B*chunks, window_frames, C]."""
    with torch.no_grad():
        padded = pad_for_windows(audio, chunk_count(audio.shape[1], cfg), cfg)
        return windowed_frames(features(dense, padded), cfg)


def acm_pairs(model: ACMWav2Vec2, pairs: list[dict]) -> list[tuple[ACM, torch.Tensor, torch.Tensor]]:
    """Each ACM with the (input, output) its dense block produced."""
    out = []
    for layer, layer_pairs in zip(model.layers, pairs):
        for name, acm in layer.acms():
            out.append((acm, *layer_pairs["ffn" if name == "feed_forward" else acm.kind]))
    return out


def distil_step(model: ACMWav2Vec2, dense, frames: torch.Tensor) -> torch.Tensor:
    """Phase 1: every ACM against its dense block, on the dense model's own activations."""
    _, pairs = dense_trace(dense, frames)
    return sum(phases.distil_loss(acm, z, o) for acm, z, o in acm_pairs(model, pairs))


def gate_step(model: ACMWav2Vec2, dense, frames: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Phase 2: each gate against its error-ratio labels (budget per window, labels do not use it)."""
    _, pairs = dense_trace(dense, frames)
    losses = [phases.gate_loss(acm, z, o, budget)[0] for acm, z, o in acm_pairs(model, pairs)]
    return sum(losses) / len(losses)


def relaxed_windows(model: ACMWav2Vec2, frames: torch.Tensor, budget: torch.Tensor, tau: float = 0.8, capped: bool = True):
    """Phase 3 forward over window frames [N, T, C] with budgets [N]: straight-through
    Gumbel-softmax gates, exactly k learners per token.

    With `capped` (the default, as the image model's phase 3), the per-request cap the graph
    applies lowers the sampled choices before they run, so the one every-budget model is
    fine-tuned as it is served; the gradient reaches the gates through their relaxed
    probabilities, and the budget, entropy and diversity losses read the gates' own choices.
    Returns (logits [N, T, V], asked fractions [N], executed fractions [N], asked one-hots).
    """
    x = model.embed_frames(frames)
    cap = model.cap_budgets(budget) if capped else None
    run = phases.StraightThrough(budget, cap, tau)
    for layer in model.layers:
        x = layer.block(x, run)
    return model.head(x), phases.compute_fraction(run.asked), phases.compute_fraction(run.ran).detach(), run.asked


def frame_distillation(logits: torch.Tensor, teacher: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of the per-frame symbol distributions, averaged over the frames
    that cover each utterance (lengths [B]; the padding after them does not count).
    logits, teacher: [B, T, V]."""
    kl = F.kl_div(logits.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    valid = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]
    return (kl * valid).sum() / valid.sum().clamp_min(1)


def phase3_loss(model: ACMWav2Vec2, frames: torch.Tensor, batch: int, samples: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, target: float, tau: float = 0.8, capped: bool = True,
                teacher: torch.Tensor | None = None, distil_weight: float = 0.0):
    """CTC + 0.1 budget + 0.05 entropy + 0.05 diversity, one budget target for the batch.

    Given the dense model's logits (`teacher`, model.dense_frames_logits on the same frames), the task loss becomes
    (1 - w) * CTC + w * frame_distillation with w = `distil_weight`: every budget also learns the
    dense model's per-frame posteriors, alignment included, as the image model's phase 3 can.
    """
    cfg = model.cfg
    budget = torch.full((frames.shape[0],), target, dtype=torch.float64, device=frames.device)
    logits, fractions, executed, onehots = relaxed_windows(model, frames, budget, tau, capped)
    kept = keep_chunk(logits, batch, cfg)
    log_probs = kept.log_softmax(-1).transpose(0, 1)
    lengths = output_frames(samples, cfg).clamp_max(log_probs.shape[0])
    task = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=0, zero_infinity=True)
    info = {"ctc": task.item()}
    if teacher is not None and distil_weight:
        kd = frame_distillation(kept, teacher, lengths)
        task = (1 - distil_weight) * task + distil_weight * kd
        info["kd"] = kd.item()
    total = (task + 0.1 * phases.budget_loss(fractions, target) + 0.05 * phases.entropy_loss(onehots)
             + 0.05 * phases.diversity_loss(fractions))
    return total, {**info, "asked": fractions.mean().item(), "ran": executed.mean().item()}


def acm_windows_logits(model: ACMWav2Vec2, audio: torch.Tensor, budget: float) -> torch.Tensor:
    """Inference path as served (argmax gates, cap, grouped kernel), window by window:
    audio [B, S] -> [B, chunks*chunk_frames, V]."""
    w = window_rows(audio, model.cfg)
    logits, _ = model(w, torch.full((w.shape[0],), budget, dtype=torch.float64, device=w.device))
    return keep_chunk(logits, audio.shape[0], model.cfg)
