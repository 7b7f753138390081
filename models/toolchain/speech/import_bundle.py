"""Read an exported speech bundle back into a run folder, so training can continue from it.

    python3 -m models.toolchain.speech.import_bundle --bundle models/speech-w2v2-acm --run .cache/runs/speech-import

Writes <run>/base-best.pt (from dense.onnx) and <run>/phase3.ckpt (from model.onnx), the files
`speech.convert` and `speech.build_bundle` read. Exports keep every parameter as a named
initializer, so the weights come back exactly. --check then transcribes the first --check-items
test utterances with both and compares with greedy decoding's figures in the manifest.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from ..checkpoint import save_state
from ..import_bundle import check_all_used, fill_from_graph, initializers
from .model import SpeechConfig, build_dense, from_dense


def _load(module: torch.nn.Module, path: str, prefix: str) -> None:
    tensors, _ = initializers(path)
    check_all_used(path, tensors, fill_from_graph(module, tensors, prefix, skip=()))


def import_models(bundle: str):
    """(config, dense model, ACM model, manifest) from a speech bundle with dense.onnx and model.onnx."""
    with open(os.path.join(bundle, "acm.json")) as f:
        meta = json.load(f)
    arch = {k: v for k, v in meta["architecture"].items() if k != "family"}
    arch["conv"] = tuple(tuple(c) for c in arch["conv"])
    cfg = SpeechConfig(**arch)
    dense = build_dense(cfg)
    _load(dense, os.path.join(bundle, meta["dense_graph"]), "dense.")
    projections = any(a["kind"] != "ffn" for a in meta["acms"])
    model = from_dense(dense, cfg, meta["acms"][0]["n"], projections)
    _load(model, os.path.join(bundle, meta["graph"]), "")
    return cfg, dense.eval(), model.eval(), meta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", default="models/speech-w2v2-acm")
    ap.add_argument("--run", required=True)
    ap.add_argument("--corpus", default=".cache/speech/espeak-v1")
    ap.add_argument("--check", action="store_true", help="transcribe test utterances and compare with the manifest")
    ap.add_argument("--check-items", type=int, default=None, help="test utterances for --check (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("ACM_TORCH_THREADS", "2")))
    cfg, dense, model, meta = import_models(args.bundle)
    training = meta.get("training", {})
    os.makedirs(args.run, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "model": dense.state_dict(), "step": training.get("base_step", 0),
                "imported_from": args.bundle}, os.path.join(args.run, "base-best.pt"))
    save_state(os.path.join(args.run, "phase3.ckpt"),
               {"model": model.state_dict(), "step": training.get("phase_steps", {}).get("phase3", 0),
                "imported_from": args.bundle})
    print(f"imported {args.bundle} into {args.run}", flush=True)
    if args.check:
        from . import data
        from .model import dense_windows_logits
        from .phases import acm_windows_logits
        from .train import evaluate
        test = data.load(args.corpus, "test", args.check_items)
        with torch.no_grad():
            d = evaluate(lambda a: dense_windows_logits(dense, a, cfg), test, cfg)
            print(f"dense: CER {d['cer']:.4f} WER {d['wer']:.4f} "
                  f"(manifest, all test items: {training.get('dense_test_cer')} / {training.get('dense_test_wer')})", flush=True)
            for q in meta["quality"]:
                if q["metric"] != "cer" or q.get("decoder", "greedy") != "greedy":
                    continue
                r = evaluate(lambda a, b=q["budget"]: acm_windows_logits(model, a, b), test, cfg)
                print(f"budget {q['budget']}: CER {r['cer']:.4f} (manifest, all test items: {q['value']})", flush=True)


if __name__ == "__main__":
    main()
