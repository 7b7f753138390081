"""Read an exported image bundle back into a run folder, so training can continue from it.

    python3 -m models.toolchain.import_bundle --bundle models/fashion-vit-acm --run .cache/runs/fashion-import

Writes <run>/base-best.pt (from dense.onnx) and <run>/phase3.ckpt (from model.onnx), the files
`convert`, `reallocate` and `build_bundle` read. Exports keep every parameter as a named initializer
(no constant folding), so the weights come back exactly; the one change is the convolutional stem:
PyTorch's export folds each batch norm into the convolution before it, so a stem conv comes back as
that folded weight with its batch norm reduced to the identity plus the folded bias (mean 0, variance
1 - eps, scale 1). The stem's batch norms only ever run in eval mode after the base is trained (see
ACMViT.train), where this is the same function. --check then evaluates the imported model on the
test split and compares with the accuracy the manifest reports.
"""
from __future__ import annotations

import argparse
import json
import os

import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .acm import ACMViT
from .checkpoint import save_state
from .vit import ViTConfig, build_vit, set_threads


def initializers(path: str) -> tuple[dict[str, torch.Tensor], list[tuple[str, str | None]]]:
    """(name -> tensor, the Conv nodes' (weight, bias) initializer names in graph order)."""
    graph = onnx.load(path).graph
    tensors = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs = [(n.input[1], n.input[2] if len(n.input) > 2 else None) for n in graph.node if n.op_type == "Conv"]
    return tensors, convs


def _load_stem(stem: nn.Sequential, prefix: str, tensors: dict, convs: list) -> tuple[set[str], tuple[str, ...]]:
    """Fill the stem's conv / batch-norm pairs from the exported (folded) convolutions. Returns the
    initializer names used and the state-dict prefixes of the modules filled."""
    used, filled = set(), []
    by_name = dict(stem.named_children())
    # The convolutions with a batch norm after them; any other conv keeps its own named weights.
    pairs = [(name, m, by_name[str(int(name) + 1)]) for name, m in by_name.items() if isinstance(m, nn.Conv2d)
             and isinstance(by_name.get(str(int(name) + 1)), nn.BatchNorm2d)]
    # A folded conv's weight has an exporter-made name (onnx::Conv_...), not the module's.
    folded = [c for c in convs if not c[0].startswith(prefix)]
    if len(pairs) != len(folded):
        raise ValueError(f"the graph has {len(folded)} folded convolutions, the stem {len(pairs)}")
    with torch.no_grad():
        for (name, conv, bn), (w_name, b_name) in zip(pairs, folded):
            conv.weight.copy_(tensors[w_name])
            bn.weight.fill_(1.0)
            bn.bias.copy_(tensors[b_name])
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
            used |= {w_name, b_name}
            filled += [f"{prefix}{name}.", f"{prefix}{int(name) + 1}."]
    return used, tuple(filled)


def fill_from_graph(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, skip: tuple[str, ...]) -> set[str]:
    """Copy every parameter and buffer named prefix + its state_dict key, except those whose
    prefixed name starts with one of `skip`."""
    used = set()
    with torch.no_grad():
        for key, value in module.state_dict().items():
            name = prefix + key
            if name.startswith(skip):
                continue
            source = tensors.get(name)
            if source is None and key == "cap_weights":
                continue  # exported before cap weights existed: equal ones, the model's default
            if source is None:  # e.g. merged by the exporter into an equal-valued initializer
                raise KeyError(f"{name} is not in the graph (the exporter merges parameters of "
                               "equal value, such as untrained zero biases, into one initializer)")
            if source.shape != value.shape:
                raise ValueError(f"{name}: graph shape {tuple(source.shape)}, model {tuple(value.shape)}")
            value.copy_(source)
            used.add(name)
    return used


def _load_graph(module: nn.Module, stem: nn.Sequential, path: str, prefix: str) -> None:
    """Fill `module` (whose stem is `stem`) from the initializers of the graph at `path`, where its
    state-dict keys are named with `prefix`."""
    tensors, convs = initializers(path)
    if isinstance(module, ACMViT) and "norm_knots" in tensors and module.norm_knots is None:
        module.condition_norms(tensors["norm_knots"].tolist())  # norms with a scale and shift per budget
    used, filled = _load_stem(stem, prefix + "conv_proj.", tensors, convs)
    used |= fill_from_graph(module, tensors, prefix, skip=filled)
    check_all_used(path, tensors, used)


def check_all_used(path: str, tensors: dict[str, torch.Tensor], used: set[str]) -> None:
    """Refuses a graph with a weight the model left unread."""
    # Small constant tensors (shapes, indices) are initializers too; every float weight must be ours.
    left = [k for k, v in tensors.items() if k not in used and v.is_floating_point() and v.numel() > 1]
    if left:
        raise ValueError(f"{os.path.basename(path)}: weights the model has no place for: {left[:5]}")


def import_models(bundle: str) -> tuple[ViTConfig, nn.Module, ACMViT, dict]:
    """(config, dense base, ACM model, manifest) from a bundle folder with dense.onnx and model.onnx."""
    with open(os.path.join(bundle, "acm.json")) as f:
        meta = json.load(f)
    arch = {k: v for k, v in meta["architecture"].items() if k != "family"}
    cfg = ViTConfig(**arch)
    vit = build_vit(cfg)
    _load_graph(vit, vit.conv_proj, os.path.join(bundle, meta["dense_graph"]), "vit.")
    model = ACMViT(cfg, meta["acms"][0]["n"])
    _load_graph(model, model.conv_proj, os.path.join(bundle, meta["graph"]), "")
    return cfg, vit.eval(), model.eval(), meta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="models/fashion-vit-acm")
    ap.add_argument("--run", required=True)
    ap.add_argument("--check", action="store_true",
                    help="evaluate on the test split and compare with the manifest's accuracy per budget")
    args = ap.parse_args()
    set_threads()
    cfg, vit, model, meta = import_models(args.bundle)
    steps = meta.get("training", {}).get("steps", {})
    os.makedirs(args.run, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "model": vit.state_dict(),
                "val_acc": meta.get("training", {}).get("base_val_accuracy", float("nan")),
                "epoch": steps.get("base_epochs", 1) - 1, "imported_from": args.bundle},
               os.path.join(args.run, "base-best.pt"))
    # The phase-3 checkpoint carries the step counts of every phase, for build_bundle's manifest.
    save_state(os.path.join(args.run, "phase3.ckpt"),
               {"model": model.state_dict(), "step": steps.get("phase3", 0), "imported_from": args.bundle,
                "steps": {k: v for k, v in steps.items() if k.startswith("phase")},
                "recipe": meta.get("training", {}).get("recipe")})
    print(f"imported {args.bundle} into {args.run}", flush=True)
    if args.check:
        from . import data
        from .build_bundle import evaluate
        budgets = [q["budget"] for q in meta["quality"]]
        result = evaluate(model, vit, data.load("test"), budgets)
        print(f"dense: {result['dense']:.4f} (manifest {meta['training'].get('dense_accuracy')})")
        worst = 0.0
        for q in meta["quality"]:
            got = result["acm"][q["budget"]]["accuracy"]
            worst = max(worst, abs(got - q["value"]))
            print(f"budget {q['budget']}: {got:.4f} (manifest {q['value']})")
        print(f"largest difference to the manifest: {worst * 100:.2f} points", flush=True)


if __name__ == "__main__":
    main()
