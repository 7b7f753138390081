"""The speech toolchain: corpus splits, windows, CTC decoding and error rates, the ACM speech model
(forward, budget bound, windowed equivalence) and the conversion's phase steps."""
import math
import os
import shutil
import tempfile
import unittest

import numpy as np
import torch

from models.toolchain.speech import corpus, data, text
from models.toolchain.speech.model import (CONFIGS, build_dense, chunk_count, dense_frames_logits, dense_trace,
                                           dense_windows_logits, edit_distance, error_rates, features, from_dense,
                                           greedy_decode, keep_chunk, output_frames, window_rows)
from models.toolchain.speech.phases import (acm_pairs, acm_windows_logits, distil_step, frame_distillation, phase3_loss,
                                            relaxed_windows, window_frames)

torch.set_num_threads(2)
TINY = CONFIGS["tiny"]


class CorpusSplitTest(unittest.TestCase):
    def test_no_voice_or_sentence_is_shared_between_splits(self):
        items = corpus.plan({"train": 300, "val": 40, "test": 60}, seed=3, words=["zebra", "quartz", "lumen"])
        by = {s: items[s] for s in corpus.SPLITS}
        for held in ("val", "test"):
            self.assertFalse({i["voice"] for i in by[held]} & {i["voice"] for i in by["train"]}, held)
            self.assertFalse({i["variant"] for i in by[held]} & {i["variant"] for i in by["train"]}, held)
            self.assertFalse({i["text"] for i in by[held]} & {i["text"] for i in by["train"]}, held)
        self.assertFalse({i["text"] for i in by["val"]} & {i["text"] for i in by["test"]})
        self.assertGreater(len({i["voice"] for i in by["train"]}), 40, "training sees many voices")

    def test_plan_is_deterministic_given_the_seed(self):
        counts = {"train": 20, "val": 5, "test": 5}
        self.assertEqual(corpus.plan(counts, 7, ["word"]), corpus.plan(counts, 7, ["word"]))
        self.assertNotEqual(corpus.plan(counts, 7, ["word"]), corpus.plan(counts, 8, ["word"]))

    def test_extra_training_utterances_leave_the_held_out_splits_unchanged(self):
        counts, words = {"train": 200, "val": 30, "test": 40}, ["zebra", "quartz", "lumen"]
        base, grown = corpus.plan(counts, 5, words), corpus.plan(counts, 5, words, extra_train=500)
        self.assertEqual(grown["val"], base["val"])
        self.assertEqual(grown["test"], base["test"])
        self.assertEqual(grown["train"][:200], base["train"])
        self.assertEqual(len(grown["train"]), 700)
        texts = [i["text"] for i in grown["train"]]
        self.assertEqual(len(set(texts)), 700, "every training sentence is new")
        self.assertEqual(len({i["id"] for i in grown["train"]}), 700)
        for held in ("val", "test"):
            self.assertFalse({i["text"] for i in grown[held]} & set(texts), held)
            self.assertFalse({i["voice"] for i in grown[held]} & {i["voice"] for i in grown["train"]}, held)

    def test_speed_perturbation_scales_length_and_pitch(self):
        t = torch.arange(16000) / 16000
        tone = torch.sin(2 * math.pi * 200 * t)
        audio = torch.zeros(2, 16000)
        audio[0], audio[1, :8000] = tone, tone[:8000]
        out, samples = data.speed_perturb(audio, torch.tensor([16000, 8000]), step=3, seed=1, spread=0.2)
        for row, n in enumerate((16000, 8000)):
            m = int(samples[row])
            self.assertNotEqual(m, n)
            self.assertTrue(0.8 * n / 1.2 - 1 <= m <= n / 0.8 + 1)
            self.assertEqual(float(out[row, m:].abs().sum()), 0.0, "padding stays silent")
            spectrum = torch.fft.rfft(out[row, :m]).abs()
            peak_hz = int(spectrum.argmax()) * 16000 / m
            self.assertAlmostEqual(peak_hz, 200 * n / m, delta=3, msg="a faster utterance is higher")
        again, _ = data.speed_perturb(audio, torch.tensor([16000, 8000]), step=3, seed=1, spread=0.2)
        self.assertTrue(torch.equal(out, again), "seeded by step: a resumed run sees the same audio")

    def test_sorted_epochs_run_shortest_first_then_shuffle(self):
        lengths = [int(n) for n in np.random.default_rng(0).integers(100, 5000, 64)]
        split = data.Split([np.zeros(n, np.int16) for n in lengths], ["a"] * 64, [str(i) for i in range(64)])
        batches = data.Batches(split, 8, seed=5, sorted_epochs=1)
        first = [j for step in range(8) for j in batches.indices(step)]
        self.assertEqual(sorted(first), list(range(64)), "the sorted epoch still visits every utterance once")
        self.assertEqual([lengths[j] for j in first], sorted(lengths))
        second = [lengths[j] for step in range(8, 16) for j in batches.indices(step)]
        self.assertNotEqual(second, sorted(second), "later epochs are shuffled again")
        plain = data.Batches(split, 8, seed=5)
        self.assertEqual([plain.indices(s) for s in range(8, 16)], [batches.indices(s) for s in range(8, 16)])

    def test_sentences_only_use_vocabulary_characters(self):
        for s in text.sentences(200, seed=1, words=["naïve", "o'clock"]):
            self.assertTrue(s and all(c in text.CHAR_TO_ID for c in s), s)
            self.assertEqual(s, text.normalise(s))

    @unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
    def test_generates_16k_wavs_with_an_index(self):
        with tempfile.TemporaryDirectory() as tmp:
            done = corpus.generate(tmp, {"train": 2, "val": 1, "test": 1}, seed=5)
            row = done["test"][0]
            audio = corpus.read_wav(os.path.join(tmp, "test", row["id"] + ".wav"))
            self.assertAlmostEqual(len(audio) / 16000, row["seconds"], places=2)
            self.assertGreater(row["seconds"], 0.5)
            self.assertGreater(float(abs(audio).max()), 0.01)
            self.assertEqual(len(corpus.load_index(tmp, "train")), 2)

    @unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
    def test_items_from_an_index_are_synthesised_to_the_same_audio(self):
        with tempfile.TemporaryDirectory() as tmp:
            first = os.path.join(tmp, "a")
            done = corpus.generate(first, {"train": 2, "val": 1, "test": 1}, seed=5)
            items = {"train": [{k: v for k, v in r.items() if k != "seconds"} for r in done["train"]]}
            again = corpus.generate(os.path.join(tmp, "b"), {"train": 2}, seed=5, items=items)
            self.assertEqual(again["train"], done["train"])
            for row in done["train"]:
                name = os.path.join("train", row["id"] + ".wav")
                with open(os.path.join(first, name), "rb") as x, open(os.path.join(tmp, "b", name), "rb") as y:
                    self.assertEqual(x.read(), y.read())
            self.assertFalse(os.path.exists(os.path.join(tmp, "b", "test")), "only the listed splits are written")

    @unittest.skipUnless(shutil.which("espeak-ng"), "espeak-ng is not installed")
    def test_growing_a_hard_linked_copy_leaves_the_original_as_it_was(self):
        with tempfile.TemporaryDirectory() as tmp:
            first, grown = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            counts = {"train": 2, "val": 1, "test": 1}
            corpus.generate(first, counts, seed=5, index_only=True)
            names = ["corpus.json"] + [os.path.join(s, "index.jsonl") for s in counts]
            before = {}
            for name in names:
                with open(os.path.join(first, name)) as f:
                    before[name] = f.read()
            for name in names:  # cp -al: the copy shares every file with the original
                os.makedirs(os.path.dirname(os.path.join(grown, name)), exist_ok=True)
                os.link(os.path.join(first, name), os.path.join(grown, name))
            corpus.generate(grown, counts, seed=5, extra_train=3, index_only=True)
            self.assertEqual(len(corpus.load_index(grown, "train")), 5)
            for name in names:
                with open(os.path.join(first, name)) as f:
                    self.assertEqual(f.read(), before[name], name)


