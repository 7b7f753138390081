"""Recipe pieces on hand-computed inputs and tiny models: labels, losses, and each phase learning."""
import os
import shutil
import tempfile
import unittest

import torch

from models.toolchain import phases
from models.toolchain.acm import ACM, from_dense
from models.toolchain.checkpoint import load_state, save_state
from models.toolchain.convert import parse_phase3_name, phase3_name, run_phase
from models.toolchain.export import budget_floor
from models.toolchain.metrics import used_fraction
from models.toolchain.vit import CONFIGS, build_vit

torch.set_num_threads(2)


class LabelTest(unittest.TestCase):
    def test_error_ratio_labels(self):
        errors = torch.tensor([
            [10.0, 5.0, 2.0, 1.9, 1.8],   # e1/e2 = 2.5, e2/e3 = 1.05 < 1.2 -> n = 3
            [10.0, 5.0, 4.5, 1.0, 0.5],   # e1/e2 = 1.11 < 1.2 -> n = 2
            [10.0, 8.0, 4.0, 2.0, 1.0],   # every ratio is 2 -> none: N = 4
            [10.0, 9.0, 6.0, 3.0, 2.6],   # 1.5, 2.0, then e3/e4 = 1.15 -> n = 4
        ])
        self.assertEqual(phases.gate_labels(errors, 4).tolist(), [3, 2, 4, 4])


class LossTest(unittest.TestCase):
    def test_budget_loss(self):
        self.assertAlmostEqual(phases.budget_loss(torch.tensor([0.2, 0.4]), 0.5).item(), 0.2, places=6)

    def test_diversity_loss(self):
        # pairs: |0.2-0.6| = 0.4 twice, diagonal zeros: mean over the 2x2 matrix = 0.2
        self.assertAlmostEqual(phases.diversity_loss(torch.tensor([0.2, 0.6])).item(), -0.2, places=6)

    def test_distillation_loss(self):
        # Teacher p = (0.5, 0.5), student q = (0.8, 0.2): KL = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2).
        student = torch.tensor([[0.8, 0.2]]).log()
        teacher = torch.tensor([[0.5, 0.5]]).log() + 3.0  # logits: a shift changes nothing
        expected = 0.5 * torch.log(torch.tensor(0.5 / 0.8)) + 0.5 * torch.log(torch.tensor(0.5 / 0.2))
        self.assertAlmostEqual(phases.distillation_loss(student, teacher).item(), expected.item(), places=5)
        self.assertAlmostEqual(phases.distillation_loss(teacher, teacher).item(), 0.0, places=6)

    def test_entropy_loss(self):
        acm = ACM(dim=4, n=4, width=2, kind="ffn")
        uniform = torch.eye(5).unsqueeze(0)           # one sample, five tokens, one of each choice
        peaked = torch.zeros(1, 5, 5); peaked[..., 2] = 1  # every token chose k = 2
        self.assertAlmostEqual(phases.entropy_loss([(acm, uniform)]).item(), -1.0, places=5)
        self.assertAlmostEqual(phases.entropy_loss([(acm, peaked)]).item(), 0.0, places=5)


class PhaseLearningTest(unittest.TestCase):
    """Each phase lowers its own loss on a small fixed batch."""

    def setUp(self):
        torch.manual_seed(0)
        self.cfg = CONFIGS["tiny"]
        self.vit = build_vit(self.cfg).eval()
        torch.nn.init.normal_(self.vit.heads.head.weight, std=0.5)
        self.model = from_dense(self.vit, self.cfg)
        self.x = torch.randn(8, 1, 28, 28)
        self.y = torch.randint(0, 10, (8,))

    def _train(self, params, loss_fn, steps=30, lr=3e-3):
        opt = torch.optim.Adam(params, lr=lr)
        first = None
        for _ in range(steps):
            loss = loss_fn()
            first = loss.item() if first is None else first
            opt.zero_grad(); loss.backward(); opt.step()
        return first, loss_fn().item()

    def test_phase1_distillation(self):
        with torch.no_grad():  # start away from the dense weights so there is something to learn
            for _, _, a in self.model.acms():
                a.w1.add_(0.3 * torch.randn_like(a.w1))
        pairs = phases.acm_pairs(self.model, phases.teacher_pairs(self.vit, self.x))
        params = [p for _, _, a in self.model.acms() for p in (a.w1, a.b1, a.w2)]
        first, last = self._train(params, lambda: sum(phases.distil_loss(a, z, o) for a, z, o in pairs))
        self.assertLess(last, 0.7 * first)

    def test_phase2_gates(self):
        pairs = phases.acm_pairs(self.model, phases.teacher_pairs(self.vit, self.x))
        budget = torch.rand(8)
        params = [p for _, _, a in self.model.acms() for p in a.gate.parameters()]
        first, last = self._train(params, lambda: sum(phases.gate_loss(a, z, o, budget)[0] for a, z, o in pairs),
                                  steps=60)
        self.assertLess(last, 0.7 * first)

    def test_phase3_end_to_end(self):
        torch.manual_seed(1)
        self.model.train()
        first, last = self._train(list(self.model.parameters()),
                                  lambda: phases.phase3_loss(self.model, self.x, self.y, 0.5)[0], steps=40, lr=1e-3)
        self.assertLess(last, first)


