"""A run-time choice in an exported graph (kernels/branch.py) and the ACMs' floor path that uses it."""
import unittest
from collections import Counter

import onnx
import torch

from kernels.branch import DOMAIN, branch, lower_selects
from kernels.grouped import at_floor, cap_counts, grouped_learners
from models.toolchain.acm import ACM, ACMViT, SharedInputCounts, set_floor_path
from models.toolchain.tests.test_kernel import exported
from models.toolchain.vit import CONFIGS

torch.set_num_threads(2)


def ops(graph: onnx.GraphProto) -> Counter:
    return Counter(n.op_type for n in graph.node)


def branches(node: onnx.NodeProto) -> dict[str, onnx.GraphProto]:
    return {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}


class Choice(torch.nn.Module):
    """sin(x + 1), x.sum() if x's total is positive, else cos(x + 1), x.sum() * 2."""

    def forward(self, x):
        shared = x + 1
        total = x.sum()
        return branch(total > 0, lambda: (shared.sin(), total), lambda: (shared.cos(), total * 2))


class BranchTest(unittest.TestCase):
    def test_eager_runs_only_the_chosen_function(self):
        ran = []
        then = lambda: ran.append("then") or (torch.ones(1),)  # noqa: E731
        other = lambda: ran.append("else") or (torch.zeros(1),)  # noqa: E731
        self.assertEqual(branch(torch.tensor(True), then, other)[0].item(), 1.0)
        self.assertEqual(branch(torch.tensor([False]), then, other)[0].item(), 0.0)
        self.assertEqual(ran, ["then", "else"])

    def test_export_lowers_to_one_if_with_each_side_inside_its_branch(self):
        model = exported(Choice(), torch.randn(3, 4))
        self.assertEqual(ops(model.graph)["Select"], 1)
        self.assertEqual(lower_selects(model), 1)
        onnx.checker.check_model(model)
        main = ops(model.graph)
        self.assertEqual(main["If"], 1)
        self.assertEqual(main["Select"], 0)
        self.assertFalse(any(o.domain == DOMAIN for o in model.opset_import))
        # What both sides read (x + 1, the sum) stays outside; each side's own work moves in.
        self.assertEqual((main["Sin"], main["Cos"], main["Add"], main["ReduceSum"]), (0, 0, 1, 1))
        node = next(n for n in model.graph.node if n.op_type == "If")
        inside = {name: ops(g) for name, g in branches(node).items()}
        self.assertEqual(inside["then_branch"]["Sin"], 1)
        self.assertEqual(inside["then_branch"]["Cos"], 0)
        self.assertEqual((inside["else_branch"]["Cos"], inside["else_branch"]["Mul"]), (1, 1))
        # The sum is an output of the then side as it is: passed through by an Identity.
        self.assertEqual(inside["then_branch"]["Identity"], 1)
        types = [o.type.tensor_type.elem_type for o in branches(node)["else_branch"].output]
        self.assertEqual(types, [onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT])

    def test_sides_of_different_counts_are_refused(self):
        class Bad(torch.nn.Module):
            def forward(self, x):
                return branch(x.sum() > 0, lambda: (x, x), lambda: (x,))

        with self.assertRaisesRegex(ValueError, "then gives 2 tensors, else 1"):
            exported(Bad(), torch.randn(2))