class DecodeTest(unittest.TestCase):
    def test_greedy_ctc_collapses_repeats_and_drops_blanks(self):
        ids = {c: text.CHAR_TO_ID[c] for c in "abl "}
        path = [0, ids["a"], ids["a"], 0, ids["a"], ids["b"], 0, ids[" "], ids[" "], ids["l"], 0, 0]
        logits = torch.full((len(path), len(text.VOCAB)), -5.0)
        logits[torch.arange(len(path)), torch.tensor(path)] = 5.0
        self.assertEqual(greedy_decode(logits), "aab l")

    def test_error_rates(self):
        self.assertEqual(edit_distance(list("kitten"), list("sitting")), 3)
        r = error_rates(["the cat sat", "a dog"], ["the cat sat", "the dog"])
        self.assertAlmostEqual(r["wer"], 1 / 5)
        self.assertAlmostEqual(r["cer"], 3 / 18)  # "a" -> "the": one substitution, two insertions

    def test_word_errors_split_by_kind_of_reference_word(self):
        from models.toolchain.speech.word_errors import align, breakdown, closed_words
        self.assertEqual(align("a the dog".split(), "the dog".split()), [("ins", None), ("ok", "the"), ("ok", "dog")])
        self.assertEqual(align([], ["anna", "saw"]), [("del", "anna"), ("del", "saw")])
        closed = closed_words()
        self.assertIn("means", closed)  # a template's own word
        self.assertIn("apples", closed)  # "how many {noun}s"
        self.assertNotIn("civilly", closed)
        pairs = [("the word sever means your our apple", "the word civilly means your dark apple"),
                 ("a the dog", "the dog"), ("", "anna saw")]
        b = breakdown(pairs, closed)
        self.assertEqual(b["reference_words"], 11)
        self.assertEqual((b["closed"]["words"], b["dictionary"]["words"]), (10, 1))
        self.assertAlmostEqual(b["closed"]["error_rate"], 3 / 10)  # dark, anna, saw
        self.assertAlmostEqual(b["dictionary"]["error_rate"], 1.0)  # civilly
        self.assertAlmostEqual(b["insertions"], 1 / 11)
        self.assertAlmostEqual(b["closed"]["wer_points"] + b["dictionary"]["wer_points"] + b["insertions"], b["wer"])
        self.assertAlmostEqual(b["wer"], error_rates([h for h, _ in pairs], [r for _, r in pairs])["wer"])