class RelaxedForwardTest(unittest.TestCase):
    """Phase 3's forward runs exactly the learners it reports, and under the cap, never more than it allows."""

    def setUp(self):
        torch.manual_seed(2)
        self.cfg = CONFIGS["tiny"]
        vit = build_vit(self.cfg).eval()
        torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
        self.model = from_dense(vit, self.cfg)
        self.x = torch.randn(6, 1, 28, 28)

    def _asked(self, out):
        return [oh.argmax(-1) + acm.min_choice for acm, oh in out.onehots]

    def test_cap_bounds_every_request_and_never_raises_a_choice(self):
        budget = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
        out = phases.relaxed_forward(self.model, self.x, budget, capped=True)
        counts = torch.stack(out.counts, 1)
        used = used_fraction(self.model, counts)
        floor = budget_floor(self.model)
        self.assertTrue(bool((used <= torch.clamp(budget, min=floor) + 1e-9).all()), (used, budget))
        for asked, ran in zip(self._asked(out), out.counts):
            self.assertTrue(bool((ran <= asked).all()))
        self.assertTrue(torch.allclose(out.executed.double(), used, atol=1e-6))

    def test_uncapped_runs_what_the_gates_ask(self):
        out = phases.relaxed_forward(self.model, self.x, torch.full((6,), 0.1, dtype=torch.float64), capped=False)
        for asked, ran in zip(self._asked(out), out.counts):
            self.assertTrue(torch.equal(asked, ran))
        self.assertTrue(torch.allclose(out.fractions.detach(), out.executed))

    def test_weighted_caps_bound_each_acm_by_its_own_share(self):
        acms = [a for _, _, a in self.model.acms()]
        self.model.cap_weights.copy_(torch.linspace(0.1, 1.0, len(acms), dtype=torch.float64))
        budget = torch.tensor([0.1, 0.2, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
        out = phases.relaxed_forward(self.model, self.x, budget, capped=True)
        caps = self.model.cap_budgets(budget)
        tokens = self.cfg.tokens
        for a, (acm, ran) in enumerate(zip(acms, out.counts)):
            limit = torch.clamp(torch.floor(caps[:, a] * acm.n * tokens), min=acm.min_choice * tokens)
            self.assertTrue(bool((ran.sum(-1) <= limit).all()), (a, ran.sum(-1), limit))
        # The first layer's FFN (weight 0.5) is held tighter than the last one's (weight 1.0).
        self.assertTrue(bool((caps[1:4, 4] < caps[1:4, 9]).all()), caps)

    def test_asked_fractions_are_the_uncapped_choices(self):
        from models.toolchain.reallocate import asked_fractions
        budgets = [0.3, 1.0]
        asked = asked_fractions(self.model, self.x, budgets)
        self.assertTrue(self.model.capped, "the cap is put back")
        self.model.capped = False
        with torch.no_grad():
            counts = torch.stack([self.model(self.x, torch.full((6,), b, dtype=torch.float64))[1] for b in budgets])
        n = torch.tensor([a.n for _, _, a in self.model.acms()], dtype=torch.float64)
        expected = counts.double().mean((0, 1, 3)) / n  # over budgets, requests and tokens
        self.assertTrue(torch.allclose(asked, expected))

    def test_teacher_is_the_dense_model_or_the_served_model_at_full_budget(self):
        from models.toolchain.reallocate import teacher_logits
        vit = build_vit(self.cfg).eval()
        self.model.capped = True
        self.model.cap_weights.copy_(torch.linspace(0.2, 1.0, len(self.model.acms()), dtype=torch.float64))
        with torch.no_grad():
            served, _ = self.model(self.x, torch.ones(6, dtype=torch.float64))
            low, _ = self.model(self.x, torch.full((6,), 0.25, dtype=torch.float64))
            dense = vit(self.x)
        own = teacher_logits(self.model, vit, self.x, "self")
        self.assertTrue(torch.equal(own, served))
        self.assertFalse(torch.equal(own, low), "the full budget's answers, not another budget's")
        self.assertFalse(own.requires_grad, "the teacher carries no gradient")
        self.assertTrue(torch.equal(teacher_logits(self.model, vit, self.x, "dense"), dense))
        self.assertIsNone(teacher_logits(self.model, vit, self.x, None))

    def test_task_loss_reaches_the_gates(self):
        out = phases.relaxed_forward(self.model, self.x, torch.full((6,), 0.5, dtype=torch.float64), capped=True)
        out.logits.sum().backward()
        grads = [a.gate[0].weight.grad for _, _, a in self.model.acms()]
        self.assertTrue(all(g is not None and g.abs().sum() > 0 for g in grads))

    def test_budget_weight_scales_only_the_budget_term(self):
        y = torch.randint(0, 10, (6,), generator=torch.Generator().manual_seed(0))
        totals, asked = [], []
        for w in (0.1, 0.5):
            torch.manual_seed(5)  # the same Gumbel draws, so the same choices, for both weights
            total, info = phases.phase3_loss(self.model, self.x, y, 0.25, capped=True, budget_weight=w)
            totals.append(total.item())
            asked.append(info["asked"])
        self.assertEqual(asked[0], asked[1])
        self.assertAlmostEqual(totals[1] - totals[0], 0.4 * abs(asked[0] - 0.25), places=5)


class Phase3NameTest(unittest.TestCase):
    def test_names_round_trip_with_the_budget_weight(self):
        self.assertEqual(phase3_name(None), "phase3")
        self.assertEqual(phase3_name(0.25), "phase3-t0.25")
        self.assertEqual(phase3_name(0.25, 0.5), "phase3-t0.25-bw0.5")
        self.assertEqual(parse_phase3_name("run/phase3-t0.25.ckpt"), (0.25, 0.1))
        self.assertEqual(parse_phase3_name("run/phase3-t0.75-bw0.5.ckpt"), (0.75, 0.5))
        for other in ("run/phase3-tuned.ckpt", "run/phase3.ckpt", "run/phase3-t0.25-bw.ckpt", "phase3-t0.5.ckpt.tmp"):
            self.assertIsNone(parse_phase3_name(other), other)


class RunPhaseTest(unittest.TestCase):
    """convert.run_phase: an interrupted phase resumes at its step; a finished one is skipped,
    also when its checkpoint was kept without the optimizer state."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.x, self.y = torch.randn(16, 3), torch.randn(16, 1)
        self.calls = []

    def tearDown(self):
        shutil.rmtree(self.dir)

    def step(self, i):
        self.calls.append(i)
        return torch.nn.functional.mse_loss(self.model(self.x), self.y), {}

    def test_resume_and_finished_phase(self):
        path = os.path.join(self.dir, "p.ckpt")
        self.assertTrue(run_phase("p", self.dir, 4, self.model, list(self.model.parameters()), 0.1, self.step, 0.0))
        self.assertEqual(self.calls, [0, 1, 2, 3])
        state = load_state(path)
        state["step"] = 2  # as if stopped after two steps
        save_state(path, state)
        self.calls.clear()
        self.assertTrue(run_phase("p", self.dir, 4, self.model, list(self.model.parameters()), 0.1, self.step, 0.0))
        self.assertEqual(self.calls, [2, 3], "resumed at its step")
        slim = load_state(path)
        slim.pop("opt")
        save_state(path, slim)
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        with torch.no_grad():
            self.model.weight.zero_()
        self.calls.clear()
        self.assertFalse(run_phase("p", self.dir, 4, self.model, list(self.model.parameters()), 0.1, self.step, 0.0))
        self.assertEqual(self.calls, [], "a finished phase does not run again")
        self.assertTrue(torch.equal(self.model.weight, weights["weight"]), "its weights are loaded")


if __name__ == "__main__":
    unittest.main()
