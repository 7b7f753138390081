"""Export the ACM speech model to an ONNX bundle with the speech manifest of models/BUNDLE.md.

The graph runs one window per batch row: audio [B, window_samples] float32 and budget [B] float64
in; CTC logits [B, window_frames, vocab] and learner_counts [B, ACMs, window_frames] out. The
server keeps the last chunk_frames frames of each window (the manifest's `audio` block says how
windows are cut), so the same graph serves whole files and streams.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..export import FORMAT, OPSET, _write_metadata, budget_floor
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
        "acms": [
            {"name": acm_name, "layer": layer, "kind": a.kind, "n": a.n, "width": a.width,
             "min_choice": a.min_choice, "learner_macs": a.learner_macs, "gate_macs": a.gate_macs}
            for acm_name, layer, a in model.acms()
        ],
        "macs": {"fixed": model.fixed_macs(), "dense": dense_macs(cfg)},
        "budget_floor": budget_floor(model),
        "default_budget": 1.0,
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
    os.makedirs(out_dir, exist_ok=True)
    model = model.eval()
    cfg = model.cfg
    audio = torch.randn(2, cfg.window_samples) * 0.1
    budget = torch.tensor([1.0, 0.4], dtype=torch.float64)
    batch = {0: "batch"}
    path = os.path.join(out_dir, meta["graph"])
    with torch.no_grad():
        torch.onnx.export(
            model, (audio, budget), path, opset_version=OPSET, do_constant_folding=False,
            input_names=["audio", "budget"], output_names=["logits", "learner_counts"],
            dynamic_axes={"audio": batch, "budget": batch, "logits": batch, "learner_counts": batch},
        )
    _write_metadata(path, meta)
    if dense is not None and meta.get("dense_graph"):
        with torch.no_grad():
            torch.onnx.export(
                DenseWindow(dense.eval()), (audio,), os.path.join(out_dir, meta["dense_graph"]), opset_version=OPSET,
                do_constant_folding=False, input_names=["audio"], output_names=["logits"],
                dynamic_axes={"audio": batch, "logits": batch},
            )
    with open(os.path.join(out_dir, "acm.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