class WindowTest(unittest.TestCase):
    def test_window_geometry(self):
        cfg = CONFIGS["speech-small"]
        self.assertEqual((cfg.frame_samples, cfg.receptive_samples, cfg.lookahead_samples), (320, 400, 80))
        self.assertEqual(cfg.window_samples, 50 * 320 + 80)
        self.assertEqual(chunk_count(1, cfg), 1)
        self.assertEqual(chunk_count(cfg.chunk_samples, cfg), 1)
        self.assertEqual(chunk_count(cfg.chunk_samples + 1, cfg), 2)

    def test_window_features_equal_the_utterance_features_at_the_same_frames(self):
        torch.manual_seed(0)
        dense = build_dense(TINY).eval()
        audio = torch.randn(1, 3 * TINY.chunk_samples + 500) * 0.2
        with torch.no_grad():
            per_window = features(dense, window_rows(audio, TINY))
            whole = window_frames(dense, audio, TINY)
        torch.testing.assert_close(per_window, whole, atol=1e-5, rtol=1e-5)

    def test_dense_training_path_equals_window_by_window(self):
        torch.manual_seed(0)
        dense = build_dense(TINY).eval()
        audio = torch.randn(2, 2 * TINY.chunk_samples + 100) * 0.2
        with torch.no_grad():
            fast = dense_windows_logits(dense, audio, TINY)
            w = window_rows(audio, TINY)
            slow = keep_chunk(dense.aux(dense.encoder.transformer(features(dense, w))), 2, TINY)
        self.assertEqual(fast.shape, (2, 3 * TINY.chunk_frames, TINY.vocab))
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


