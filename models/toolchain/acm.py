"""Adaptive Computation Modules (DESIGN §2) and the ACM form of a torchvision VisionTransformer."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from kernels.branch import branch
from kernels.grouped import at_floor, cap_counts, first_learners, grouped_learners
from .vit import ViTConfig, embedding_macs, patch_embedding

PROJECTIONS = ("q", "k", "v", "o")
KINDS = PROJECTIONS + ("ffn",)


def budget_linear(z: torch.Tensor, budget: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dim: int) -> torch.Tensor:
    """A Linear over [z, budget] (weight [out, dim + 1]) with the budget column applied once per
    request instead of concatenated to every token, which in an exported graph would copy z and
    expand the budget. z: [B, T, dim]; budget: [B]. `dim` is a Python int, so the export slices
    with constants rather than with the weight's traced shape."""
    b = budget.to(z.dtype).view(-1, 1, 1)
    return z @ weight[:, :dim].t() + (b * weight[:, dim] + bias)


class BudgetLinear(nn.Linear):
    """The gate's first layer: a Linear over [z, budget] whose last input column is the request's
    budget (budget_linear)."""

    def forward(self, z: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """z: [B, T, in_features - 1]; budget: [B]."""
        return budget_linear(z, budget, self.weight, self.bias, self.in_features - 1)


# The budgets phase 3 draws (convert, reallocate): the knots of a budget-conditioned norm.
BUDGET_KNOTS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


def knot_mix(budget: torch.Tensor, knots: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation weights [B, K] of each budget [B] between the knots [K]
    (ascending): the two knots around a budget share its weight, a budget on a knot gives that knot
    all of it, and budgets outside the knots take the nearest one. Each row sums to 1."""
    b = budget.to(knots.dtype).clamp(float(knots[0]), float(knots[-1])).unsqueeze(-1)
    gap = knots[1:] - knots[:-1]
    # Rising from the knot before (the first knot has none), falling to the knot after (the last has none).
    rise = torch.cat([knots.new_ones(1, 1).expand(b.shape[0], 1), (b - knots[:-1]) / gap], -1)
    fall = torch.cat([(knots[1:] - b) / gap, knots.new_ones(1, 1).expand(b.shape[0], 1)], -1)
    return torch.minimum(rise, fall).clamp(0.0, 1.0)


class BudgetLayerNorm(nn.LayerNorm):
    """A LayerNorm whose scale and shift may depend on the request's budget.

    Fewer learners change the features every later norm sees; one affine for every budget must
    serve them all. Once conditioned (condition()), the norm adds to its scale and shift a
    correction per budget knot, interpolated between the knots (knot_mix), as slimmable networks
    keep a private normalisation per width (Yu et al., 2018). The corrections start at zero, so
    conditioning a trained model changes nothing until they are trained. Unconditioned, this is
    nn.LayerNorm.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__(dim, eps=eps)
        self.register_parameter("budget_scale", None)
        self.register_parameter("budget_shift", None)

    def condition(self, knots: int) -> None:
        self.budget_scale = nn.Parameter(self.weight.new_zeros(knots, self.weight.shape[0]))
        self.budget_shift = nn.Parameter(self.weight.new_zeros(knots, self.weight.shape[0]))

    def forward(self, x: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, T, dim]; mix: the budgets' knot weights [B, K] (knot_mix), or None for the shared
        affine alone."""
        if self.budget_scale is None or mix is None:
            return super().forward(x)
        mix = mix.to(x.dtype)
        scale = (self.weight + mix @ self.budget_scale).unsqueeze(1)
        shift = (self.bias + mix @ self.budget_shift).unsqueeze(1)
        # Unit scale and zero shift spelt out: an exported LayerNormalization must name its scale.
        unit = torch.ones_like(self.weight)
        return F.layer_norm(x, self.normalized_shape, unit, torch.zeros_like(self.bias), self.eps) * scale + shift


class ACM(nn.Module):
    """N learners whose outputs add up, and a gate choosing per token how many run.

    The learners are stored side by side as one FFN of width n*width: learner i owns hidden units
    [i*width, (i+1)*width). h(z, k) is then the FFN restricted to its first k*width units.
    """

    def __init__(self, dim: int, n: int, width: int, kind: str, gate_hidden: int = 16):
        super().__init__()
        assert kind in KINDS, kind
        self.dim, self.n, self.width, self.kind = dim, n, width, kind
        self.gelu = kind == "ffn"
        # FFN ACMs sit under a residual and may skip all learners; projections must produce something.
        self.min_choice = 0 if kind == "ffn" else 1
        self.w1 = nn.Parameter(torch.randn(dim, n * width) / math.sqrt(dim))
        self.b1 = nn.Parameter(torch.zeros(n * width))
        self.w2 = nn.Parameter(torch.randn(n * width, dim) * 0.02)
        # The token count T when the model fixes it (both bundled families do: image patches,
        # speech windows): the cap then exports T as a constant (cap_counts). None reads it off
        # the input, as a model of varying length must.
        self.tokens: int | None = None
        # Whether an export also holds the path taken when every request is at the floor (floor_or).
        self.floor_path = False
        # The gate sees the token and the request's budget, so one model serves every budget.
        self.gate = nn.Sequential(
            BudgetLinear(dim + 1, gate_hidden), nn.GELU(),
            nn.Linear(gate_hidden, gate_hidden), nn.GELU(),
            nn.Linear(gate_hidden, self.choices),
        )

    @property
    def choices(self) -> int:
        return self.n - self.min_choice + 1

    @property
    def learner_macs(self) -> int:
        return 2 * self.dim * self.width

    @property
    def gate_macs(self) -> int:
        g = self.gate
        return sum(m.in_features * m.out_features for m in g if isinstance(m, nn.Linear))

    def prefix_outputs(self, z: torch.Tensor) -> torch.Tensor:
        """h(z, k) for every k = 0..n: [..., n+1, dim]. Runs every learner (training only)."""
        h = z @ self.w1 + self.b1
        if self.gelu:
            h = F.gelu(h)
        h = h.view(*z.shape[:-1], self.n, self.width)
        out = torch.einsum("...nw,nwd->...nd", h, self.w2.view(self.n, self.width, self.dim))
        cum = out.cumsum(-2)
        return torch.cat([torch.zeros_like(cum[..., :1, :]), cum], -2)

    def gate_logits(self, z: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """z: [B, T, dim]; budget: [B]. Logits over k = min_choice..n: [B, T, choices]."""
        h = self.gate[0](z, budget)
        for layer in list(self.gate)[1:]:
            h = layer(h)
        return h

    def choice_values(self, like: torch.Tensor) -> torch.Tensor:
        """The learner counts min_choice..n the gate chooses among, as `like`'s dtype and device."""
        return torch.arange(self.min_choice, self.n + 1, dtype=like.dtype, device=like.device)

    def cap_priority(self, logits: torch.Tensor, token_bonus: torch.Tensor | None = None) -> torch.Tensor:
        """Which tokens the cap serves first: the learner count the gate expects, plus token_bonus."""
        expected = (logits.softmax(-1) * self.choice_values(logits)).sum(-1)
        return expected if token_bonus is None else expected + token_bonus

    def forward(self, z: torch.Tensor, budget: torch.Tensor, cap_budget: torch.Tensor | None,
                token_bonus: torch.Tensor | None = None, counts: torch.Tensor | None = None,
                minimum: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference: argmax gate, per-request cap, grouped kernel. Returns (output [B, T, dim],
        counts [B, T]).

        The gate reads the request's budget; the cap applies cap_budget, the share of it this ACM
        may spend once other ACMs' minimum learners are paid for (ACMViT.cap_budgets). Leftover
        learners go to the tokens whose gate expects the most, plus token_bonus ([T]) if given.
        When no request's cap allows more than the minimum (at_floor), every token runs
        min_choice learners without gate, cap or grouping (floor_or).

        With counts given (decided elsewhere, as SharedInputCounts does for q, k and v), or with
        minimum (every token at min_choice), only the learners run, and the output comes back as
        rows [B*T, dim] for the caller to shape: inside an If, onnxruntime copies a reshaped
        branch output, where outside one a reshape moves nothing.
        """
        x = z.reshape(-1, self.dim)

        def floor() -> tuple[torch.Tensor, torch.Tensor]:
            return self.at_minimum(x), self.minimum_counts(z)

        if minimum:
            return floor()
        if counts is not None:
            return self.grouped(x, counts), counts

        def decided() -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.gate_logits(z, budget)
            desired = logits.argmax(-1) + self.min_choice
            k = cap_counts(desired, cap_budget, self.n, self.min_choice,
                           priority=self.cap_priority(logits, token_bonus), tokens=self.tokens)
            return self.grouped(x, k), k

        y, counts = self.floor_or(at_floor(cap_budget, self.n, self.min_choice, self.token_count(z)), floor, decided)
        return self.shaped(z, y), counts

    def floor_or(self, cond: torch.Tensor, minimum, decided) -> tuple[torch.Tensor, ...]:
        """minimum() if cond else decided(). Eager PyTorch runs one of them (both give the same
        counts and outputs at the floor). An export holds both under an If only with floor_path:
        the If saves the gate, cap and grouping at the floor, and onnxruntime spends tens of
        microseconds per If and run, which outweighs that saving on small models (README,
        "Floor path")."""
        if torch.jit.is_tracing() and not self.floor_path:
            return tuple(decided())
        return branch(cond, minimum, decided)

    def token_count(self, z: torch.Tensor) -> int:
        """T: the fixed token count (ACM.tokens), or z's [B, T, dim] own."""
        return z.shape[1] if self.tokens is None else self.tokens

    def grouped(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each row of x [B*T, dim] through its count's learners (counts [B, T]): [B*T, dim]."""
        return grouped_learners(x, counts.reshape(-1), self.w1, self.b1, self.w2, self.n, self.width, self.gelu)

    def at_minimum(self, x: torch.Tensor) -> torch.Tensor:
        """Every row of x [B*T, dim] through min_choice learners, without gate, cap or grouping."""
        return first_learners(x, self.min_choice, self.w1, self.b1, self.w2, self.width, self.gelu)

    def minimum_counts(self, z: torch.Tensor) -> torch.Tensor:
        """min_choice for every token of z [B, T, dim]: [B, T] int64."""
        return torch.full_like(z[:, :, 0], self.min_choice, dtype=torch.int64)

    def shaped(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Rows [B*T, dim] back in z's shape [B, T, dim]. With a fixed token count the shape is a
        constant, not read off z (ACM.tokens)."""
        return y.view_as(z) if self.tokens is None else y.view(-1, self.tokens, self.dim)

    def gate_shape(self) -> list[tuple[int, int]]:
        """(in, out) of each Linear of the gate."""
        return [(m.in_features, m.out_features) for m in self.gate if isinstance(m, nn.Linear)]


def set_floor_path(model: nn.Module, on: bool) -> None:
    """Whether `model`'s exports hold the floor path of every ACM (ACM.floor_or)."""
    for _, _, acm in model.acms():
        acm.floor_path = on


def weighted_cap_budgets(acms: list[ACM], budget: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per request and ACM [B, A], the budget each ACM's cap applies, in proportion to `weights`.

    ACM a may spend c_a = clamp(s * weights[a], min_choice / n, 1) of its learners, with the one
    scale s per request for which the caps together cost exactly the request's budget:
    sum_a full_a * c_a = budget * sum_a full_a (full_a: the ACM's cost with every learner, per
    token). Below the model's floor every ACM runs its minimum. With equal weights (the bundled
    speech model's) every ACM's cap is the budget itself, except that an ACM whose minimum costs more runs
    that minimum and the others share what is left. The cost is piecewise linear in s with
    breakpoints where some c_a meets a bound, so s is found exactly: the segment is the last
    breakpoint whose cost fits, then a linear step inside it. Caps are rounded to 1e-9, so a budget such as 0.5 is not floored one
    learner short by rounding error.
    """
    budget = budget.to(torch.float64)
    weights = weights.to(torch.float64)
    # Constants of the model's structure; new_tensor records them as such in a trace without the
    # tracer's warning about torch.tensor.
    full = budget.new_tensor([float(a.n * a.learner_macs) for a in acms])
    low = budget.new_tensor([a.min_choice / a.n for a in acms])
    points = torch.cat([low / weights, 1.0 / weights]).sort().values  # [2A]
    cost = (full * torch.maximum(torch.clamp(points[:, None] * weights, max=1.0), low)).sum(-1)  # [2A], non-decreasing
    want = budget * full.sum()  # [B]
    j = ((cost[None, :] <= want[:, None]).sum(-1) - 1).clamp(0, points.shape[0] - 2)
    s0, s1, c0, c1 = points[j], points[j + 1], cost[j], cost[j + 1]
    step = (want - c0).clamp_min(0.0) / (c1 - c0).clamp_min(1e-12) * (s1 - s0)
    s = torch.minimum(s0 + step, s1)
    caps = torch.maximum(torch.clamp(s[:, None] * weights, max=1.0), low)
    return torch.round(caps * 1e9) / 1e9


def pass_on_unspent(acms: list[ACM], caps: torch.Tensor, done: slice, counts: list[torch.Tensor]) -> torch.Tensor:
    """The caps [B, A] after the ACMs in `done` ran with `counts` (one [B, T] per ACM of `done`):
    the learner work those ACMs' caps allowed and they did not spend, shared among the ACMs after
    them in proportion to what their caps allow above their minimum.

    A cap is an upper bound: an ACM whose gates ask for less than it allows leaves part of the
    request's budget unspent, and flooring each cap to whole learners leaves a little more (the
    bundled image model spent 0.242 of its learners at budget 0.25 without this; README, "The
    bundled model"). Passing it on lets later ACMs run more learners, while what the request
    spends in all stays within what the caps allowed together, its budget: every ACM spends at
    most its cap, and what is passed on was allowed and not spent. An ACM held at its minimum gets
    nothing: with the floor path exported it runs without gate, cap or grouping (ACM.floor_or),
    which a sliver of extra learners would cost more than it gives (measured on the ViT-B/16
    geometry at budget 0.25: 15% slower for 4% more learner work). An ACM is never raised above
    all its learners. Each request's row depends on that request only (batch invariance). The
    increase is rounded down to 1e-9, so rounding never lets a cap grow past what was passed on.
    """
    if done.stop >= len(acms):
        return caps
    later = slice(done.stop, None)
    tokens = acms[0].tokens if acms[0].tokens is not None else counts[0].shape[1]  # a constant when fixed (ACM.tokens)
    # In multiply-adds over the request's tokens: each ACM with every learner, and one learner.
    full = caps.new_tensor([float(a.n * a.learner_macs) for a in acms]) * tokens
    learner = caps.new_tensor([float(a.learner_macs) for a in acms[done]])
    spent = torch.stack(counts, 1).sum(-1).to(caps.dtype) @ learner  # [B]
    unspent = (caps[:, done] @ full[done] - spent).clamp_min(0.0)
    # Each later ACM gets unspent * (its allowance above its minimum / theirs together): an ACM at
    # its minimum keeps it, and with it the floor path that skips its gate, cap and grouping.
    low = caps.new_tensor([a.min_choice / a.n for a in acms[later]])
    above = (caps[:, later] - low).clamp_min(0.0)
    rise = above * (unspent / (above @ full[later]).clamp_min(1e-12)).unsqueeze(1)
    raised = torch.clamp(caps[:, later] + torch.floor(rise * 1e9) / 1e9, max=1.0)
    return torch.cat([caps[:, :done.stop], raised], 1)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, d = q.shape
    split = lambda x: x.view(b, t, heads, d // heads).transpose(1, 2)  # noqa: E731
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d // heads)
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, t, d)


def projection_width(dim: int, n: int) -> int:
    return round((dim * dim + dim) / (2 * dim + 1) / n)


class JoinedGate(nn.Module):
    """The gates of ACMs that read the same input, run as one wider gate: first layers side by
    side, later layers block-diagonal, so each ACM's logits are its own gate's (the zero blocks add
    exact zeros). Holds no parameters of its own: it reads the ACMs' gates, so checkpoints are
    unchanged. forward(z [B, T, dim], budget [B]) -> logits [B, T, A, choices]."""

    def __init__(self, acms: list[ACM]):
        super().__init__()
        first = acms[0]
        same = lambda a: (a.dim, a.n, a.min_choice, a.gate_shape())  # noqa: E731
        if any(same(a) != same(first) for a in acms):
            raise ValueError("a joined gate needs ACMs of one input width, learner count, minimum and gate shape; "
                             f"got {[same(a) for a in acms]}")
        self._acms = list(acms)  # a plain list: not registered, so no parameter appears twice

    def forward(self, z: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        first = self._acms[0]
        linears = [[m for m in a.gate if isinstance(m, nn.Linear)] for a in self._acms]
        h = budget_linear(z, budget, torch.cat([ls[0].weight for ls in linears], 0), torch.cat([ls[0].bias for ls in linears]),
                          first.dim)
        for layer in range(1, len(linears[0])):
            h = F.gelu(h)
            h = h @ _block_diagonal([ls[layer].weight for ls in linears]).t() + torch.cat([ls[layer].bias for ls in linears])
        return h.view(*h.shape[:-1], len(self._acms), first.choices)


class SharedInputCounts(nn.Module):
    """Inference: the learner counts [B, T] of ACMs that read the same input (q, k, v), as
    ACM.forward computes them one by one, with one gate (JoinedGate) and one cap for all of them:
    the caps run on the ACMs' requests stacked along the batch, and cap_counts treats every row on
    its own. In an exported graph that is one gate and one cap instead of one per ACM.
    forward(z, budget, cap_budgets [B, A], token_bonus [T] or None) -> A tensors [B, T]."""

    def __init__(self, acms: list[ACM]):
        super().__init__()
        self.gate = JoinedGate(acms)
        self._acms = list(acms)

    def forward(self, z: torch.Tensor, budget: torch.Tensor, cap_budgets: torch.Tensor,
                token_bonus: torch.Tensor | None = None) -> list[torch.Tensor]:
        first, count = self._acms[0], len(self._acms)
        logits = self.gate(z, budget)  # [B, T, A, choices]
        desired = logits.argmax(-1) + first.min_choice
        priority = first.cap_priority(logits, None if token_bonus is None else token_bonus.view(-1, 1))
        # A fixed token count keeps these shapes constant in an exported graph (ACM.tokens).
        tokens = first.token_count(z)
        stacked = lambda t: t.permute(2, 0, 1).reshape(-1, tokens)  # noqa: E731
        k = cap_counts(stacked(desired), cap_budgets.t().reshape(-1), first.n, first.min_choice,
                       priority=stacked(priority), tokens=first.tokens)
        return list(k.view(count, -1, tokens).unbind(0))

    def run(self, z: torch.Tensor, budget: torch.Tensor, cap_budgets: torch.Tensor,
            token_bonus: torch.Tensor | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each ACM on z with the counts decided here: A pairs (output, counts [B, T]), as ACM.forward."""
        first = self._acms[0]

        def minimum() -> list[torch.Tensor]:
            return [t for acm in self._acms for t in acm(z, budget, None, minimum=True)]

        def decided() -> list[torch.Tensor]:
            return [t for acm, k in zip(self._acms, self(z, budget, cap_budgets, token_bonus)) for t in acm(z, budget, None, counts=k)]

        # No request's cap above the minimum: q, k and v run their minimum without gate or cap.
        out = first.floor_or(at_floor(cap_budgets, first.n, first.min_choice, first.token_count(z)), minimum, decided)
        return [(acm.shaped(z, out[2 * i]), out[2 * i + 1]) for i, acm in enumerate(self._acms)]


def _block_diagonal(blocks: list[torch.Tensor]) -> torch.Tensor:
    """The matrices side by side on the diagonal, zeros elsewhere."""
    cols = sum(m.shape[1] for m in blocks)
    rows, left = [], 0
    for m in blocks:
        rows.append(torch.cat([m.new_zeros(m.shape[0], left), m, m.new_zeros(m.shape[0], cols - left - m.shape[1])], 1))
        left += m.shape[1]
    return torch.cat(rows, 0)


class ACMEncoderLayer(nn.Module):
    def __init__(self, cfg: ViTConfig, n: int):
        super().__init__()
        d = cfg.hidden_dim
        self.heads = cfg.num_heads
        self.ln_1 = BudgetLayerNorm(d)
        self.ln_2 = BudgetLayerNorm(d)
        pw = projection_width(d, n)
        self.q, self.k, self.v, self.o = (ACM(d, n, pw, kind) for kind in PROJECTIONS)
        self.mlp = ACM(d, n, cfg.mlp_dim // n, "ffn")
        for acm in self.acms():
            acm.tokens = cfg.tokens
        # q, k and v read the same input: one gate and one cap decide their counts (no parameters).
        self.qkv = SharedInputCounts([self.q, self.k, self.v])

    def acms(self) -> list[ACM]:
        return [self.q, self.k, self.v, self.o, self.mlp]

    def forward(self, x: torch.Tensor, budget: torch.Tensor, cap: torch.Tensor, bonus: torch.Tensor,
                counts: list[torch.Tensor], mix: torch.Tensor | None = None) -> torch.Tensor:
        """cap: [B, 5], the cap budgets of q, k, v, o and the FFN, in that order; mix: the budgets'
        knot weights for conditioned norms (ACMViT.norm_mix)."""
        h = self.ln_1(x, mix)
        (q, kq), (k, kk), (v, kv) = self.qkv.run(h, budget, cap[:, :3], bonus)
        o, ko = self.o(attention(q, k, v, self.heads), budget, cap[:, 3], bonus)
        x = x + o
        m, km = self.mlp(self.ln_2(x, mix), budget, cap[:, 4], bonus)
        counts.extend([kq, kk, kv, ko, km])
        return x + m


class ACMViT(nn.Module):
    """A VisionTransformer whose FFNs and q/k/v/o projections are ACMs.

    forward(pixels [B, C, H, W], budget [B] float64) -> (logits [B, classes], counts [B, A, T]).
    """

    def __init__(self, cfg: ViTConfig, n: int = 4):
        super().__init__()
        self.cfg, self.n = cfg, n
        d = cfg.hidden_dim
        self.conv_proj = patch_embedding(cfg)
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embedding = nn.Parameter(torch.zeros(1, cfg.tokens, d))
        self.layers = nn.ModuleList(ACMEncoderLayer(cfg, n) for _ in range(cfg.num_layers))
        self.ln = BudgetLayerNorm(d)
        self.head = nn.Linear(d, cfg.num_classes)
        # Set by condition_norms: the budget knots of the norms' per-budget corrections.
        self.register_buffer("norm_knots", None)
        # The class token carries the prediction: under a tight cap it is served first (measured:
        # at budget 0.1 without this, test accuracy fell from 50% to 24%).
        bonus = torch.zeros(cfg.tokens)
        bonus[0] = float(n + 1)
        self.register_buffer("token_bonus", bonus, persistent=False)
        # How the request cap shares a budget among the ACMs (weighted_cap_budgets): equal weights
        # cap every ACM at the budget itself; models.toolchain.reallocate sets them from the gates.
        self.register_buffer("cap_weights", torch.ones(len(KINDS) * cfg.num_layers, dtype=torch.float64))
        # False evaluates a model trained the published way (one budget target, no request cap):
        # the gates alone decide, and the budget input is only what the gates were trained with.
        self.capped = True
        # Under the cap, what a layer's ACMs were allowed and did not spend goes to the later
        # layers' caps (pass_on_unspent). An inference policy: phase 3 trains without it.
        self.pass_unspent = True
        self.conv_proj.eval()  # see train()

    def train(self, mode: bool = True) -> "ACMViT":
        # The stem's batch-norm statistics stay those of the dense base: fine-tuning batches carry
        # one budget each and would otherwise drift them.
        super().train(mode)
        self.conv_proj.eval()
        return self

    def load_state_dict(self, state: dict, strict: bool = True):
        # Checkpoints from before cap weights existed were trained with equal ones.
        if "cap_weights" not in state:
            state = {**state, "cap_weights": torch.ones_like(self.cap_weights)}
        if "norm_knots" in state and self.norm_knots is None:
            self.condition_norms(state["norm_knots"].tolist())
        return super().load_state_dict(state, strict)

    def norms(self) -> list[BudgetLayerNorm]:
        return [n for layer in self.layers for n in (layer.ln_1, layer.ln_2)] + [self.ln]

    def condition_norms(self, knots=BUDGET_KNOTS) -> list[nn.Parameter]:
        """Give every norm a per-budget correction of its scale and shift at these budget knots
        (BudgetLayerNorm), zero to start. Returns the new parameters."""
        if self.norm_knots is not None:
            raise ValueError("the norms are already conditioned on the budget")
        if list(knots) != sorted(set(knots)):
            raise ValueError(f"budget knots must ascend without repeats, got {list(knots)}")
        self.norm_knots = torch.tensor(list(knots), dtype=torch.float64, device=self.cap_weights.device)
        for norm in self.norms():
            norm.condition(len(knots))
        return self.norm_corrections()

    def norm_corrections(self) -> list[nn.Parameter]:
        """The norms' per-budget scale and shift corrections; none before condition_norms."""
        if self.norm_knots is None:
            return []
        return [p for norm in self.norms() for p in (norm.budget_scale, norm.budget_shift)]

    def norm_mix(self, budget: torch.Tensor) -> torch.Tensor | None:
        """The budgets' knot weights [B, K] for conditioned norms, else None."""
        return None if self.norm_knots is None else knot_mix(budget, self.norm_knots)

    def acms(self) -> list[tuple[str, int, ACM]]:
        names = []
        for i, layer in enumerate(self.layers):
            for kind, acm in zip(KINDS, layer.acms()):
                names.append((f"encoder.layers.{i}.{'mlp' if kind == 'ffn' else 'attn.' + kind}", i, acm))
        return names

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1)
        return x + self.pos_embedding

    def cap_budgets(self, budget: torch.Tensor) -> torch.Tensor:
        """Per request and ACM [B, A], the budget each ACM's cap applies, so the whole request stays
        within budget.

        The budget is shared among the ACMs in proportion to cap_weights (weighted_cap_budgets).
        An ACM whose minimum choice costs more than its share (q/k/v/o run at least one of N
        learners: 1/N of their cost) spends that minimum regardless, and an ACM is never capped
        above all its learners; the others share what is left, so the caps together cost exactly
        the budget. So used <= max(budget, budget_floor) holds for the whole model, not only per ACM.
        """
        return weighted_cap_budgets([a for _, _, a in self.acms()], budget, self.cap_weights)

    def forward(self, pixels: torch.Tensor, budget: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(pixels)
        per_acm = len(KINDS)
        cap = (self.cap_budgets(budget) if self.capped
               else torch.ones(budget.shape[0], per_acm * len(self.layers), dtype=torch.float64, device=budget.device))
        counts: list[torch.Tensor] = []
        mix = self.norm_mix(budget)
        acms = [a for _, _, a in self.acms()]
        for i, layer in enumerate(self.layers):
            done = slice(i * per_acm, (i + 1) * per_acm)
            x = layer(x, budget, cap[:, done], self.token_bonus, counts, mix)
            if self.capped and self.pass_unspent:
                cap = pass_on_unspent(acms, cap, done, counts[done])
        return self.head(self.ln(x, mix)[:, 0]), torch.stack(counts, 1)

    def fixed_macs(self) -> int:
        """Per image: patch embedding, attention matmuls and head (norms and gates not included)."""
        c, t, d = self.cfg, self.cfg.tokens, self.cfg.hidden_dim
        return embedding_macs(c) + c.num_layers * 2 * t * t * d + d * c.num_classes


# --- conversion from a dense torchvision model -------------------------------------------------

def dense_trace(vit: VisionTransformer, pixels: torch.Tensor) -> tuple[torch.Tensor, list[dict]]:
    """Run the dense model step by step, returning logits and every ACM's (input, output) pair.

    torchvision's MultiheadAttention applies its projections inside one fused call, so the inputs
    and outputs of q/k/v/o are computed here from its weights; `logits` equals vit(pixels).
    """
    x = vit._process_input(pixels)
    x = torch.cat([vit.class_token.expand(x.shape[0], -1, -1), x], 1)
    x = x + vit.encoder.pos_embedding
    pairs = []
    for block in vit.encoder.layers:
        attn = block.self_attention
        h = block.ln_1(x)
        wq, wk, wv = attn.in_proj_weight.chunk(3)
        bq, bk, bv = attn.in_proj_bias.chunk(3)
        q, k, v = F.linear(h, wq, bq), F.linear(h, wk, bk), F.linear(h, wv, bv)
        a = attention(q, k, v, attn.num_heads)
        o = attn.out_proj(a)
        x = x + o
        h2 = block.ln_2(x)
        m = block.mlp(h2)
        x = x + m
        pairs.append({"q": (h, q), "k": (h, k), "v": (h, v), "o": (a, o), "ffn": (h2, m)})
    return vit.heads(vit.encoder.ln(x)[:, 0]), pairs


@torch.no_grad()
def _init_ffn(acm: ACM, mlp: nn.Module) -> None:
    """Learner i starts as the i-th most important quarter of the dense FFN's hidden units."""
    fc1, fc2 = mlp[0], mlp[3]
    importance = fc1.weight.norm(dim=1) * fc2.weight.norm(dim=0)
    perm = importance.argsort(descending=True)
    acm.w1.copy_(fc1.weight[perm].t())
    acm.b1.copy_(fc1.bias[perm])
    acm.w2.copy_(fc2.weight[:, perm].t())


@torch.no_grad()
def _init_projection(acm: ACM, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Learner i starts as the i-th block of singular directions: h(z, k) is the best rank-k*w map."""
    r = acm.n * acm.width
    u, s, vh = torch.linalg.svd(weight)
    root = s[:r].sqrt()
    acm.w1.copy_(vh[:r].t() * root)
    acm.w2.copy_(root[:, None] * u[:, :r].t())
    acm.b1.copy_(bias @ torch.linalg.pinv(acm.w2))


@torch.no_grad()
def from_dense(vit: VisionTransformer, cfg: ViTConfig, n: int = 4) -> ACMViT:
    model = ACMViT(cfg, n)
    model.conv_proj.load_state_dict(vit.conv_proj.state_dict())
    model.class_token.copy_(vit.class_token)
    model.pos_embedding.copy_(vit.encoder.pos_embedding)
    model.ln.load_state_dict(vit.encoder.ln.state_dict())
    model.head.load_state_dict(vit.heads.head.state_dict())
    for layer, block in zip(model.layers, vit.encoder.layers):
        layer.ln_1.load_state_dict(block.ln_1.state_dict())
        layer.ln_2.load_state_dict(block.ln_2.state_dict())
        attn = block.self_attention
        for acm, w, b in zip((layer.q, layer.k, layer.v), attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)):
            _init_projection(acm, w, b)
        _init_projection(layer.o, attn.out_proj.weight, attn.out_proj.bias)
        _init_ffn(layer.mlp, block.mlp)
    return model
