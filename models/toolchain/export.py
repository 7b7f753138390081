"""Export an ACMViT (and its dense base) to ONNX with the bundle manifest of models/BUNDLE.md."""
from __future__ import annotations

import json
import os
import warnings

import onnx
import torch
from torch import nn

from kernels.branch import DOMAIN as BRANCH_DOMAIN, lower_selects

from .acm import ACMViT, dense_trace
from .vit import ViTConfig, dense_macs

OPSET = 17
FORMAT = "acm-bundle/1"


def budget_floor(model: ACMViT) -> float:
    acms = [a for _, _, a in model.acms()]
    full = sum(a.n * a.learner_macs for a in acms)
    return sum(a.min_choice * a.learner_macs for a in acms) / full


def acm_fields(model: nn.Module, dense_macs: int) -> dict:
    """The manifest entries every model family shares: its ACMs, multiply-adds and budget floor.
    `model` is an ACM model (acms(), fixed_macs()); dense_macs is its dense base's per token or window."""
    return {
        "acms": [
            {"name": acm_name, "layer": layer, "kind": a.kind, "n": a.n, "width": a.width,
             "min_choice": a.min_choice, "learner_macs": a.learner_macs, "gate_macs": a.gate_macs}
            for acm_name, layer, a in model.acms()
        ],
        "macs": {"fixed": model.fixed_macs(), "dense": dense_macs},
        "budget_floor": budget_floor(model),
        "default_budget": 1.0,
    }


def manifest(model: ACMViT, name: str, labels: list[str], mean: list[float], std: list[float],
             quality: list[dict] | None = None, training: dict | None = None,
             dense_graph: str | None = None) -> dict:
    cfg: ViTConfig = model.cfg
    side = cfg.image_size // cfg.patch_size
    return {
        "format": FORMAT,
        "name": name,
        "task": "image-classification",
        "graph": "model.onnx",
        **({"dense_graph": dense_graph} if dense_graph else {}),
        "inputs": {"pixels": "pixel_values", "budget": "budget"},
        "outputs": {"logits": "logits", "learner_counts": "learner_counts"},
        "image": {"height": cfg.image_size, "width": cfg.image_size, "channels": cfg.channels,
                  "mean": mean, "std": std, "resize": "contain", "background": [0, 0, 0]},
        "labels": labels,
        "tokens": {"count": cfg.tokens, "grid": [side, side], "grid_offset": 1},
        **acm_fields(model, dense_macs(cfg)),
        "quality": quality or [],
        "architecture": {"family": "vit", **cfg.to_dict()},
        "training": training or {},
    }


def _finish_graph(path: str, meta: dict) -> None:
    """The exported graph as a bundle holds it: each run-time choice an If (kernels.branch), the
    manifest in its metadata."""
    graph = onnx.load(path)
    lower_selects(graph)
    del graph.metadata_props[:]
    entry = graph.metadata_props.add()
    entry.key, entry.value = "acm_manifest", json.dumps(meta, sort_keys=True)
    onnx.checker.check_model(graph)
    onnx.save(graph, path)


def export_bundle(model: ACMViT, out_dir: str, meta: dict, dense: nn.Module | None = None) -> None:
    """Write model.onnx (+ dense.onnx) and acm.json; the manifest also goes into the ONNX metadata."""
    cfg = model.cfg
    pixels = torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size)
    write_bundle(model, out_dir, meta, pixels, "pixel_values", DenseLogits(dense) if dense is not None else None)


def export_dense(dense: nn.Module, path: str, example: torch.Tensor, input_name: str) -> None:
    """dense(example) -> logits as a bundle's dense graph, batch dimension dynamic (left in eval mode)."""
    batch = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(
            dense.eval(), (example,), path, opset_version=OPSET, do_constant_folding=False,
            input_names=[input_name], output_names=["logits"], dynamic_axes={input_name: batch, "logits": batch},
        )


def write_bundle(model: nn.Module, out_dir: str, meta: dict, example: torch.Tensor, input_name: str,
                 dense: nn.Module | None = None) -> None:
    """The export every model family shares. model(example, budget) -> (logits, learner_counts)
    becomes meta["graph"] and dense(example) -> logits meta["dense_graph"] (when both are given),
    batch dimension dynamic; the manifest goes into the graph's metadata and into acm.json.

    Both modules are exported in eval mode and left in it: the exporter restores the mode of the
    module it is given, so a wrapper left in its default (training) mode would switch the wrapped
    model's dropout and batch norms to training after the export.
    """
    os.makedirs(out_dir, exist_ok=True)
    model = model.eval()
    budget = torch.tensor([1.0, 0.4], dtype=torch.float64)
    batch = {0: "batch"}
    path = os.path.join(out_dir, meta["graph"])
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter cannot infer the Select marker's output shapes; lower_selects needs none.
        warnings.filterwarnings("ignore", message=f"The shape inference of {BRANCH_DOMAIN}::")
        torch.onnx.export(
            model, (example, budget), path, opset_version=OPSET, do_constant_folding=False,
            input_names=[input_name, "budget"], output_names=["logits", "learner_counts"],
            dynamic_axes={input_name: batch, "budget": batch, "logits": batch, "learner_counts": batch},
            # Only a floor-path model emits Select markers; naming the domain otherwise makes the
            # exporter warn that it is unused.
            custom_opsets={BRANCH_DOMAIN: 1} if any(getattr(m, "floor_path", False) for m in model.modules()) else None,
        )
    _finish_graph(path, meta)
    if dense is not None and meta.get("dense_graph"):
        export_dense(dense, os.path.join(out_dir, meta["dense_graph"]), example, input_name)
    with open(os.path.join(out_dir, "acm.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


class DenseLogits(nn.Module):
    """The dense base through the same attention code as the ACM model, for a like-for-like graph."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return dense_trace(self.vit, pixels)[0]
