"""The grouped-learner kernel and the per-request cap, written so `torch.onnx.export` emits them.

Both functions run inside the exported graph (DESIGN §4): the server runs the whole model once per
batch, and every op here has a CPU and a CUDA implementation in onnxruntime (TopK, NonZero, Gather,
Slice, MatMul, Concat, CumSum, ScatterElements).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F


class _RowsWhere(torch.autograd.Function):
    """torch.nonzero(mask).reshape(-1), exported as NonZero then Reshape. The exporter's own
    translation transposes NonZero's [1, m] output to [m, 1] first, a node per group and ACM that
    moves nothing (one more onnxruntime node, about a microsecond each, on every run)."""

    @staticmethod
    def forward(ctx, mask: torch.Tensor) -> torch.Tensor:
        return torch.nonzero(mask).reshape(-1)

    @staticmethod
    def symbolic(g, mask):
        # PyTorch 1.13 hands a Function's symbolic the graph itself and warns that graph.op()
        # moves to a wrapper in later versions, which keep op() with the same arguments.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            flat = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.int64))
            return g.op("Reshape", g.op("NonZero", mask), flat)


def rows_where(mask: torch.Tensor) -> torch.Tensor:
    """The indices of a 1-D mask's true entries, in order: [m] int64."""
    return _RowsWhere.apply(mask)


def learner_caps(budget: torch.Tensor, n: int, tokens: int) -> torch.Tensor:
    """The learners a request's cap allows over its `tokens` tokens, before any floor: [B] int64."""
    return torch.floor(budget * float(n * tokens)).to(torch.int64)


def at_floor(budget: torch.Tensor, n: int, min_choice: int, tokens: int) -> torch.Tensor:
    """Whether every request's cap (budget: any shape of per-request cap budgets) allows no more
    than the minimum, min_choice learners per token: then cap_counts gives every token exactly
    min_choice whatever its gate asks, and the gate need not run. A 0-dim bool tensor."""
    return (learner_caps(budget, n, tokens) <= min_choice * tokens).all()


def cap_counts(desired: torch.Tensor, budget: torch.Tensor, n: int, min_choice: int,
               priority: torch.Tensor | None = None, tokens: int | None = None) -> torch.Tensor:
    """Cap one ACM's learner counts per request so the request stays within its budget.

    desired: [B, T] int64 counts the gate asked for, in [min_choice, n].
    budget:  [B] float64, in (0, 1].
    priority: optional [B, T] float, higher first (the gate's expected learner count).
    tokens: T when the model's token count is fixed (it must match desired's); an exported graph
    then holds T and what follows from it as constants instead of reading them off the tensors'
    shapes on every run.
    Returns [B, T] int64 with sum_t k <= max(floor(budget * n * T), min_choice * T) for every row.

    Water-filling: the largest level L with sum_t min(desired, L) within the cap is applied to all
    tokens, then the learners left over go one each to the tokens that asked for more than L, in
    priority order (without one: those that asked for the most first, then lower token index).
    Tokens that asked for little are never raised, and the order of the gate's preferences is
    kept: with the gate's expected count as priority, a tight budget still goes to the tokens the
    gate finds hardest, not to the first ones. Each row depends on its own request only, which is
    what makes answers batch invariant.
    """
    if tokens is not None and not torch.jit.is_tracing() and desired.shape[1] != tokens:
        raise ValueError(f"cap_counts: tokens={tokens}, but the counts have {desired.shape[1]} tokens")
    t = desired.shape[1] if tokens is None else tokens
    cap = torch.clamp(learner_caps(budget, n, t), min=min_choice * t)
    levels = torch.arange(n + 1, dtype=torch.int64, device=desired.device)
    totals = torch.minimum(desired.unsqueeze(-1), levels).sum(1)  # [B, n+1], non-decreasing in L
    level = (totals <= cap.unsqueeze(-1)).to(torch.int64).sum(-1, keepdim=True) - 1  # [B, 1]
    base = torch.minimum(desired, level)
    remainder = cap - base.sum(1)  # [B]; smaller than the candidate count whenever level < n
    wants_more = desired > level
    if priority is None:
        position = torch.arange(t, dtype=torch.int64, device=desired.device)
        key = torch.where(wants_more, desired * (t + 1) + (t - position), torch.zeros_like(desired)).to(torch.float32)
    else:
        # A 0-dim -1 that where() broadcasts: no tensor of -1s to shape on every run.
        key = torch.where(wants_more, priority.to(torch.float32), priority.new_tensor(-1.0, dtype=torch.float32))
    if tokens is not None and torch.jit.is_tracing():
        # The same TopK argsort exports, with k a constant. Eager runs keep argsort's own order.
        order = torch.topk(key, tokens, dim=1).indices
    else:
        order = torch.argsort(key, dim=1, descending=True)
    # The first `remainder` tokens of the order get one learner more, put back in token order by
    # one scatter (no second sort for ranks). The order is a permutation of the tokens, so the
    # scatter writes every entry and the tensor it writes into only lends its shape.
    first = torch.arange(t, dtype=torch.int64, device=desired.device) < remainder.unsqueeze(-1)
    extra = wants_more & wants_more.scatter(1, order, first)
    return base + extra.to(torch.int64)


def grouped_learners(x: torch.Tensor, k: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                     w2: torch.Tensor, n: int, width: int, gelu: bool) -> torch.Tensor:
    """h(x_i, k_i) for every row i, with one GEMM pair per distinct k.

    x: [M, d]; k: [M] int64 in [0, n]; w1: [d, n*width]; b1: [n*width]; w2: [n*width, d].
    The sum of the first k learners equals one FFN over the first k*width hidden units (DESIGN §2),
    so rows grouped by k are processed group by group with weight slices of width j*width; rows
    with k = 0 get zeros. Every output row is written exactly once.

    Each group's row indices come from a mask of k (NonZero, in row order) and the group gathers
    its rows straight from x; the outputs are joined once, after a single zero row that stands
    for every k = 0 row, and put back in row order by one gather through the inverse
    permutation. No sort is needed: a group is a set of rows, not a slice of a sorted order. (A
    sort of k with group boundaries counted from it cost 11-20% more time per image on the
    bundled model, and sorting x itself moved every activation row twice before the GEMMs;
    README, "Whole-model timing", has the measurements.) The zero row is cut from the weights,
    so onnxruntime folds it to a constant when it loads the graph.
    """
    # Each group's rows straight from a mask of k (no sort): NonZero lists them in row order.
    groups = [rows_where(k == j) for j in range(1, n + 1)]
    pieces = [torch.zeros_like(w2[:1])]
    for j, rows_j in enumerate(groups, start=1):
        pieces.append(first_learners(x.index_select(0, rows_j), j, w1, b1, w2, width, gelu))
    ys = torch.cat(pieces, 0)
    order = torch.cat(groups, 0)
    # Row i's output is ys[1 + its place in order], or the zero row ys[0] when no group holds it.
    inverse = torch.zeros_like(k).scatter(0, order, torch.ones_like(order).cumsum(0))
    return ys.index_select(0, inverse)


def first_learners(x: torch.Tensor, j: int, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                   width: int, gelu: bool) -> torch.Tensor:
    """h(x_i, j) for every row: the first j learners as one FFN of j*width hidden units. [M, d]."""
    if j == 0:
        return x.new_zeros(x.shape[0], w2.shape[1])
    h = x @ w1[:, :j * width] + b1[:j * width]
    if gelu:
        h = F.gelu(h)
    return h @ w2[:j * width]
