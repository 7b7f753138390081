"""A word n-gram language model for the speech decoder, written as an ARPA file.

The decoder (server/speech/lexicon-decoder.ts) spells only words of a lexicon and scores each word
it completes with this model. The lexicon is a dictionary of English (Debian `wamerican`,
/usr/share/dict/words, every entry normalised to the CTC alphabet) plus every word of the training
transcripts; the n-gram statistics come from the training transcripts only (optionally with the text of more
training sentences, --extra-text). Validation and test transcripts are never read.

Smoothing is interpolated Kneser-Ney (Chen & Goodman 1998) with one discount per order,
D = n1 / (n1 + 2 n2). Lower orders use continuation counts (how many distinct words precede an
n-gram) except for n-grams that start with <s>, which nothing can precede. The unigram level is
interpolated with a uniform distribution over the lexicon, so a dictionary word never seen in
training keeps a small probability. In ARPA form a seen n-gram stores its interpolated
probability and each context the weight given to the next lower order, which is the same model.

    python3 -m models.toolchain.speech.lm --corpus .cache/speech/espeak-v1 --out models/speech-w2v2-acm/lm.arpa.gz
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
from collections import defaultdict

from . import text as textmod
from .corpus import load_index, plan

BOS, EOS = "<s>", "</s>"


def dictionary_words(path: str = textmod.WORDLIST) -> set[str]:
    """Every entry of the word list that normalises to one word of the CTC alphabet."""
    out: set[str] = set()
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8", errors="ignore") as f:
        for line in f:
            w = textmod.normalise(line.strip())
            if w and " " not in w and w.strip("'"):
                out.add(w)
    return out


class KneserNey:
    """Interpolated Kneser-Ney over `sentences` (lists of words) with the given vocabulary."""

    def __init__(self, sentences: list[list[str]], vocab: set[str], order: int = 3):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        self.order = order
        self.vocab = sorted(vocab | {w for s in sentences for w in s} | {EOS})
        # counts[n][gram]: raw counts at the highest order and for grams starting with <s>,
        # continuation counts (distinct left neighbours) otherwise.
        raw: list[dict[tuple, int]] = [defaultdict(int) for _ in range(order + 1)]
        for s in sentences:
            words = [BOS] + s + [EOS]
            for n in range(1, order + 1):
                for i in range(len(words) - n + 1):
                    gram = tuple(words[i:i + n])
                    if gram == (BOS,):
                        continue
                    raw[n][gram] += 1
        self.counts: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
        self.counts[order] = dict(raw[order])
        for n in range(1, order):
            left: dict[tuple, int] = defaultdict(int)
            for gram in raw[n + 1]:
                left[gram[1:]] += 1
            cont: dict[tuple, int] = {}
            for gram, c in raw[n].items():
                cont[gram] = c if gram[0] == BOS else left.get(gram, 0)
            self.counts[n] = {g: c for g, c in cont.items() if c > 0}
        self.discount = [0.0] * (order + 1)
        for n in range(1, order + 1):
            n1 = sum(1 for c in self.counts[n].values() if c == 1)
            n2 = sum(1 for c in self.counts[n].values() if c == 2)
            self.discount[n] = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
        # Per context: total count and number of distinct continuations.
        self.context: list[dict[tuple, tuple[int, int]]] = [dict() for _ in range(order + 1)]
        for n in range(1, order + 1):
            totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
            for gram, c in self.counts[n].items():
                t = totals[gram[:-1]]
                t[0] += c
                t[1] += 1
            self.context[n] = {h: (t[0], t[1]) for h, t in totals.items()}
        self._cache: dict[tuple, float] = {}

    def backoff(self, history: tuple) -> float:
        """The weight of the next lower order after `history` (1 when the history was never seen)."""
        n = len(history) + 1
        ctx = self.context[n].get(history)
        if ctx is None:
            return 1.0
        total, types = ctx
        return self.discount[n] * types / total

    def prob(self, word: str, history: tuple = ()) -> float:
        """P(word | history), history at most order - 1 words (the last ones are used)."""
        history = tuple(history)[-(self.order - 1):] if self.order > 1 else ()
        key = history + (word,)
        if key in self._cache:
            return self._cache[key]
        n = len(history) + 1
        lower = 1.0 / len(self.vocab) if n == 1 else self.prob(word, history[1:])
        ctx = self.context[n].get(history)
        if ctx is None:
            p = lower
        else:
            total, _ = ctx
            c = self.counts[n].get(key, 0)
            p = max(c - self.discount[n], 0.0) / total + self.backoff(history) * lower
        self._cache[key] = p
        return p

    def write_arpa(self, path: str) -> dict:
        """Writes the model in ARPA form (gzip when the name ends in .gz); returns the n-gram counts."""
        grams: list[list[tuple]] = [[] for _ in range(self.order + 1)]
        grams[1] = [(w,) for w in self.vocab] + [(BOS,)]
        for n in range(2, self.order + 1):
            grams[n] = sorted(self.counts[n])
        contexts = {h for n in range(2, self.order + 1) for h in self.context[n]}
        opener = gzip.open if path.endswith(".gz") else open
        tmp = path + ".tmp"
        with opener(tmp, "wt", encoding="utf-8") as f:
            f.write("\\data\\\n")
            for n in range(1, self.order + 1):
                f.write(f"ngram {n}={len(grams[n])}\n")
            for n in range(1, self.order + 1):
                f.write(f"\n\\{n}-grams:\n")
                for g in grams[n]:
                    # <s> is never predicted: ARPA's convention is a probability of -99.
                    logp = -99.0 if g == (BOS,) else math.log10(self.prob(g[-1], g[:-1]))
                    line = f"{logp:.6f}\t{' '.join(g)}"
                    if n < self.order and g in contexts:
                        line += f"\t{math.log10(self.backoff(g)):.6f}"
                    f.write(line + "\n")
            f.write("\n\\end\\\n")
        os.replace(tmp, path)
        return {f"{n}-grams": len(grams[n]) for n in range(1, self.order + 1)}


def training_text(corpus: str, extra: int = 0) -> list[str]:
    """The training transcripts, plus the sentences of `extra` more training utterances.

    The extra sentences are those `corpus --extra-train` would synthesise (a second sentence stream
    that skips every validation and test sentence), taken as text only.
    """
    texts = [row["text"] for row in load_index(corpus, "train")]
    if extra:
        with open(os.path.join(corpus, "corpus.json")) as f:
            meta = json.load(f)
        planned = plan(meta["counts"], meta["seed"], extra_train=meta.get("extra_train", 0) + extra)["train"]
        have = {row["id"] for row in load_index(corpus, "train")}
        texts += [item["text"] for item in planned if item["id"] not in have]
    return texts


def build(corpus: str, out: str, order: int = 3, word_list: str = textmod.WORDLIST, extra_text: int = 0) -> dict:
    sentences = [t.split() for t in training_text(corpus, extra_text)]
    lexicon = dictionary_words(word_list)
    lm = KneserNey(sentences, lexicon, order)
    counts = lm.write_arpa(out)
    return {"order": order, "lexicon": len(lm.vocab) - 1, "training_sentences": len(sentences), "extra_text": extra_text,
            "dictionary": word_list if lexicon else None, "discounts": [round(d, 4) for d in lm.discount[1:]], **counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True, help="corpus folder (its train/index.jsonl is read)")
    ap.add_argument("--out", required=True, help="ARPA file to write (.gz to compress)")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--word-list", default=textmod.WORDLIST)
    ap.add_argument("--extra-text", type=int, default=0, metavar="N",
                    help="also read the sentences of N more training utterances (see training_text)")
    args = ap.parse_args()
    print(build(args.corpus, args.out, args.order, args.word_list, args.extra_text))


if __name__ == "__main__":
    main()