class FineTuneInitTest(unittest.TestCase):
    """speech.train --init: a saved dense model is the starting point, of the same configuration only."""

    def test_init_loads_the_saved_weights_and_refuses_another_configuration(self):
        from dataclasses import replace

        from models.toolchain.speech.train import init_from
        torch.manual_seed(0)
        saved = build_dense(TINY)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "base-best.pt")
            torch.save({"config": TINY.to_dict(), "model": saved.state_dict(), "step": 7}, path)
            torch.manual_seed(1)
            fresh = build_dense(TINY)
            self.assertFalse(torch.equal(fresh.aux.weight, saved.aux.weight))
            loaded = init_from(TINY, path)
            self.assertEqual(saved.state_dict().keys(), loaded.state_dict().keys())
            for (name, a), (_, b) in zip(saved.state_dict().items(), loaded.state_dict().items()):
                self.assertTrue(torch.equal(a, b), name)
            wider = replace(TINY, mlp_dim=TINY.mlp_dim * 2)
            with self.assertRaises(SystemExit):
                init_from(wider, path)

    def test_freeze_conv_trains_only_the_layers_above(self):
        from models.toolchain.speech.train import freeze_conv
        torch.manual_seed(0)
        model = build_dense(TINY)
        self.assertGreaterEqual(len(TINY.conv), 3)
        freeze_conv(model, 2)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        dense_windows_logits(model, torch.randn(2, TINY.chunk_samples * 2), TINY).square().mean().backward()
        opt.step()
        layers = model.feature_extractor.conv_layers
        for i in (0, 1):
            for name, p in layers[i].named_parameters():
                self.assertIsNone(p.grad, f"conv layer {i} {name}")
                self.assertTrue(torch.equal(p, before[f"feature_extractor.conv_layers.{i}.{name}"]))
        self.assertFalse(torch.equal(layers[2].conv.weight, before["feature_extractor.conv_layers.2.conv.weight"]))

    def test_resumed_schedule_keeps_its_total_unless_steps_is_given(self):
        from models.toolchain.speech.train import schedule_total
        self.assertEqual(schedule_total(None, 3000, 554), 3000)
        self.assertEqual(schedule_total(1900, 3000, 554), 1900)
        self.assertEqual(schedule_total(5000, 3000, 554), 5000)
        with self.assertRaisesRegex(ValueError, r"above the step the run reached \(554\), got 554"):
            schedule_total(554, 3000, 554)


class Phase3TargetTest(unittest.TestCase):
    """convert.draw_target: the budget target each phase-3 step trains at."""

    def test_default_draw_is_the_equal_one_and_weights_shift_it(self):
        import random
        from collections import Counter

        from models.toolchain.speech.convert import PHASE3_TARGETS, draw_target
        steps = range(6000)
        # A run resumed across a code change draws what it drew before.
        self.assertEqual([draw_target(s) for s in steps], [random.Random(s).choice(PHASE3_TARGETS) for s in steps])
        self.assertEqual([draw_target(s, {0.5: 1.0}) for s in range(50)], [0.5] * 50)
        counts = Counter(draw_target(s, {0.25: 1.0, 0.5: 3.0}) for s in steps)
        self.assertEqual(set(counts), {0.25, 0.5})
        self.assertAlmostEqual(counts[0.5] / len(steps), 0.75, delta=0.03)
        # Same weights given in another order: the same draw.
        self.assertEqual([draw_target(s, {0.5: 3.0, 0.25: 1.0}) for s in range(200)],
                         [draw_target(s, {0.25: 1.0, 0.5: 3.0}) for s in range(200)])


