"""The grouped kernel and the request cap (kernels/grouped.py) on hand-made and random inputs."""
import io
import unittest
from collections import Counter

import onnx
import torch

from kernels.grouped import cap_counts, grouped_learners, rows_where
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
        # Every row in one group, including the zero group alone.
        prefix = acm.prefix_outputs(z)
        for j in range(5):
            y = grouped_learners(z, torch.full((5,), j), acm.w1, acm.b1, acm.w2, 4, 4, True)
            self.assertEqual(y.shape, z.shape)
            torch.testing.assert_close(y, prefix[:, j], atol=1e-5, rtol=1e-5)


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


def exported(module: torch.nn.Module, *args: torch.Tensor) -> onnx.ModelProto:
    """`module` exported the way bundles are (opset 17, batch dimension dynamic). No module here
    holds a run-time choice (kernels.branch), so no custom domain is named, as export does then."""
    buf = io.BytesIO()
    names = [f"in{i}" for i in range(len(args))]
    with torch.no_grad():
        torch.onnx.export(module, args, buf, opset_version=17, do_constant_folding=False, input_names=names,
                          dynamic_axes={name: {0: "batch"} for name in names})
    return onnx.load_from_string(buf.getvalue())


def exported_ops(module: torch.nn.Module, *args: torch.Tensor) -> Counter:
    """Operator counts of `module` exported the way bundles are."""
    return Counter(n.op_type for n in exported(module, *args).graph.node)


class ExportedGraphTest(unittest.TestCase):
    """What the exported kernel costs onnxruntime in nodes: each one is run time on every batch."""

    def test_rows_where_is_nonzero_then_reshape(self):
        mask = torch.tensor([False, True, True, False, True])
        self.assertEqual(rows_where(mask).tolist(), [1, 2, 4])
        self.assertEqual(rows_where(torch.zeros(3, dtype=torch.bool)).tolist(), [])

        class Rows(torch.nn.Module):
            def forward(self, k):
                return rows_where(k.reshape(-1) == 2)

        ops = exported_ops(Rows(), torch.tensor([[2, 0, 2]]))
        self.assertEqual(ops["NonZero"], 1)
        self.assertEqual(ops["Transpose"], 0)

    def test_fixed_token_count_exports_without_reading_shapes(self):
        class Cap(torch.nn.Module):
            def __init__(self, tokens):
                super().__init__()
                self.tokens = tokens

            def forward(self, desired, budget, priority):
                return cap_counts(desired, budget, 4, 0, priority=priority, tokens=self.tokens)

        args = (torch.tensor([[4, 1, 3, 2, 0, 4]]), torch.tensor([0.3], dtype=torch.float64), torch.rand(1, 6))
        dynamic, fixed = exported_ops(Cap(None), *args), exported_ops(Cap(6), *args)
        self.assertGreater(dynamic["Shape"], 0)
        self.assertEqual(fixed["Shape"], 0)
        self.assertLess(sum(fixed.values()), sum(dynamic.values()))

    def test_fixed_token_count_gives_the_same_counts_and_must_match(self):
        torch.manual_seed(2)
        desired = torch.randint(0, 5, (9, 12))
        priority = torch.rand(9, 12)
        budget = torch.rand(9, dtype=torch.float64)
        self.assertEqual(cap_counts(desired, budget, 4, 0, priority, tokens=12).tolist(),
                         cap_counts(desired, budget, 4, 0, priority).tolist())
        with self.assertRaisesRegex(ValueError, "tokens=10, but the counts have 12 tokens"):
            cap_counts(desired, budget, 4, 0, priority, tokens=10)


