"""A random ACM speech bundle for tests: no data, no training, builds in seconds.

    python3 -m models.toolchain.speech.make_tiny_bundle --out /tmp/tiny-speech [--reference]

With --decoder, the bundle also has a small word language model (lm.arpa, from a few sentences)
and names the lexicon beam search as its decoder.

With --reference, reference.json holds inputs and PyTorch outputs (logits, learner counts) for a
single window and for a batch of windows with different budgets, for the ONNX parity test.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from .decoder import decoder_spec
from .export import export_bundle, manifest
from .lm import KneserNey
from .model import CONFIGS, build_dense, from_dense, greedy_decode
from .phases import acm_windows_logits


TINY_SENTENCES = ["i see the sea", "we see a cat", "the cat sat on the mat", "a dog and a cat"]


def build(seed: int = 0, config: str = "tiny", projections: bool = True):
    cfg = CONFIGS[config]
    torch.manual_seed(seed)
    dense = build_dense(cfg).eval()
    with torch.no_grad():
        # Large random head weights so random audio gives varied characters, not all blanks.
        torch.nn.init.normal_(dense.aux.weight, std=1.0)
    model = from_dense(dense, cfg, projections=projections).eval()
    with torch.no_grad():
        for _, _, acm in model.acms():
            # Spread the random gates' choices so every group of the kernel is exercised.
            for p in acm.gate.parameters():
                p.mul_(4.0)
        # Unequal shares of the cap, as speech.tune_caps leaves them, so exports carry real weights.
        model.cap_weights.copy_(torch.linspace(0.3, 1.0, len(model.acms()), dtype=torch.float64))
    return cfg, dense, model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference", action="store_true")
    ap.add_argument("--name", default="tiny-speech-acm")
    ap.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    ap.add_argument("--decoder", action="store_true", help="add a word language model and the lexicon beam search")
    ap.add_argument("--projections", action=argparse.BooleanOptionalAction, default=True,
                    help="q/k/v/o as ACMs too (--no-projections: the FFNs only, attention dense)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg, dense, model = build(config=args.config, projections=args.projections)
    meta = manifest(model, args.name, dense_graph="dense.onnx", training={"note": "random weights, for tests"})
    if args.decoder:
        os.makedirs(args.out, exist_ok=True)
        KneserNey([s.split() for s in TINY_SENTENCES], {"a", "an", "the"}).write_arpa(os.path.join(args.out, "lm.arpa"))
        meta["ctc"]["decoder"] = decoder_spec("lm.arpa", beam=8, lm_weight=0.5, word_bonus=1.0)
    export_bundle(model, args.out, meta, dense=dense)
    if args.reference:
        gen = torch.Generator().manual_seed(1)
        cases = []
        for budgets in ([0.5], [1.0, 0.25, 0.6, 0.1, 0.75]):
            audio = torch.randn(len(budgets), cfg.window_samples, generator=gen) * 0.3
            with torch.no_grad():
                logits, counts = model(audio, torch.tensor(budgets, dtype=torch.float64))
            cases.append({"budget": budgets, "audio": audio.flatten().tolist(), "shape": list(audio.shape),
                          "logits": logits.flatten().tolist(), "logits_shape": list(logits.shape),
                          "learner_counts": counts.flatten().tolist(), "counts_shape": list(counts.shape)})
        # A whole utterance (not a whole number of chunks) through the served path: windows,
        # cap, greedy CTC. The server must transcribe the same samples to the same text.
        utterance = torch.randn(1, cfg.chunk_samples * 4 + 1234, generator=gen) * 0.3
        with torch.no_grad():
            text = greedy_decode(acm_windows_logits(model, utterance, 0.5)[0])
        with open(os.path.join(args.out, "reference.json"), "w") as f:
            json.dump({"cases": cases, "utterance": {"audio": utterance.flatten().tolist(), "budget": 0.5, "text": text}}, f)


if __name__ == "__main__":
    main()
