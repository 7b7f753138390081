"""The grouped kernel and the request cap (kernels/grouped.py) on hand-made and random inputs."""
import unittest

import torch

from kernels.grouped import cap_counts, grouped_learners
from models.toolchain.acm import ACM

torch.set_num_threads(2)


class GroupedKernelTest(unittest.TestCase):
    def test_each_row_runs_exactly_its_k_learners(self):
        torch.manual_seed(0)
        for kind in ("ffn", "q"):
            acm = ACM(dim=16, n=4, width=8, kind=kind)
            z = torch.randn(37, 16)
            k = torch.randint(0, 5, (37,))
            y = grouped_learners(z, k, acm.w1, acm.b1, acm.w2, 4, 8, acm.gelu)
            prefix = acm.prefix_outputs(z)  # h(z, 0..4)
            expected = prefix[torch.arange(37), k]
            torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
            # k - 1 learners would differ: the check above is not satisfied by an off-by-one kernel.
            off_by_one = prefix[torch.arange(37), (k - 1).clamp_min(0)]
            self.assertGreater((y - off_by_one).abs().max().item(), 1e-3)

    def test_k_zero_rows_are_zero_and_empty_groups_are_fine(self):
        acm = ACM(dim=8, n=4, width=4, kind="ffn")
        z = torch.randn(5, 8)
        k = torch.tensor([0, 0, 4, 4, 0])
        y = grouped_learners(z, k, acm.w1, acm.b1, acm.w2, 4, 4, True)
        self.assertTrue(torch.all(y[k == 0] == 0))
        self.assertTrue(torch.all(y[k == 4].abs().sum(-1) > 0))


class CapTest(unittest.TestCase):
    def test_hand_made_water_filling(self):
        desired = torch.tensor([[4, 4, 1, 0]])
        # cap = floor(0.5 * 4 * 4) = 8; level 3 gives 3+3+1+0 = 7, one learner left for the
        # first token that wanted more than 3.
        k = cap_counts(desired, torch.tensor([0.5], dtype=torch.float64), 4, 0)
        self.assertEqual(k.tolist(), [[4, 3, 1, 0]])

    def test_within_cap_is_left_alone(self):
        desired = torch.tensor([[2, 1, 0, 3]])
        k = cap_counts(desired, torch.tensor([0.5], dtype=torch.float64), 4, 0)
        self.assertEqual(k.tolist(), desired.tolist())

    def test_floor_applies_to_min_choice(self):
        desired = torch.tensor([[4, 4, 4, 4]])
        k = cap_counts(desired, torch.tensor([0.05], dtype=torch.float64), 4, 1)
        self.assertEqual(k.tolist(), [[1, 1, 1, 1]])

    def test_bound_never_exceeded_and_never_raised(self):
        gen = torch.Generator().manual_seed(3)
        for min_choice in (0, 1):
            desired = torch.randint(min_choice, 5, (64, 50), generator=gen)
            budget = torch.rand(64, generator=gen, dtype=torch.float64).clamp_min(1e-3)
            k = cap_counts(desired, budget, 4, min_choice)
            cap = torch.clamp(torch.floor(budget * 200).long(), min=min_choice * 50)
            self.assertTrue(torch.all(k.sum(1) <= cap))
            self.assertTrue(torch.all(k <= desired))
            self.assertTrue(torch.all(k >= min_choice))
            # The cap spends what it may: either everything wished for, or the whole cap.
            self.assertTrue(torch.all((k.sum(1) == desired.sum(1)) | (k.sum(1) == cap)))

    def test_rows_are_independent_of_their_batch(self):
        gen = torch.Generator().manual_seed(4)
        desired = torch.randint(0, 5, (6, 50), generator=gen)
        budget = torch.tensor([0.1, 0.25, 0.5, 0.6, 0.9, 1.0], dtype=torch.float64)
        together = cap_counts(desired, budget, 4, 0)
        for i in range(6):
            alone = cap_counts(desired[i:i + 1], budget[i:i + 1], 4, 0)
            self.assertEqual(alone.tolist(), together[i:i + 1].tolist())


if __name__ == "__main__":
    unittest.main()


class ModelBudgetContractTest(unittest.TestCase):
    def test_used_never_exceeds_budget_or_floor(self):
        from models.toolchain.build_bundle import used_fraction
        from models.toolchain.export import budget_floor
        from models.toolchain.make_tiny_bundle import build
        _, _, model = build()
        floor = budget_floor(model)
        budgets = torch.tensor([0.01, floor / 2, floor, 0.1, 0.2, 0.26, 0.3, 0.5, 0.77, 1.0], dtype=torch.float64)
        pixels = torch.randn(len(budgets), 1, 28, 28, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            _, counts = model(pixels, budgets)
        used = used_fraction(model, counts)
        for b, u in zip(budgets.tolist(), used.tolist()):
            self.assertLessEqual(u, max(b, floor) + 1e-12, f"budget {b}: used {u}")
        # Below the floor, exactly the minimum learners run.
        self.assertAlmostEqual(used[0].item(), floor, places=9)


class CapPriorityTest(unittest.TestCase):
    def test_leftover_learners_follow_priority(self):
        desired = torch.tensor([[4, 4, 4, 4]])
        priority = torch.tensor([[3.1, 3.9, 3.5, 3.2]])
        # cap = floor(0.375 * 16) = 6: level 1 for all (4), two left for the two highest priorities.
        k = cap_counts(desired, torch.tensor([0.375], dtype=torch.float64), 4, 0, priority=priority)
        self.assertEqual(k.tolist(), [[1, 2, 2, 1]])