class FloorTest(unittest.TestCase):
    """At the floor (no request's cap above the minimum) the cap gives every token min_choice."""

    def test_at_floor_is_when_the_cap_gives_every_token_its_minimum(self):
        gen = torch.Generator().manual_seed(3)
        t, n = 10, 4
        for min_choice in (0, 1):
            for _ in range(200):
                budget = torch.rand(3, dtype=torch.float64, generator=gen) * 0.4
                desired = torch.randint(min_choice, n + 1, (3, t), generator=gen)
                desired[:, 0] = n  # some token always asks for more than the minimum
                counts = cap_counts(desired, budget, n, min_choice)
                floor = bool(at_floor(budget, n, min_choice, t))
                self.assertEqual(floor, bool((counts == min_choice).all()), (budget.tolist(), min_choice))

    def test_acm_at_the_floor_gives_what_the_gate_and_cap_give(self):
        torch.manual_seed(5)
        for kind in ("q", "ffn"):
            acm = ACM(dim=12, n=4, width=3, kind=kind)
            z = torch.randn(3, 9, 12)
            budget = torch.tensor([0.3, 0.1, 0.05], dtype=torch.float64)
            cap = torch.tensor([0.25, 0.2, 0.25] if kind == "q" else [0.02, 0.0, 0.01], dtype=torch.float64)
            self.assertTrue(bool(at_floor(cap, acm.n, acm.min_choice, 9)))
            with torch.no_grad():
                y, counts = acm(z, budget, cap)
                logits = acm.gate_logits(z, budget)
                k = cap_counts(logits.argmax(-1) + acm.min_choice, cap, acm.n, acm.min_choice,
                               priority=acm.cap_priority(logits))
                expected = grouped_learners(z.reshape(-1, 12), k.reshape(-1), acm.w1, acm.b1, acm.w2, acm.n, acm.width, acm.gelu)
            self.assertTrue(bool((counts == acm.min_choice).all()))
            torch.testing.assert_close(counts, k, rtol=0, atol=0)
            torch.testing.assert_close(y.reshape(-1, 12), expected, rtol=0, atol=0)

    def test_shared_counts_take_the_floor_only_when_all_three_caps_are_at_it(self):
        torch.manual_seed(6)
        acms = [ACM(dim=12, n=4, width=3, kind=kind) for kind in ("q", "k", "v")]
        shared = SharedInputCounts(acms)
        z = torch.randn(2, 9, 12)
        budget = torch.tensor([0.3, 0.3], dtype=torch.float64)
        for caps, floor in ((torch.full((2, 3), 0.25), True), (torch.tensor([[0.25, 0.25, 0.25], [0.25, 0.9, 0.25]]), False)):
            caps = caps.to(torch.float64)
            with torch.no_grad():
                together = shared.run(z, budget, caps)
                alone = [a(z, budget, caps[:, i]) for i, a in enumerate(acms)]
            self.assertEqual(all(bool((k == 1).all()) for _, k in together), floor)
            for (y, k), (y_alone, k_alone) in zip(together, alone):
                torch.testing.assert_close(k, k_alone, rtol=0, atol=0)
                torch.testing.assert_close(y, y_alone, rtol=0, atol=0)


class FloorPathExportTest(unittest.TestCase):
    def test_floor_path_exports_one_if_per_decision_and_none_without(self):
        cfg = CONFIGS["tiny"]
        model = ACMViT(cfg).eval()
        args = (torch.randn(2, cfg.channels, cfg.image_size, cfg.image_size), torch.tensor([1.0, 0.4], dtype=torch.float64))
        plain = exported(model, *args)
        set_floor_path(model, True)
        with_path = exported(model, *args)
        self.assertEqual(ops(plain.graph)["Select"], 0)
        # One decision per layer for q, k and v together, one for o, one for the FFN.
        self.assertEqual(ops(with_path.graph)["Select"], 3 * cfg.num_layers)
        self.assertEqual(lower_selects(with_path), 3 * cfg.num_layers)
        onnx.checker.check_model(with_path)
        self.assertEqual(ops(with_path.graph)["If"], 3 * cfg.num_layers)
        # The gates run only where the floor is not reached: inside the Ifs' else branches (the
        # budget's cast, which every gate reads, stays outside).
        self.assertFalse(any("/gate" in n.name and n.op_type == "MatMul" for n in with_path.graph.node))
        self.assertTrue(any("/gate" in n.name and n.op_type == "MatMul" for n in plain.graph.node))


if __name__ == "__main__":
    unittest.main()
