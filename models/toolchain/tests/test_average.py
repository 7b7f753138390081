"""Weight averaging of checkpoints, and the snapshots along a phase that feed it."""
import os
import shutil
import tempfile
import unittest

import torch

from models.toolchain.average import average_states, averaged_checkpoint
from models.toolchain.checkpoint import load_state
from models.toolchain.convert import run_phase, snapshot_path


def state(w, cap=(1.0, 0.5), tracked=3):
    return {"layer.weight": torch.tensor(w, dtype=torch.float32),
            "cap_weights": torch.tensor(cap, dtype=torch.float64),
            "norm.num_batches_tracked": torch.tensor(tracked)}


class AverageStatesTest(unittest.TestCase):
    def test_uniform_and_weighted_means(self):
        a, b = state([1.0, 2.0]), state([3.0, 6.0])
        out = average_states([a, b])
        self.assertTrue(torch.equal(out["layer.weight"], torch.tensor([2.0, 4.0])))
        self.assertEqual(out["layer.weight"].dtype, torch.float32)
        out = average_states([a, b], [3, 1])
        self.assertTrue(torch.allclose(out["layer.weight"], torch.tensor([1.5, 3.0])))
        self.assertTrue(torch.equal(out["cap_weights"], a["cap_weights"]), "settings are kept")
        self.assertEqual(int(out["norm.num_batches_tracked"]), 3)

    def test_refuses_what_cannot_be_averaged(self):
        a = state([1.0, 2.0])
        cases = {
            "cap weights": state([1.0, 2.0], cap=(1.0, 0.25)),
            "integer tensor": state([1.0, 2.0], tracked=4),
            "shape": state([1.0, 2.0, 3.0]),
            "keys": {**state([1.0, 2.0]), "extra.bias": torch.zeros(1)},
        }
        for what, other in cases.items():
            with self.subTest(what), self.assertRaises(ValueError):
                average_states([a, other])
        for weights in ([1.0], [-1.0, 2.0], [0.0, 0.0]):
            with self.subTest(weights=weights), self.assertRaises(ValueError):
                average_states([a, state([3.0, 4.0])], weights)
        with self.assertRaises(ValueError):
            average_states([])

    def test_checkpoint_carries_recipe_and_steps(self):
        sources = {
            "phase3": {"model": state([0.0, 0.0]), "step": 0, "steps": {"phase1": 900, "phase3": 1482},
                       "recipe": "the imported recipe"},
            "ft@100": {"model": state([2.0, 2.0]), "step": 100},
            "ft@200": {"model": state([4.0, 4.0]), "step": 200},
        }
        ckpt = averaged_checkpoint(sources)
        self.assertTrue(torch.equal(ckpt["model"]["layer.weight"], torch.tensor([2.0, 2.0])))
        self.assertEqual(ckpt["steps"], {"phase1": 900, "phase3": 1482, "ft": 200})
        self.assertEqual(ckpt["step"], 0)
        self.assertTrue(ckpt["recipe"].startswith("the imported recipe; then the weights of phase3, ft@100, ft@200"))


class SnapshotTest(unittest.TestCase):
    """run_phase(snapshot_every=N) keeps the weights every N steps, as they were at that step."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.x, self.y = torch.randn(16, 3), torch.randn(16, 1)
        self.seen = {}

    def tearDown(self):
        shutil.rmtree(self.dir)

    def step(self, i):
        self.seen[i] = self.model.weight.detach().clone()  # the weights before step i
        return torch.nn.functional.mse_loss(self.model(self.x), self.y), {}

    def test_snapshots_at_every_nth_step(self):
        run_phase("p", self.dir, 5, self.model, list(self.model.parameters()), 0.1, self.step, 0.0, snapshot_every=2)
        names = sorted(f for f in os.listdir(self.dir) if "@" in f)
        self.assertEqual(names, ["p@2.ckpt", "p@4.ckpt"])
        for step in (2, 4):
            snap = load_state(snapshot_path(self.dir, "p", step))
            self.assertEqual(snap["step"], step)
            self.assertTrue(torch.equal(snap["model"]["weight"], self.seen[step]), f"weights after {step} steps")
        self.assertFalse(torch.equal(self.seen[2], self.seen[4]))


if __name__ == "__main__":
    unittest.main()