class WeightedCapBudgetsTest(unittest.TestCase):
    """ACMViT's sharing of a request's budget among its ACMs (acm.weighted_cap_budgets)."""

    def setUp(self):
        from models.toolchain.acm import ACMViT
        from models.toolchain.vit import CONFIGS
        self.model = ACMViT(CONFIGS["tiny"], 4)
        self.acms = [a for _, _, a in self.model.acms()]
        self.full = torch.tensor([float(a.n * a.learner_macs) for a in self.acms], dtype=torch.float64)
        self.low = torch.tensor([a.min_choice / a.n for a in self.acms], dtype=torch.float64)
        self.budgets = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0], dtype=torch.float64)

    def test_equal_weights_give_every_acm_the_budget_above_its_minimum(self):
        from types import SimpleNamespace

        from models.toolchain.acm import weighted_cap_budgets
        # A projection (minimum one learner of 4: floor 0.25, full cost 400) and an FFN (no
        # minimum, full cost 1200). Below 0.25 the projection runs its minimum (100) and the FFN
        # gets the rest of budget * 1600; from 0.25 both caps are the budget.
        acms = [SimpleNamespace(n=4, learner_macs=100, min_choice=1), SimpleNamespace(n=4, learner_macs=300, min_choice=0)]
        budgets = torch.tensor([0.1, 0.2, 0.25, 0.5, 1.0], dtype=torch.float64)
        caps = weighted_cap_budgets(acms, budgets, torch.ones(2))
        expected = torch.tensor([[0.25, 60 / 1200], [0.25, 220 / 1200], [0.25, 0.25], [0.5, 0.5], [1.0, 1.0]],
                                dtype=torch.float64)
        self.assertTrue(torch.allclose(caps, expected, atol=1e-9), (caps, expected))
        # A budget the learners divide exactly is not floored one learner short by rounding.
        self.assertTrue(torch.all(caps[3] == 0.5))
        self.assertTrue(torch.all(weighted_cap_budgets(self.acms, self.budgets, torch.ones(len(self.acms)))[self.budgets == 0.5] == 0.5))

    def test_caps_cost_the_budget_within_bounds(self):
        from models.toolchain.acm import weighted_cap_budgets
        weights = torch.rand(len(self.acms), generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.05
        caps = weighted_cap_budgets(self.acms, self.budgets, weights)
        floor = (self.full * self.low).sum() / self.full.sum()
        cost = (caps * self.full).sum(-1) / self.full.sum()
        for b, c in zip(self.budgets.tolist(), cost.tolist()):
            self.assertAlmostEqual(c, max(b, floor.item()), places=7, msg=f"budget {b}")
        self.assertTrue(torch.all(caps >= self.low - 1e-12) and torch.all(caps <= 1.0))
        # Never less for a larger budget, and in proportion to the weights where no bound binds.
        self.assertTrue(torch.all(caps[1:] >= caps[:-1] - 1e-9))
        free = (caps[7] > self.low + 1e-9) & (caps[7] < 1.0 - 1e-9)
        ratio = caps[7][free] / weights[free]
        self.assertTrue(torch.allclose(ratio, ratio[0].expand_as(ratio), atol=1e-6))

    def test_model_with_weights_keeps_the_budget_contract(self):
        from models.toolchain.export import budget_floor
        from models.toolchain.metrics import used_fraction
        self.model.cap_weights.copy_(torch.linspace(0.2, 1.0, len(self.acms), dtype=torch.float64))
        floor = budget_floor(self.model)
        pixels = torch.randn(len(self.budgets), 1, 28, 28, generator=torch.Generator().manual_seed(5))
        self.model.pass_unspent = False
        with torch.no_grad():
            _, counts = self.model.eval()(pixels, self.budgets)
        caps = self.model.cap_budgets(self.budgets)
        tokens = self.model.cfg.tokens
        for a, acm in enumerate(self.acms):  # each ACM within its own cap
            limit = torch.clamp(torch.floor(caps[:, a] * acm.n * tokens), min=acm.min_choice * tokens)
            self.assertTrue(torch.all(counts[:, a].sum(-1) <= limit))
        self.model.pass_unspent = True  # later ACMs may then pass their caps, the request never its budget
        with torch.no_grad():
            _, passed = self.model(pixels, self.budgets)
        for counts in (counts, passed):
            for b, u in zip(self.budgets.tolist(), used_fraction(self.model, counts).tolist()):
                self.assertLessEqual(u, max(b, floor) + 1e-12, f"budget {b}: used {u}")


class PassOnUnspentTest(unittest.TestCase):
    """What a layer's ACMs were allowed and did not spend goes to the later ACMs (acm.pass_on_unspent)."""

    def test_shares_what_was_not_spent_in_proportion_to_the_later_caps_above_their_minimum(self):
        from types import SimpleNamespace

        from models.toolchain.acm import pass_on_unspent
        # Projections (minimum one learner of four: 0.25) of full cost 400 per token, and an FFN
        # (no minimum) of 1200; two tokens. The first ACM was allowed half of its learners (400
        # multiply-adds over both tokens) and ran one learner per token (200).
        acms = [SimpleNamespace(n=4, learner_macs=m, min_choice=c, tokens=None) for m, c in ((100, 1), (100, 1), (300, 0), (100, 1))]
        caps = torch.tensor([[0.5, 0.5, 0.5, 0.25], [0.5, 0.5, 0.5, 0.95]], dtype=torch.float64)
        out = pass_on_unspent(acms, caps, slice(0, 1), [torch.tensor([[1, 1], [2, 2]])])
        # Row 0: 200 unspent, shared by what the later caps allow above their minimum, over both
        # tokens: (0.5 - 0.25) * 800 = 200 and 0.5 * 2400 = 1200; the last ACM is at its minimum and
        # keeps it. So the next two rise by 0.25 and 0.5 times 200 / 1400. Row 1 spent all it was
        # allowed: nothing changes.
        expected = torch.tensor([[0.5, 0.5 + 0.25 / 7, 0.5 + 0.5 / 7, 0.25], [0.5, 0.5, 0.5, 0.95]], dtype=torch.float64)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-9)
        passed = ((out - caps)[0, 1:] * torch.tensor([800.0, 2400.0, 800.0], dtype=torch.float64)).sum()
        self.assertAlmostEqual(passed.item(), 200.0, places=5)
        # Never above every learner: row 1 spending nothing passes 400 on, and its last cap, at 0.95,
        # would rise past 1 (by 0.7 * 400 / 1960), so it stops there.
        out = pass_on_unspent(acms, caps, slice(0, 1), [torch.tensor([[1, 1], [0, 0]])])
        self.assertEqual(out[1, 3].item(), 1.0)
        # Nothing after the last ACM: the caps come back as they were.
        self.assertIs(pass_on_unspent(acms, caps, slice(3, 4), [torch.tensor([[0, 0], [0, 0]])]), caps)

    def test_nothing_is_passed_to_acms_at_their_minimum(self):
        from types import SimpleNamespace

        from models.toolchain.acm import pass_on_unspent
        # Every later ACM at its minimum: what was not spent is not passed on (their floor path stays).
        acms = [SimpleNamespace(n=4, learner_macs=100, min_choice=0, tokens=2)] + \
            [SimpleNamespace(n=4, learner_macs=100, min_choice=1, tokens=2) for _ in range(2)]
        caps = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
        out = pass_on_unspent(acms, caps, slice(0, 1), [torch.tensor([[0, 0]])])
        torch.testing.assert_close(out, caps, rtol=0, atol=0)

    def test_never_raises_a_cap_past_what_was_passed_on(self):
        from types import SimpleNamespace

        from models.toolchain.acm import pass_on_unspent
        # Unspent work that divides into a later cap only up to rounding must not round it up.
        acms = [SimpleNamespace(n=3, learner_macs=7, min_choice=0, tokens=3), SimpleNamespace(n=3, learner_macs=11, min_choice=0, tokens=3)]
        caps = torch.tensor([[0.7, 0.3]], dtype=torch.float64)
        out = pass_on_unspent(acms, caps, slice(0, 1), [torch.tensor([[1, 0, 2]])])
        unspent = 0.7 * 21 * 3 - 3 * 7
        self.assertLessEqual((out[0, 1] - caps[0, 1]).item() * 33 * 3, unspent)
        self.assertGreater((out[0, 1] - caps[0, 1]).item() * 33 * 3, unspent - 1e-6)

    def test_a_layer_that_asks_for_little_leaves_its_share_to_the_later_layers(self):
        from models.toolchain.export import budget_floor
        from models.toolchain.metrics import used_fraction
        from models.toolchain.acm import ACMViT
        from models.toolchain.vit import CONFIGS
        torch.manual_seed(7)
        model = ACMViT(CONFIGS["tiny"], 4).eval()
        with torch.no_grad():
            for i, layer in enumerate(model.layers):
                for acm in layer.acms():
                    last = acm.gate[-1]
                    last.weight.zero_()
                    # Layer 0 asks for its minimum on every token, the later layers for every learner.
                    last.bias.copy_(torch.arange(acm.choices, dtype=torch.float32) * (-1.0 if i == 0 else 1.0))
        budgets = torch.tensor([0.2, 0.3, 0.5, 0.7], dtype=torch.float64)
        pixels = torch.randn(len(budgets), 1, 28, 28, generator=torch.Generator().manual_seed(2))
        used = {}
        for on in (False, True):
            model.pass_unspent = on
            with torch.no_grad():
                _, counts = model(pixels, budgets)
            used[on] = used_fraction(model, counts)
        floor = budget_floor(model)
        for b, off, on in zip(budgets.tolist(), used[False].tolist(), used[True].tolist()):
            self.assertGreater(on, off + 0.01, f"budget {b}: {on} passed on against {off}")
            self.assertLessEqual(on, max(b, floor) + 1e-12, f"budget {b}: used {on}")

    def test_published_way_models_are_not_capped_so_nothing_is_passed_on(self):
        from models.toolchain.acm import ACMViT
        from models.toolchain.vit import CONFIGS
        torch.manual_seed(8)
        model = ACMViT(CONFIGS["tiny"], 4).eval()
        model.capped = False
        pixels = torch.randn(3, 1, 28, 28)
        budgets = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
        with torch.no_grad():
            on = model(pixels, budgets)
            model.pass_unspent = False
            off = model(pixels, budgets)
        torch.testing.assert_close(on, off, rtol=0, atol=0)