class ACMSpeechModelTest(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.dense = build_dense(TINY).eval()
        torch.nn.init.normal_(self.dense.aux.weight, std=1.0)
        self.model = from_dense(self.dense, TINY).eval()
        with torch.no_grad():
            for _, _, acm in self.model.acms():
                for p in acm.gate.parameters():
                    p.mul_(4.0)
        self.audio = torch.randn(3, TINY.window_samples) * 0.3

    def test_forward_shapes_and_every_ffn_and_projection_is_an_acm(self):
        logits, counts = self.model(self.audio, torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64))
        self.assertEqual(logits.shape, (3, TINY.window_frames, TINY.vocab))
        self.assertEqual(counts.shape, (3, 5 * TINY.num_layers, TINY.window_frames))
        self.assertEqual([a.kind for _, _, a in self.model.acms()], ["q", "k", "v", "o", "ffn"] * TINY.num_layers)
        ffn_only = from_dense(self.dense, TINY, projections=False)
        self.assertEqual([a.kind for _, _, a in ffn_only.acms()], ["ffn"] * TINY.num_layers)

    def test_served_q_k_v_with_one_gate_and_cap_equal_each_acm_alone(self):
        budget = torch.tensor([1.0, 0.5, 0.2], dtype=torch.float64)
        with torch.no_grad():
            logits, counts = self.model(self.audio, budget)
            # The same forward with every ACM deciding its own counts (no run_qkv).
            x = self.model.encode(self.audio)
            cap = self.model.cap_budgets(budget)
            alone: list[torch.Tensor] = []

            def run(acm, z):
                y, k = acm(z, budget, cap[:, len(alone)])
                alone.append(k)
                return y

            for layer in self.model.layers:
                x = layer.block(x, run)
            torch.testing.assert_close(counts, torch.stack(alone, 1), rtol=0, atol=0)
            torch.testing.assert_close(logits, self.model.head(x), rtol=0, atol=0)
        self.assertGreater(len(set(counts.flatten().tolist())), 2)

    def test_budget_bounds_each_window(self):
        budgets = [1.0, 0.75, 0.5, 0.3, 0.1, 0.02]
        audio = self.audio[:1].expand(len(budgets), -1)
        _, counts = self.model(audio, torch.tensor(budgets, dtype=torch.float64))
        acms = [a for _, _, a in self.model.acms()]
        cost = torch.tensor([a.learner_macs for a in acms], dtype=torch.float64)
        full = sum(a.n * a.learner_macs for a in acms) * TINY.window_frames
        floor = sum(a.min_choice * a.learner_macs for a in acms) / sum(a.n * a.learner_macs for a in acms)
        used = ((counts.double().sum(-1) * cost).sum(-1) / full).tolist()
        for b, u in zip(budgets, used):
            self.assertLessEqual(u, max(b, floor) + 1e-9, (b, u))
        self.assertEqual(used, sorted(used, reverse=True), "less budget, fewer learners")
        self.assertGreater(used[0], used[-1])
        self.assertTrue(bool((counts[:, [i for i, a in enumerate(acms) if a.kind != "ffn"]] >= 1).all()), "projections run >= 1")

    def test_cap_weights_share_the_budget_unequally_within_the_same_bound(self):
        acms = [a for _, _, a in self.model.acms()]
        cost = torch.tensor([a.learner_macs for a in acms], dtype=torch.float64)
        full = sum(a.n * a.learner_macs for a in acms) * TINY.window_frames
        budget = torch.full((3,), 0.3, dtype=torch.float64)
        with torch.no_grad():
            _, equal = self.model(self.audio, budget)
            self.model.cap_weights.copy_(torch.linspace(0.2, 1.0, len(acms), dtype=torch.float64))
            caps = self.model.cap_budgets(budget)
            _, weighted = self.model(self.audio, budget)
            self.model.capped = False
            _, asked = self.model(self.audio, budget)
        self.assertLess(float(caps[0, 0]), float(caps[0, -1]), "a smaller weight, a smaller share")
        self.assertFalse(torch.equal(equal, weighted))
        for counts in (equal, weighted):
            used = (counts.double().sum(-1) * cost).sum(-1) / full
            self.assertTrue(bool((used <= 0.3 + 1e-9).all()), used)
        asked_used = (asked.double().sum(-1) * cost).sum(-1) / full
        self.assertTrue(bool((asked_used > 0.3).all()), f"uncapped, the gates alone exceed the budget: {asked_used}")

    def test_a_checkpoint_without_cap_weights_loads_with_equal_ones(self):
        from models.toolchain.checkpoint import load_into
        state = {k: v for k, v in self.model.state_dict().items() if k != "cap_weights"}
        other = from_dense(self.dense, TINY)
        other.cap_weights.fill_(0.5)
        load_into(other, state)
        self.assertEqual(other.cap_weights.tolist(), [1.0] * len(other.acms()))

    def test_full_learners_reproduce_the_dense_model_up_to_the_dropped_output_bias(self):
        with torch.no_grad():
            for layer in self.dense.encoder.transformer.layers:
                layer.feed_forward.output_dense.bias.zero_()
            model = from_dense(self.dense, TINY, projections=False).eval()
            for _, _, acm in model.acms():
                last = acm.gate[-1]
                last.weight.zero_(); last.bias.zero_(); last.bias[-1] = 10.0  # always choose k = n
            logits, counts = model(self.audio, torch.ones(3, dtype=torch.float64))
            dense = self.dense.aux(self.dense.encoder.transformer(features(self.dense, self.audio)))
        self.assertTrue(bool((counts == 4).all()))
        torch.testing.assert_close(logits, dense, atol=1e-4, rtol=1e-4)

    def test_dense_trace_reproduces_the_dense_model(self):
        frames = torch.randn(2, TINY.window_frames, TINY.hidden_dim)
        with torch.no_grad():
            logits, pairs = dense_trace(self.dense, frames)
            t = self.dense.encoder.transformer
            self.assertFalse(t.layer_norm_first)
            expected = self.dense.aux(t(frames))
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
        self.assertEqual(sorted(pairs[0]), ["ffn", "k", "o", "q", "v"])

    def test_phase3_runs_under_the_cap_and_reaches_the_gates(self):
        audio = torch.randn(2, TINY.chunk_samples * 2) * 0.2
        frames = window_frames(self.dense, audio, TINY)
        budget = torch.full((frames.shape[0],), 0.3, dtype=torch.float64)
        torch.manual_seed(1)
        _, asked, ran, _ = relaxed_windows(self.model, frames, budget)
        acms = [a for _, _, a in self.model.acms()]
        floor = sum(a.min_choice * a.learner_macs for a in acms) / sum(a.n * a.learner_macs for a in acms)
        self.assertTrue(bool((ran <= max(0.3, floor) + 1e-9).all()), ran)
        self.assertTrue(bool((ran <= asked + 1e-9).all()))
        samples = torch.tensor([audio.shape[1]] * 2)
        targets = torch.tensor([3, 4, 5, 6])
        loss, info = phase3_loss(self.model, frames, 2, samples, targets, torch.tensor([2, 2]), 0.3)
        loss.backward()
        self.assertIsNotNone(self.model.layers[0].q.gate[0].weight.grad, "the task loss reaches the gates")
        self.assertLessEqual(info["ran"], max(0.3, floor) + 1e-9)

    def test_phase3_distillation_teacher_is_the_dense_model_and_pulls_the_student_toward_it(self):
        audio = torch.randn(2, TINY.chunk_samples * 2) * 0.2
        frames = window_frames(self.dense, audio, TINY)
        with torch.no_grad():
            teacher = dense_frames_logits(self.dense, frames, 2, TINY)
        torch.testing.assert_close(teacher, dense_windows_logits(self.dense, audio, TINY), atol=1e-5, rtol=1e-5)
        samples = torch.tensor([audio.shape[1]] * 2)
        args = (self.model, frames, 2, samples, torch.tensor([3, 4, 5, 6]), torch.tensor([2, 2]), 0.5)
        torch.manual_seed(2)
        _, ctc_only = phase3_loss(*args)
        torch.manual_seed(2)
        loss, info = phase3_loss(*args, teacher=teacher, distil_weight=0.5)
        self.assertNotIn("kd", ctc_only)
        self.assertEqual(info["ctc"], ctc_only["ctc"], "same Gumbel draws, same CTC term")
        self.assertGreater(info["kd"], 0.0, "at budget 0.5 the ACM model differs from the dense one")
        loss.backward()
        self.assertIsNotNone(self.model.layers[0].q.w1.grad)

    def test_frame_distillation_is_zero_on_the_teacher_and_ignores_padding(self):
        torch.manual_seed(3)
        teacher = torch.randn(2, 6, 5)
        lengths = torch.tensor([6, 4])
        self.assertAlmostEqual(frame_distillation(teacher.clone(), teacher, lengths).item(), 0.0, places=6)
        student = torch.randn(2, 6, 5)
        kd = frame_distillation(student, teacher, lengths)
        self.assertGreater(kd.item(), 0.0)
        padded = student.clone()
        padded[1, 4:] = 100.0 * torch.randn(2, 5)  # frames past the second utterance's end
        self.assertAlmostEqual(frame_distillation(padded, teacher, lengths).item(), kd.item(), places=5)
        kl = torch.nn.functional.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True,
                                        reduction="none").sum(-1)
        self.assertAlmostEqual(kd.item(), ((kl[0].sum() + kl[1, :4].sum()) / 10).item(), places=5)

    def test_each_acm_is_paired_with_its_own_dense_block(self):
        frames = torch.randn(2, TINY.window_frames, TINY.hidden_dim)
        with torch.no_grad():
            _, pairs = dense_trace(self.dense, frames)
            matched = acm_pairs(self.model, pairs)
        self.assertEqual([a.kind for a, _, _ in matched], ["q", "k", "v", "o", "ffn"] * TINY.num_layers)
        for layer, block in zip(self.model.layers, self.dense.encoder.transformer.layers):
            ffn = [(z, o) for a, z, o in matched if a is layer.mlp][0]
            # All learners equal the dense FFN without its output bias (dropped at conversion).
            with torch.no_grad():
                full = layer.mlp.prefix_outputs(ffn[0])[..., -1, :] + block.feed_forward.output_dense.bias
            torch.testing.assert_close(full, ffn[1], atol=1e-4, rtol=1e-4)

    def test_served_path_and_distillation_step_run(self):
        audio = torch.randn(2, TINY.chunk_samples * 2) * 0.2
        with torch.no_grad():
            out = acm_windows_logits(self.model, audio, 0.5)
        self.assertEqual(out.shape, (2, 2 * TINY.chunk_frames, TINY.vocab))
        frames = window_frames(self.dense, audio, TINY)
        loss = distil_step(self.model, self.dense, frames)
        loss.backward()
        self.assertTrue(torch.isfinite(loss))
        self.assertIsNotNone(self.model.layers[0].mlp.w1.grad)


