"""Cap-weight search: coordinate descent on a known objective, the objective on a tiny model."""
import os
import tempfile
import unittest
from unittest import mock

import numpy as np
import torch

from models.toolchain import data
from models.toolchain.acm import from_dense
from models.toolchain.build_bundle import phase_steps, recipe
from models.toolchain.checkpoint import save_state
from models.toolchain.tune_caps import cap_loss, parse_budgets, search_weights, tuned_state
from models.toolchain.vit import CONFIGS, build_vit

torch.set_num_threads(2)


class SearchTest(unittest.TestCase):
    def test_moves_each_weight_towards_the_optimum_and_never_raises_the_score(self):
        target = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
        scores = []

        def score(w):
            s = float(((w.log() - target.log()) ** 2).sum())
            scores.append(s)
            return s

        start = torch.tensor([0.5, 0.5, 0.5], dtype=torch.float64)
        w, best = search_weights(score, start, factor=2.0, sweeps=5, log=lambda _: None)
        # Factor 2 reaches every target exactly: 0.5 -> 1.0, stays, 0.5 -> 0.25.
        self.assertEqual(w.tolist(), [1.0, 0.5, 0.25])
        self.assertEqual(best, 0.0)
        self.assertEqual(start.tolist(), [0.5, 0.5, 0.5], "the input is not modified")
        self.assertLessEqual(best, scores[0])

    def test_never_lifts_a_weight_above_one(self):
        w, _ = search_weights(lambda w: -float(w.sum()), torch.tensor([0.9, 1.0], dtype=torch.float64),
                              factor=1.5, sweeps=3, log=lambda _: None)
        self.assertEqual(w.tolist(), [1.0, 1.0])

    def test_stops_when_a_sweep_keeps_nothing(self):
        calls = []
        search_weights(lambda w: calls.append(1) or 1.0, torch.ones(3, dtype=torch.float64) * 0.5,
                       factor=1.4, sweeps=10, log=lambda _: None)
        self.assertEqual(len(calls), 1 + 3 * 2, "one sweep of two candidates per weight, then stop")

    def test_refuses_a_factor_that_does_not_move(self):
        with self.assertRaises(ValueError):
            search_weights(lambda w: 0.0, torch.ones(2), factor=1.0)


class ObjectiveTest(unittest.TestCase):
    def test_budgets_parse_with_default_weight_and_bounds(self):
        self.assertEqual(parse_budgets("0.25:1,0.1:0.25,0.5"), {0.25: 1.0, 0.1: 0.25, 0.5: 1.0})
        for bad in ("0:1", "1.5", "0.5:-1"):
            with self.assertRaises(ValueError):
                parse_budgets(bad)

    def test_cap_loss_is_the_weighted_cross_entropy_at_each_budget(self):
        torch.manual_seed(0)
        cfg = CONFIGS["tiny"]
        model = from_dense(build_vit(cfg), cfg).eval()
        x = torch.randn(6, cfg.channels, cfg.image_size, cfg.image_size)
        y = torch.randint(0, cfg.num_classes, (6,))
        expected = 0.0
        for b, w in ((0.25, 1.0), (0.5, 0.5)):
            logits, _ = model(x, torch.full((6,), b, dtype=torch.float64))
            expected += w * float(torch.nn.functional.cross_entropy(logits, y))
        self.assertAlmostEqual(cap_loss(model, x, y, {0.25: 1.0, 0.5: 0.5}, batch=4), expected, places=5)


class CheckpointTest(unittest.TestCase):
    # As import_bundle writes it: the bundle's recipe and every phase's step count.
    imported = {"model": {"cap_weights": torch.tensor([0.5, 1.0], dtype=torch.float64), "w": torch.ones(2)},
                "step": 1482, "steps": {"phase1": 300, "phase2": 150, "phase3": 1482, "phase3-shared": 600},
                "recipe": "dense base, then phases 1-3; then phase3-shared"}
    settings = {"items": 3000, "budgets": {0.25: 1.0, 0.1: 0.25}, "factor": 1.4, "sweeps": 2}

    def test_tuned_state_has_the_new_weights_no_steps_of_its_own_and_an_extended_recipe(self):
        state = tuned_state(self.imported, "phase3", torch.tensor([0.25, 0.5], dtype=torch.float64), self.settings)
        self.assertEqual(state["model"]["cap_weights"].tolist(), [0.5, 1.0], "scaled so the largest is 1")
        self.assertIs(state["model"]["w"], self.imported["model"]["w"])
        self.assertEqual(self.imported["model"]["cap_weights"].tolist(), [0.5, 1.0], "the source is not modified")
        self.assertEqual(state["step"], 0)
        self.assertEqual(state["steps"], self.imported["steps"])
        self.assertEqual(state["recipe"], "dense base, then phases 1-3; then phase3-shared; then the cap weights "
                         "searched on 3,000 training items for the lowest cross-entropy at budgets 0.25 (weight 1), "
                         "0.1 (weight 0.25), no parameter trained (models.toolchain.tune_caps)")
        self.assertEqual(state["cap_search"], self.settings)

    def test_a_search_on_validation_items_says_so_in_the_recipe(self):
        settings = dict(self.settings, split="val-a", items=2500)
        state = tuned_state(self.imported, "phase3", torch.ones(2, dtype=torch.float64), settings)
        self.assertIn("searched on 2,500 validation items (index 5500..5749 of each class) for the lowest",
                      state["recipe"])

    def test_the_bundle_manifest_keeps_the_imported_history(self):
        with tempfile.TemporaryDirectory() as run:
            save_state(os.path.join(run, "phase3.ckpt"), self.imported)
            tuned = tuned_state(self.imported, "phase3", torch.ones(2, dtype=torch.float64), self.settings)
            save_state(os.path.join(run, "phase3-tuned.ckpt"), tuned)
            self.assertEqual(phase_steps(run, "phase3-tuned"),
                             {"phase1": 300, "phase2": 150, "phase3": 1482, "phase3-shared": 600})
        self.assertEqual(recipe("phase3-tuned", tuned), tuned["recipe"])
        self.assertIn("phase 3 continued under it", recipe("phase3-shared", {"step": 600}))


if __name__ == "__main__":
    unittest.main()


class ValidationHalvesTest(unittest.TestCase):
    def test_the_halves_split_validation_by_index_and_share_no_item(self):
        index = np.tile(np.arange(0, 7000, 50), 2)  # two classes, every 50th index of the file
        fake = {"x": np.zeros((len(index), 28, 28), np.uint8), "y": np.repeat([0, 1], len(index) // 2),
                "index": index}
        with mock.patch.object(data, "_load_all", return_value=fake):
            val, a, b = data.load("val"), data.load("val-a"), data.load("val-b")
            self.assertRaisesRegex(ValueError, "split must be one of .*; got 'val-c'", data.load, "val-c")
        self.assertTrue(((a.index >= 5500) & (a.index < 5750)).all())
        self.assertTrue(((b.index >= 5750) & (b.index < 6000)).all())
        self.assertEqual(sorted(a.index.tolist() + b.index.tolist()), sorted(val.index.tolist()))
        self.assertEqual(len(a.y), 10)  # 5500, 5550, ..., 5700 in each of the two classes
