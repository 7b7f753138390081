"""Write a bundle's ACM graph again with this toolchain's exporter, keeping its weights and manifest.

    python3 -m models.toolchain.reexport --bundle models/fashion-vit-acm [--out <folder>]
    python3 -m models.toolchain.reexport --bundle models/speech-w2v2-acm
    python3 -m models.toolchain.reexport --bundle models/fashion-vit-acm --out /tmp/floor --floor-path

When the kernel or the exporter changes (kernels/grouped.py, acm.py), a bundle made before picks
the change up without retraining: the weights are read back from the bundle's own graphs
(import_bundle), and model.onnx is exported from them with the bundle's acm.json unchanged, in
place or into --out (with a copy of the bundle's other files). dense.onnx is left as it is. The
new graph computes the same function; the export-parity and fixture tests check it against the
PyTorch reference outputs through onnxruntime.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import onnx
import torch

from .acm import set_floor_path
from .export import write_bundle
from .import_bundle import import_models
from .vit import set_threads


def node_count(path: str) -> int:
    return len(onnx.load(path, load_external_data=False).graph.node)


def _model_and_example(bundle: str, family: str | None) -> tuple[torch.nn.Module, dict, torch.Tensor, str]:
    """(ACM model, manifest, an example input, the input's name) of an image or speech bundle."""
    if family == "wav2vec2":
        from .speech.import_bundle import import_models as import_speech
        cfg, _, model, meta = import_speech(bundle)
        return model, meta, torch.randn(2, cfg.window_samples) * 0.1, meta["inputs"]["audio"]
    cfg, _, model, meta = import_models(bundle)
    return model, meta, torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size), meta["inputs"]["pixels"]


def reexport(bundle: str, out: str, floor_path: bool = False) -> tuple[int, int]:
    """Exports `bundle`'s ACM model into `out` (which may be `bundle`). Returns (nodes before, after)."""
    with open(os.path.join(bundle, "acm.json")) as f:
        raw = f.read()
    manifest = json.loads(raw)
    model, meta, example, input_name = _model_and_example(bundle, manifest.get("architecture", {}).get("family"))
    before = node_count(os.path.join(bundle, meta["graph"]))
    set_floor_path(model, floor_path)
    if os.path.abspath(out) != os.path.abspath(bundle):
        shutil.copytree(bundle, out, dirs_exist_ok=True)
    write_bundle(model, out, manifest, example, input_name)
    # write_bundle rewrites acm.json from the same manifest; keep the original bytes.
    with open(os.path.join(out, "acm.json"), "w") as f:
        f.write(raw)
    return before, node_count(os.path.join(out, meta["graph"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="models/fashion-vit-acm")
    ap.add_argument("--out", help="folder for the re-exported bundle (default: the bundle itself)")
    ap.add_argument("--floor-path", action="store_true",
                    help="export each ACM's floor path under an If (acm.ACM.floor_or)")
    args = ap.parse_args()
    if not os.path.isfile(os.path.join(args.bundle, "acm.json")):
        ap.error(f"--bundle {args.bundle}: not a bundle folder (no acm.json)")
    set_threads()
    before, after = reexport(args.bundle, args.out or args.bundle, args.floor_path)
    print(f"{args.bundle}: model graph re-exported into {args.out or args.bundle} ({before} nodes before, {after} now)")


if __name__ == "__main__":
    main()