if __name__ == "__main__":
    unittest.main()


class SpeechTuneCapsTest(unittest.TestCase):
    def test_ctc_cap_loss_is_the_served_models_ctc_loss_per_character_weighted_over_budgets(self):
        from models.toolchain.speech.tune_caps import ctc_cap_loss, projected_batches
        torch.manual_seed(0)
        dense = build_dense(TINY).eval()
        torch.nn.init.normal_(dense.aux.weight, std=1.0)
        model = from_dense(dense, TINY).eval()
        lengths = [TINY.chunk_samples * 2, TINY.chunk_samples * 3 - 500, TINY.chunk_samples + 700]
        split = data.Split([(np.random.default_rng(i).standard_normal(n) * 3000).astype(np.int16)
                            for i, n in enumerate(lengths)], ["a cat", "see the sea", "it"], ["0", "1", "2"])
        batches = projected_batches(model, split, [0, 1, 2], batch=2)
        budgets = {0.5: 1.0, 0.25: 0.5}
        expected = 0.0
        with torch.no_grad():
            for b, w in budgets.items():
                for i in range(3):
                    audio, samples, targets, target_lengths = data.collate(split, [i])
                    log_probs = acm_windows_logits(model, audio, b).log_softmax(-1).transpose(0, 1)
                    frames = output_frames(samples, TINY).clamp_max(log_probs.shape[0])
                    loss = torch.nn.functional.ctc_loss(log_probs, targets, frames, target_lengths, blank=0,
                                                        reduction="sum", zero_infinity=True)
                    expected += w * float(loss) / int(target_lengths[0]) / 3
        self.assertAlmostEqual(ctc_cap_loss(model, batches, budgets), expected, places=4)
        model.cap_weights.copy_(torch.linspace(0.2, 1.0, len(model.acms()), dtype=torch.float64))
        self.assertNotAlmostEqual(ctc_cap_loss(model, batches, budgets), expected, places=4)

    def test_asked_fractions_are_the_uncapped_gates_choices(self):
        from models.toolchain.speech.tune_caps import asked_fractions, projected_batches
        torch.manual_seed(1)
        dense = build_dense(TINY).eval()
        model = from_dense(dense, TINY).eval()
        with torch.no_grad():
            for _, _, acm in model.acms():
                for p in acm.gate.parameters():
                    p.mul_(4.0)
        split = data.Split([(np.random.default_rng(7).standard_normal(TINY.chunk_samples * 2) * 3000).astype(np.int16)],
                           ["a cat"], ["0"])
        asked = asked_fractions(model, projected_batches(model, split, [0]), budgets=(0.3,))
        self.assertTrue(model.capped, "the cap is back on afterwards")
        audio, _, _, _ = data.collate(split, [0])
        w = window_rows(audio, TINY)
        model.capped = False
        with torch.no_grad():
            _, counts = model(w, torch.full((w.shape[0],), 0.3, dtype=torch.float64))
        model.capped = True
        torch.testing.assert_close(asked, counts.double().mean((0, 2)) / 4)
        with torch.no_grad():
            _, capped = model(w, torch.full((w.shape[0],), 0.3, dtype=torch.float64))
        self.assertGreater(float(asked.mean()), float(capped.double().mean()) / 4, "the cap cut what they ask")


