"""Layer norms conditioned on the budget: the knot interpolation by hand, that conditioning changes
nothing until trained, that a knot's correction reaches only the budgets around it, and that a
conditioned model survives checkpoints (export and import: test_vit.ImportBundleTest)."""
import unittest

import torch

from models.toolchain import phases
from models.toolchain.acm import ACMViT, from_dense, knot_mix
from models.toolchain.reallocate import norm_groups
from models.toolchain.vit import CONFIGS, build_vit

torch.set_num_threads(2)
F64 = torch.float64


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = CONFIGS["tiny"]
    vit = build_vit(cfg).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return from_dense(vit, cfg).eval()


class KnotMixTest(unittest.TestCase):
    def test_weights_by_hand(self):
        knots = torch.tensor([0.1, 0.25, 0.5, 1.0], dtype=F64)
        budget = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4, 0.75, 1.0], dtype=F64)
        expected = torch.tensor([
            [1, 0, 0, 0],          # below the first knot: the first knot
            [1, 0, 0, 0],
            [1 / 3, 2 / 3, 0, 0],  # 0.2 is two thirds of the way from 0.1 to 0.25
            [0, 1, 0, 0],
            [0, 0.4, 0.6, 0],
            [0, 0, 0.5, 0.5],
            [0, 0, 0, 1],
        ], dtype=F64)
        self.assertTrue(torch.allclose(knot_mix(budget, knots), expected, atol=1e-12))


class ConditionedNormTest(unittest.TestCase):
    def setUp(self):
        self.model = tiny_model()
        self.x = torch.randn(4, 1, 28, 28)
        self.budget = torch.tensor([0.1, 0.25, 0.5, 1.0], dtype=F64)

    def test_conditioning_changes_nothing_until_trained(self):
        with torch.no_grad():
            before, counts = self.model(self.x, self.budget)
            self.model.condition_norms()
            after, counts2 = self.model(self.x, self.budget)
        self.assertTrue(torch.equal(before, after))
        self.assertTrue(torch.equal(counts, counts2))

    def test_a_knots_correction_reaches_only_the_budgets_around_it(self):
        self.model.condition_norms((0.1, 0.25, 0.5, 1.0))
        with torch.no_grad():
            before, _ = self.model(self.x, self.budget)
            self.model.ln.budget_shift[1].normal_()  # the final norm's shift at knot 0.25
            after, _ = self.model(self.x, self.budget)
        changed = (after - before).abs().amax(-1) > 1e-4
        self.assertEqual(changed.tolist(), [False, True, False, False])

    def test_the_correction_adds_to_the_shared_scale_and_shift(self):
        norm = self.model.layers[0].ln_1
        self.model.condition_norms((0.25, 1.0))
        with torch.no_grad():
            norm.budget_scale.normal_(); norm.budget_shift.normal_()
        x = torch.randn(2, 5, norm.weight.shape[0])
        mix = knot_mix(torch.tensor([0.25, 1.0], dtype=F64), self.model.norm_knots)
        with torch.no_grad():
            got = norm(x, mix)
            for i in range(2):
                plain = torch.nn.functional.layer_norm(x[i], norm.normalized_shape, norm.weight + norm.budget_scale[i],
                                                       norm.bias + norm.budget_shift[i], norm.eps)
                self.assertTrue(torch.allclose(got[i], plain, atol=1e-6))

    def test_knots_must_ascend_and_conditioning_happens_once(self):
        with self.assertRaisesRegex(ValueError, "ascend"):
            self.model.condition_norms((0.5, 0.25))
        self.model.condition_norms()
        with self.assertRaisesRegex(ValueError, "already"):
            self.model.condition_norms()

    def test_checkpoint_of_a_conditioned_model_loads_into_a_plain_one(self):
        self.model.condition_norms()
        with torch.no_grad():
            for norm in self.model.norms():
                norm.budget_scale.normal_(std=0.1)
        fresh = ACMViT(self.model.cfg, self.model.n).eval()
        fresh.load_state_dict(self.model.state_dict())
        with torch.no_grad():
            self.assertTrue(torch.equal(fresh(self.x, self.budget)[0], self.model(self.x, self.budget)[0]))

    def test_norms_only_training_lowers_the_loss_and_moves_nothing_else(self):
        self.model.condition_norms()
        shared = {k: v.clone() for k, v in self.model.state_dict().items() if "budget_" not in k}
        groups = norm_groups(self.model, 1e-2)
        opt = torch.optim.Adam(groups)
        y = torch.randint(0, 10, (4,))
        self.model.train()
        torch.manual_seed(3)
        losses = []
        for _ in range(30):
            loss, _ = phases.phase3_loss(self.model, self.x, y, 0.25, capped=True)
            losses.append(loss.item())
            opt.zero_grad(); loss.backward(); opt.step()
        self.assertLess(sum(losses[-5:]) / 5, sum(losses[:5]) / 5)
        for k, v in self.model.state_dict().items():
            if k in shared:
                self.assertTrue(torch.equal(v, shared[k]), k)
        self.assertGreater(self.model.ln.budget_shift[1].abs().max().item(), 0)  # knot 0.25 learned
        self.assertEqual(self.model.ln.budget_shift[4].abs().max().item(), 0)   # knot 0.6 never drawn


if __name__ == "__main__":
    unittest.main()
