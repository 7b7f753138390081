"""The word language model of the speech decoder (Kneser-Ney, ARPA form, training text) and the
manifest's decoder settings."""
import gzip
import json
import math
import os
import tempfile
import unittest

from models.toolchain.speech import corpus
from models.toolchain.speech.decoder import decoder_spec, quality_from_evaluation
from models.toolchain.speech.lm import BOS, EOS, KneserNey, training_text

SENTENCES = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran", "the cat ran away", "a dog sat down"]]


def read_arpa(path: str) -> tuple[dict, dict]:
    """(probabilities, back-offs) by n-gram tuple, log10 as written."""
    opener = gzip.open if path.endswith(".gz") else open
    probs, backoffs = {}, {}
    with opener(path, "rt") as f:
        for line in f:
            fields = line.strip().split("\t")
            if len(fields) < 2 or line.startswith("ngram"):
                continue
            gram = tuple(fields[1].split())
            probs[gram] = float(fields[0])
            if len(fields) == 3:
                backoffs[gram] = float(fields[2])
    return probs, backoffs


def arpa_prob(probs: dict, backoffs: dict, word: str, history: tuple) -> float:
    """P(word | history) by ARPA back-off: what the server's reader computes."""
    weight = 0.0
    for start in range(len(history) + 1):
        gram = history[start:] + (word,)
        if gram in probs:
            return 10 ** (weight + probs[gram])
        weight += backoffs.get(history[start:], 0.0)
    raise KeyError(word)


class KneserNeyTest(unittest.TestCase):
    def setUp(self):
        self.lm = KneserNey(SENTENCES, {"zebra", "cat"}, order=3)

    def test_every_history_gives_a_distribution(self):
        for history in [(), (BOS,), ("the",), (BOS, "the"), ("the", "cat"), ("zebra", "cat"), ("never", "seen")]:
            self.assertAlmostEqual(sum(self.lm.prob(w, history) for w in self.lm.vocab), 1.0, places=12, msg=history)

    def test_a_dictionary_word_never_seen_keeps_a_probability(self):
        self.assertGreater(self.lm.prob("zebra", ("the",)), 0.0)
        self.assertLess(self.lm.prob("zebra", ("the",)), self.lm.prob("cat", ("the",)))

    def test_seen_continuations_beat_unseen_ones(self):
        self.assertGreater(self.lm.prob("sat", ("the", "dog")), self.lm.prob("ran", ("the", "dog")))

    def test_discounts_follow_the_count_of_counts(self):
        # Trigram counts: n1 and n2 of the highest order give D = n1 / (n1 + 2 n2).
        counts = list(self.lm.counts[3].values())
        n1, n2 = counts.count(1), counts.count(2)
        self.assertAlmostEqual(self.lm.discount[3], n1 / (n1 + 2 * n2))

    def test_the_arpa_file_is_the_same_model(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "lm.arpa.gz")
            written = self.lm.write_arpa(path)
            probs, backoffs = read_arpa(path)
        self.assertEqual(written["1-grams"], len(self.lm.vocab) + 1)  # + <s>
        self.assertEqual(probs[(BOS,)], -99.0)
        for history in [(), (BOS,), ("the",), (BOS, "a"), ("cat", "ran"), ("zebra", "cat"), ("dog", "zebra")]:
            for w in self.lm.vocab:
                self.assertAlmostEqual(arpa_prob(probs, backoffs, w, history), self.lm.prob(w, history), places=5, msg=(history, w))

    def test_order_is_checked(self):
        with self.assertRaises(ValueError):
            KneserNey(SENTENCES, set(), order=0)


class TrainingTextTest(unittest.TestCase):
    def test_extra_text_never_holds_a_validation_or_test_sentence(self):
        counts = {"train": 60, "val": 20, "test": 20}
        with tempfile.TemporaryDirectory() as tmp:
            items = corpus.generate(tmp, counts, seed=5, index_only=True)
            texts = training_text(tmp, extra=200)
        held = {i["text"] for s in ("val", "test") for i in items[s]}
        self.assertEqual(len(texts), 260)
        self.assertEqual(texts[:60], [i["text"] for i in items["train"]])
        self.assertFalse(set(texts) & held)


class DecoderSettingsTest(unittest.TestCase):
    def test_spec_names_a_file_of_the_bundle_only(self):
        self.assertEqual(decoder_spec("lm.arpa.gz", 64, 2, 1)["type"], "lexicon-beam")
        with self.assertRaises(ValueError):
            decoder_spec("../lm.arpa.gz", 64, 2, 1)

    def test_quality_takes_the_chosen_settings_and_both_decoders(self):
        row = {"items": 10, "used": 0.5, "gflops": 1.0}
        evaluation = {"rows": [
            {**row, "graph": "dense", "budget": None, "decoder": "greedy", "lm_weight": None, "word_bonus": None, "beam": None, "cer": 0.2, "wer": 0.6},
            {**row, "graph": "dense", "budget": None, "decoder": "lexicon", "lm_weight": 2.0, "word_bonus": 1.0, "beam": 64, "cer": 0.15, "wer": 0.3},
            {**row, "graph": "acm", "budget": 0.5, "decoder": "greedy", "lm_weight": None, "word_bonus": None, "beam": None, "cer": 0.22, "wer": 0.65},
            {**row, "graph": "acm", "budget": 0.5, "decoder": "lexicon", "lm_weight": 2.0, "word_bonus": 1.0, "beam": 64, "cer": 0.16, "wer": 0.31},
            {**row, "graph": "acm", "budget": 0.5, "decoder": "lexicon", "lm_weight": 1.0, "word_bonus": 1.0, "beam": 64, "cer": 0.17, "wer": 0.35},
        ]}
        quality, dense = quality_from_evaluation(evaluation, decoder_spec("lm.arpa.gz", 64, 2.0, 1.0), "test split")
        self.assertEqual(dense, {"greedy": {"cer": 0.2, "wer": 0.6}, "lexicon-beam": {"cer": 0.15, "wer": 0.3}})
        self.assertEqual([(q["decoder"], q["metric"], q["value"]) for q in quality],
                         [("lexicon-beam", "cer", 0.16), ("lexicon-beam", "wer", 0.31), ("greedy", "cer", 0.22), ("greedy", "wer", 0.65)])
        with self.assertRaises(ValueError):
            quality_from_evaluation(evaluation, decoder_spec("lm.arpa.gz", 8, 2.0, 1.0), "test split")

    def test_quality_takes_the_rows_of_the_chosen_prune(self):
        row = {"items": 10, "used": 0.5, "gflops": 1.0, "graph": "acm", "budget": 0.5, "decoder": "lexicon",
               "lm_weight": 1.0, "word_bonus": 2.0, "beam": 64}
        evaluation = {"rows": [{**row, "symbol_prune": 8.0, "cer": 0.14, "wer": 0.21},
                               {**row, "symbol_prune": 6.0, "cer": 0.15, "wer": 0.22}]}
        quality, _ = quality_from_evaluation(evaluation, decoder_spec("lm.arpa.gz", 64, 1.0, 2.0, 6.0), "test split")
        self.assertEqual([q["value"] for q in quality], [0.15, 0.22])
        # Without a prune in the spec, the server's default applies, and so does the row of that value.
        quality, _ = quality_from_evaluation(evaluation, decoder_spec("lm.arpa.gz", 64, 1.0, 2.0), "test split")
        self.assertEqual([q["value"] for q in quality], [0.14, 0.21])
        with self.assertRaises(ValueError):
            decoder_spec("lm.arpa.gz", 64, 1.0, 2.0, 0.0)


if __name__ == "__main__":
    unittest.main()