class CheckpointPortabilityTest(unittest.TestCase):
    def test_weight_norm_keys_of_either_pytorch_spelling_load(self):
        from models.toolchain.checkpoint import load_into
        torch.manual_seed(0)
        source = torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 4, 3, groups=2), dim=2)
        newer = {k.replace(".weight_g", ".parametrizations.weight.original0")
                  .replace(".weight_v", ".parametrizations.weight.original1"): v
                 for k, v in torch.nn.Sequential(source).state_dict().items()}
        self.assertIn("0.parametrizations.weight.original0", newer)
        target = torch.nn.Sequential(torch.nn.utils.weight_norm(torch.nn.Conv1d(4, 4, 3, groups=2), dim=2))
        load_into(target, newer)
        x = torch.randn(1, 4, 9)
        self.assertTrue(torch.equal(target(x), torch.nn.Sequential(source)(x)))
        with self.assertRaises(RuntimeError):
            load_into(target, {**newer, "0.unknown": torch.zeros(1)})


class ImportSpeechBundleTest(unittest.TestCase):
    """An exported speech bundle read back (speech.import_bundle) holds the exported weights."""

    def test_round_trip_through_onnx(self):
        for projections in (True, False):
            with self.subTest(projections=projections):
                self.round_trip(projections)

    def round_trip(self, projections: bool):
        """With q/k/v/o as ACMs, and with the FFNs only (attention exported as the dense module)."""
        from models.toolchain.speech.export import export_bundle, manifest
        from models.toolchain.speech.import_bundle import import_models
        from models.toolchain.speech.make_tiny_bundle import build
        cfg, dense, _ = build(seed=3)
        with torch.no_grad():
            # Distinct values everywhere, as after training: the exporter merges equal-valued
            # parameters (untrained layer-norm scales) into one initializer.
            for p in dense.parameters():
                p.normal_(std=0.3)
        model = from_dense(dense, cfg, projections=projections).eval()
        meta = manifest(model, "t", dense_graph="dense.onnx", training={})
        out = tempfile.mkdtemp()
        try:
            export_bundle(model, out, meta, dense=dense)
            cfg2, dense2, model2, _ = import_models(out)
        finally:
            shutil.rmtree(out)
        self.assertEqual(cfg2, cfg)
        self.assertEqual(model2.projections, projections)
        self.assertFalse(dense.training or model.training, "export left a model in training mode (dropout on)")
        for a, b in ((dense, dense2), (model, model2)):
            sa, sb = a.state_dict(), b.state_dict()
            self.assertEqual(sa.keys(), sb.keys())
            for key in sa:
                self.assertTrue(torch.equal(sa[key], sb[key]), key)
        audio = torch.randn(1, cfg.chunk_samples * 3) * 0.3
        with torch.no_grad():
            self.assertTrue(torch.equal(acm_windows_logits(model, audio, 0.5), acm_windows_logits(model2, audio, 0.5)))


