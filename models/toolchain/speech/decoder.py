"""The speech bundle's decoder: a lexicon beam search with a word n-gram model (lm.py), set in the
manifest's `ctc.decoder` with the measured quality it gives.

    python3 -m models.toolchain.speech.decoder --bundle models/speech-w2v2-acm --lm lm.arpa.gz \\
        --beam 64 --lm-weight 2 --word-bonus 2 --evaluation docs/speech-test.json

The settings are chosen on the validation split (`npm run evaluate:speech -- --split val` with a
grid of weights); --evaluation is what `npm run evaluate:speech -- --split test --json F` measured
with them, through the TypeScript runtime, and its rows replace the bundle's `quality` (greedy and
lexicon decoding, each point naming its decoder). The manifest copy inside the ONNX graph is
rewritten with acm.json, so the two stay identical.
"""
from __future__ import annotations

import argparse
import json
import os

from ..export import _finish_graph

DECODER_TYPE = "lexicon-beam"
# What the server uses when `ctc.decoder` leaves `symbol_prune` out (models/BUNDLE.md).
DEFAULT_SYMBOL_PRUNE = 8.0


def decoder_spec(lm: str, beam: int, lm_weight: float, word_bonus: float, symbol_prune: float | None = None) -> dict:
    if os.path.basename(lm) != lm:
        raise ValueError(f"lm must be a file name inside the bundle folder; got {lm!r}")
    if symbol_prune is not None and not symbol_prune > 0:
        raise ValueError(f"symbol_prune must be above 0; got {symbol_prune}")
    spec = {"type": DECODER_TYPE, "lm": lm, "beam": int(beam), "lm_weight": float(lm_weight), "word_bonus": float(word_bonus)}
    if symbol_prune is not None:
        spec["symbol_prune"] = float(symbol_prune)
    return spec


def quality_from_evaluation(evaluation: dict, spec: dict, dataset: str) -> tuple[list[dict], dict]:
    """Manifest quality points (ACM rows, both decoders) and the dense model's figures."""
    prune = spec.get("symbol_prune", DEFAULT_SYMBOL_PRUNE)

    def chosen(row: dict) -> bool:
        # Rows written before evaluate:speech named the prune were decoded with the default.
        return row["decoder"] == "greedy" or (row["lm_weight"] == spec["lm_weight"] and row["word_bonus"] == spec["word_bonus"]
                                              and row["beam"] == spec["beam"]
                                              and (row.get("symbol_prune") or DEFAULT_SYMBOL_PRUNE) == prune)
    rows = [r for r in evaluation["rows"] if chosen(r)]
    quality, dense = [], {}
    for r in rows:
        decoder = "greedy" if r["decoder"] == "greedy" else DECODER_TYPE
        if r["graph"] == "dense":
            dense[decoder] = {"cer": round(r["cer"], 4), "wer": round(r["wer"], 4)}
            continue
        for metric in ("cer", "wer"):
            quality.append({"budget": r["budget"], "metric": metric, "value": round(r[metric], 4), "decoder": decoder,
                            "used": round(r["used"], 4), "gflops": round(r["gflops"], 4), "dataset": dataset,
                            "items": r["items"]})
    if not any(q["decoder"] == DECODER_TYPE for q in quality):
        raise ValueError("the evaluation has no ACM row decoded with these settings")
    quality.sort(key=lambda q: (q["decoder"] != DECODER_TYPE, q["budget"], q["metric"]))
    return quality, dense


def set_decoder(bundle: str, spec: dict, evaluation: dict | None = None) -> dict:
    with open(os.path.join(bundle, "acm.json")) as f:
        meta = json.load(f)
    if not os.path.isfile(os.path.join(bundle, spec["lm"])):
        raise FileNotFoundError(f"{bundle} has no {spec['lm']}: build it with models.toolchain.speech.lm first")
    meta["ctc"]["decoder"] = spec
    if evaluation is not None:
        dataset = next(q["dataset"] for q in meta["quality"])
        meta["quality"], dense = quality_from_evaluation(evaluation, spec, dataset)
        training = meta.setdefault("training", {})
        training["dense_test"] = dense
        if "greedy" in dense:  # the exporter's PyTorch figures, replaced by the served path's
            training["dense_test_cer"], training["dense_test_wer"] = dense["greedy"]["cer"], dense["greedy"]["wer"]
    _finish_graph(os.path.join(bundle, meta["graph"]), meta)
    with open(os.path.join(bundle, "acm.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--lm", default="lm.arpa.gz", help="ARPA file in the bundle folder")
    ap.add_argument("--beam", type=int, required=True)
    ap.add_argument("--lm-weight", type=float, required=True)
    ap.add_argument("--word-bonus", type=float, required=True)
    ap.add_argument("--symbol-prune", type=float, default=None,
                    help=f"symbols this many nats below a frame's best are not tried (left out: {DEFAULT_SYMBOL_PRUNE:g})")
    ap.add_argument("--evaluation", help="JSON of `npm run evaluate:speech -- --split test --json F`")
    args = ap.parse_args()
    evaluation = None
    if args.evaluation:
        with open(args.evaluation) as f:
            evaluation = json.load(f)
    meta = set_decoder(args.bundle, decoder_spec(args.lm, args.beam, args.lm_weight, args.word_bonus, args.symbol_prune), evaluation)
    print(json.dumps({"decoder": meta["ctc"]["decoder"], "quality": meta["quality"]}, indent=1))


if __name__ == "__main__":
    main()
