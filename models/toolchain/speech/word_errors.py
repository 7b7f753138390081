"""Where a recogniser's word errors fall: on the words of the sentence templates' closed lists, or
on the dictionary words the corpus draws into some sentences (`text.sentence`'s {word} slots).

    npm run evaluate:speech -- --split val --budgets 0.5 --transcripts val.jsonl
    /usr/bin/python3 -m models.toolchain.speech.word_errors val.jsonl [--worst 30]

Each reference word is aligned to the hypothesis (the alignment behind WER); a substitution or a
deletion counts against the reference word's kind, an insertion against neither. Per row of the
evaluation: the share of each kind among reference words, its error rate, and the WER points it
accounts for (those points, plus insertions, add up to the WER).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

from . import text as T


def closed_words() -> set[str]:
    """Every word the templates can produce without drawing from the dictionary."""
    lists = (T.NOUNS, T.ADJECTIVES, T.VERBS_PAST, T.VERBS_BASE, T.ADVERBS, T.PREPOSITIONS, T.DETERMINERS, T.NAMES,
             T.CONTRACTIONS)
    words = {w for group in lists for w in group} | {n + "s" for n in T.NOUNS}  # "how many {noun}s"
    for template in T.TEMPLATES:
        words.update(w for w in template.split() if not w.startswith("{"))
    return words


def align(hyp: list[str], ref: list[str]) -> list[tuple[str, str | None]]:
    """A minimum-edit alignment as (op, reference word) pairs, op in ok / sub / del / ins (ins: None)."""
    n, m = len(ref), len(hyp)
    d = [[i + j if i == 0 or j == 0 else 0 for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    ops: list[tuple[str, str | None]] = []
    i, j = n, m
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            ops.append(("ok" if ref[i - 1] == hyp[j - 1] else "sub", ref[i - 1]))
            i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            ops.append(("del", ref[i - 1]))
            i -= 1
        else:
            ops.append(("ins", None))
            j -= 1
    return ops[::-1]


def breakdown(pairs: list[tuple[str, str]], closed: set[str]) -> dict:
    """Word errors of (hypothesis, reference) pairs split by reference word kind."""
    words = {"closed": 0, "dictionary": 0}
    errors = {"closed": 0, "dictionary": 0}
    insertions = 0
    wrong: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for hyp, ref in pairs:
        for op, word in align(hyp.split(), ref.split()):
            if word is None:
                insertions += 1
                continue
            kind = "closed" if word in closed else "dictionary"
            words[kind] += 1
            seen[word] += 1
            if op != "ok":
                errors[kind] += 1
                wrong[word] += 1
    total = max(1, sum(words.values()))
    out: dict = {"reference_words": sum(words.values()),
                 "wer": (sum(errors.values()) + insertions) / total, "insertions": insertions / total}
    for kind in words:
        out[kind] = {"words": words[kind], "share": words[kind] / total,
                     "error_rate": errors[kind] / max(1, words[kind]), "wer_points": errors[kind] / total}
    out["most_wrong"] = [(w, wrong[w], seen[w]) for w, _ in wrong.most_common()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("transcripts", help="the JSON lines of evaluate:speech --transcripts")
    ap.add_argument("--worst", type=int, default=20, help="list this many most often wrong words per row")
    args = ap.parse_args()
    with open(args.transcripts) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines:
        raise SystemExit(f"{args.transcripts}: no utterances")
    closed = closed_words()
    for key in lines[0]["hypotheses"]:
        b = breakdown([(line["hypotheses"][key], line["reference"]) for line in lines], closed)
        c, d = b["closed"], b["dictionary"]
        print(f"{key}: WER {b['wer']:.4f} over {b['reference_words']} reference words")
        print(f"  template words    {c['share']:6.1%} of words, {c['error_rate']:.3f} wrong: {c['wer_points']:.4f} of WER")
        print(f"  dictionary words  {d['share']:6.1%} of words, {d['error_rate']:.3f} wrong: {d['wer_points']:.4f} of WER")
        print(f"  insertions                                    {b['insertions']:.4f} of WER")
        if args.worst:
            print("  most often wrong: " + ", ".join(f"{w} {e}/{n}" for w, e, n in b["most_wrong"][:args.worst]))


if __name__ == "__main__":
    main()
