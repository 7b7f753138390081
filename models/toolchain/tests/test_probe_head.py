"""The head probe: the features it keeps reproduce the model's logits; the refit fits and is pulled."""
import unittest

import numpy as np
import torch

from models.toolchain import data
from models.toolchain.acm import from_dense
from models.toolchain.probe_head import accuracy, head_features, refit_head
from models.toolchain.vit import CONFIGS, build_vit

torch.set_num_threads(2)


class HeadFeaturesTest(unittest.TestCase):
    def test_the_kept_features_give_the_model_logits_at_that_budget(self):
        torch.manual_seed(0)
        cfg = CONFIGS["tiny"]
        model = from_dense(build_vit(cfg), cfg).eval()
        rng = np.random.default_rng(0)
        split = data.Split(x=rng.integers(0, 256, (7, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, 7),
                           index=np.arange(7))
        feats, labels = head_features(model, split, 0.25, batch=3)
        self.assertEqual(tuple(feats.shape), (7, cfg.hidden_dim))
        self.assertEqual(labels.tolist(), split.y.tolist())
        logits, _ = model(data.to_tensor(split.x), torch.full((7,), 0.25, dtype=torch.float64))
        torch.testing.assert_close(model.head(feats), logits)
        self.assertEqual(len(model.head._forward_hooks), 0, "the hook is removed")
        augmented, _ = head_features(model, split, 0.25, aug_seed=1, batch=3)
        self.assertFalse(torch.equal(augmented, feats), "augmented items give other features")


class RefitTest(unittest.TestCase):
    def setUp(self):
        gen = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (200,), generator=gen)
        # Two classes apart along the first feature; the starting head reads the second one.
        self.feats = torch.randn(200, 2, generator=gen) * 0.3
        self.feats[:, 0] += self.labels.float() * 2 - 1
        self.w0 = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
        self.b0 = torch.zeros(2)

    def test_fits_the_features_from_a_head_that_reads_the_wrong_one(self):
        self.assertLess(accuracy(self.w0, self.b0, self.feats, self.labels), 0.7)
        w, b = refit_head(self.w0, self.b0, self.feats, self.labels, pull=0.0, steps=300, lr=0.05)
        self.assertGreater(accuracy(w, b, self.feats, self.labels), 0.95)

    def test_a_strong_pull_keeps_the_head_and_bias_only_keeps_the_weight(self):
        w, b = refit_head(self.w0, self.b0, self.feats, self.labels, pull=1e4, steps=300, lr=0.05)
        torch.testing.assert_close(w, self.w0, atol=1e-3, rtol=0)
        w, b = refit_head(self.w0, self.b0, self.feats, self.labels, pull=0.0, steps=50, bias_only=True, lr=0.05)
        self.assertTrue(torch.equal(w, self.w0))
        self.assertFalse(torch.equal(b, self.b0))


if __name__ == "__main__":
    unittest.main()