class SwapDenseTest(unittest.TestCase):
    def test_the_copy_carries_the_new_dense_model_and_the_rest_unchanged(self):
        import onnx
        from dataclasses import replace
        from onnx import numpy_helper
        from models.toolchain.speech.export import export_bundle, manifest
        from models.toolchain.speech.make_tiny_bundle import build
        from models.toolchain.speech.swap_dense import swap_dense
        torch.set_num_threads(1)
        cfg, dense, model = build(seed=0)
        _, other, _ = build(seed=1)
        with tempfile.TemporaryDirectory() as tmp:
            bundle, out = os.path.join(tmp, "bundle"), os.path.join(tmp, "copy")
            export_bundle(model, bundle, manifest(model, "tiny", dense_graph="dense.onnx"), dense=dense)
            path = os.path.join(tmp, "base-best.pt")
            torch.save({"config": cfg.to_dict(), "model": other.state_dict(), "step": 7}, path)
            self.assertEqual(swap_dense(bundle, path, out)["step"], 7)
            for name in ("acm.json", "model.onnx"):
                with open(os.path.join(bundle, name), "rb") as a, open(os.path.join(out, name), "rb") as b:
                    self.assertEqual(a.read(), b.read(), name)
            # The new graph holds the other model's output head, not the bundle's (onnxruntime parity
            # of this export is test/export-parity.test.ts's).
            weights = [numpy_helper.to_array(t) for t in onnx.load(os.path.join(out, "dense.onnx")).graph.initializer]

            def holds(w: np.ndarray) -> bool:
                return any(a.shape == w.shape and np.allclose(a, w) for x in weights for a in (x, x.T))
            self.assertTrue(holds(other.aux.weight.detach().numpy()))
            self.assertFalse(holds(dense.aux.weight.detach().numpy()))
            wrong = replace(cfg, chunk_frames=cfg.chunk_frames + 1)
            torch.save({"config": wrong.to_dict(), "model": other.state_dict()}, path)
            with self.assertRaisesRegex(ValueError, "the bundle has"):
                swap_dense(bundle, path, out)
            with self.assertRaisesRegex(ValueError, "not be the bundle itself"):
                torch.save({"config": cfg.to_dict(), "model": other.state_dict()}, path)
                swap_dense(bundle, path, bundle)
