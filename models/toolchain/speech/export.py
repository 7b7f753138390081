"""Export the ACM speech model to an ONNX bundle with the speech manifest of models/BUNDLE.md.

The graph runs one window per batch row: audio [B, window_samples] float32 and budget [B] float64
in; CTC logits [B, window_frames, vocab] and learner_counts [B, ACMs, window_frames] out. The
server keeps the last chunk_frames frames of each window (the manifest's `audio` block says how
windows are cut), so the same graph serves whole files and streams.
"""
from __future__ import annotations

import torch
from torch import nn

from ..export import FORMAT, acm_fields, write_bundle
from .model import SAMPLE_RATE, ACMWav2Vec2, dense_macs, features
from .text import VOCAB


def manifest(model: ACMWav2Vec2, name: str, quality: list[dict] | None = None, training: dict | None = None,
             dense_graph: str | None = None) -> dict:
    cfg = model.cfg
    return {
        "format": FORMAT,
        "name": name,
        "task": "speech-recognition",
        "graph": "model.onnx",
        **({"dense_graph": dense_graph} if dense_graph else {}),
        "inputs": {"audio": "audio", "budget": "budget"},
        "outputs": {"logits": "logits", "learner_counts": "learner_counts"},
        "audio": {
            "sample_rate": SAMPLE_RATE, "frame_ms": 1000 * cfg.frame_samples // SAMPLE_RATE,
            "frame_samples": cfg.frame_samples, "lookahead_samples": cfg.lookahead_samples,
            "chunk_frames": cfg.chunk_frames, "left_context_frames": cfg.left_frames,
            "chunk_samples": cfg.chunk_samples, "left_context_samples": cfg.left_samples,
            "window_samples": cfg.window_samples, "window_frames": cfg.window_frames,
        },
        "ctc": {"blank": 0, "vocabulary": VOCAB, "word_delimiter": " "},
        "tokens": {"count": cfg.window_frames},
        **acm_fields(model, dense_macs(cfg)),
        "quality": quality or [],
        "architecture": {"family": "wav2vec2", **cfg.to_dict()},
        "training": training or {},
    }


class DenseWindow(nn.Module):
    """The dense model on one window per row, same inputs minus budget: for comparisons."""

    def __init__(self, dense: nn.Module):
        super().__init__()
        self.dense = dense

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.dense.aux(self.dense.encoder.transformer(features(self.dense, audio)))


def export_bundle(model: ACMWav2Vec2, out_dir: str, meta: dict, dense: nn.Module | None = None) -> None:
    """Write model.onnx (+ dense.onnx) and acm.json; the manifest also goes into the ONNX metadata."""
    audio = torch.randn(2, model.cfg.window_samples) * 0.1
    write_bundle(model, out_dir, meta, audio, "audio", DenseWindow(dense) if dense is not None else None)