class SharedInputCountsTest(unittest.TestCase):
    def test_adds_no_parameters(self):
        from models.toolchain.acm import ACMViT
        from models.toolchain.vit import CONFIGS
        model = ACMViT(CONFIGS["tiny"])
        self.assertFalse(any(".qkv." in key for key in model.state_dict()))

    def test_same_counts_as_each_acm_alone(self):
        from models.toolchain.acm import SharedInputCounts
        torch.manual_seed(4)
        acms = [ACM(dim=12, n=4, width=3, kind=kind) for kind in ("q", "k", "v")]
        with torch.no_grad():
            for a in acms:  # spread the random gates' choices over every count
                for p in a.gate.parameters():
                    p.mul_(4.0)
        z = torch.randn(6, 9, 12)
        budget = torch.tensor([1.0, 0.8, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
        caps = torch.rand(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.9 + 0.1
        bonus = torch.zeros(9)
        bonus[0] = 5.0
        with torch.no_grad():
            together = SharedInputCounts(acms)(z, budget, caps, bonus)
            alone = [a(z, budget, caps[:, i], bonus)[1] for i, a in enumerate(acms)]
        for i in range(3):
            torch.testing.assert_close(together[i], alone[i], rtol=0, atol=0)
        # The ACMs' gates differ, so the counts do too: one shared gate would not pass the check above.
        self.assertTrue(any((alone[0] != alone[i]).any() for i in (1, 2)))
        self.assertGreater(len(set(torch.cat(alone).flatten().tolist())), 2)

    def test_refuses_acms_whose_gates_cannot_be_joined(self):
        from models.toolchain.acm import SharedInputCounts
        q, ffn = ACM(dim=8, n=4, width=2, kind="q"), ACM(dim=8, n=4, width=4, kind="ffn")
        with self.assertRaises(ValueError):
            SharedInputCounts([q, ffn])
