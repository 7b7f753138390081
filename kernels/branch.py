"""One of two computations, chosen at run time, in eager PyTorch and in an exported graph.

`branch(cond, then_fn, else_fn)` runs one function in eager PyTorch. A trace cannot follow a
Python `if` on a tensor, so while tracing both functions run and their outputs meet in an
`acm::Select` marker node; `lower_selects` then turns each marker into an ONNX If whose branches
hold the nodes only that side needs, so onnxruntime runs the side the condition picks and nothing
of the other. torch.onnx's own route to an If (scripting) would also export the grouped kernel's
per-count loop as an ONNX Loop; tracing keeps it unrolled.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import onnx
import torch
from onnx import helper

DOMAIN = "acm"
SELECT = "Select"

_ONNX_TYPES = {"Float": onnx.TensorProto.FLOAT, "Double": onnx.TensorProto.DOUBLE,
               "Long": onnx.TensorProto.INT64, "Bool": onnx.TensorProto.BOOL}


class _Select(torch.autograd.Function):
    """then[i] if cond else other[i], as one acm::Select node: cond, then..., other... ->
    outputs. The outputs' element types ride along as an attribute for the If's branch outputs."""

    @staticmethod
    def forward(ctx, cond: torch.Tensor, count: int, *tensors: torch.Tensor):
        chosen = tensors[:count] if bool(cond) else tensors[count:]
        return tuple(t.clone() for t in chosen)

    @staticmethod
    def symbolic(g, cond, count, *tensors):
        types = [_ONNX_TYPES[t.type().scalarType()] for t in tensors[:count]]
        with warnings.catch_warnings():
            # As in grouped.rows_where: graph.op() keeps its arguments in later PyTorch versions.
            warnings.simplefilter("ignore", FutureWarning)
            outs = g.op(f"{DOMAIN}::{SELECT}", cond, *tensors, elem_types_i=types, outputs=count)
        outs = outs if count > 1 else (outs,)
        for out, t in zip(outs, tensors[:count]):
            out.setType(t.type())
        return outs


def branch(cond: torch.Tensor, then_fn: Callable[[], Sequence[torch.Tensor]],
           else_fn: Callable[[], Sequence[torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """then_fn() if cond (a one-element bool tensor) else else_fn(); both return tensors of the
    same count, types and ranks. Eager runs one of them; a trace records both and a Select."""
    if not torch.jit.is_tracing():
        return tuple(then_fn() if bool(cond) else else_fn())
    then, other = tuple(then_fn()), tuple(else_fn())
    if len(then) != len(other):
        raise ValueError(f"branch: then gives {len(then)} tensors, else {len(other)}")
    out = _Select.apply(cond.reshape(()), len(then), *then, *other)
    return out if isinstance(out, tuple) else (out,)


def _subgraph_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a graph reads from outside itself (its nodes' inputs it does not produce)."""
    made = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    refs: set[str] = set()
    for node in graph.node:
        refs |= {i for i in _reads(node) if i and i not in made}
        made |= set(node.output)
    return refs


def _reads(node: onnx.NodeProto) -> list[str]:
    """A node's inputs, including what its subgraphs (an If's branches) read from outer scope."""
    inner = [r for a in node.attribute if a.type == onnx.AttributeProto.GRAPH for r in _subgraph_refs(a.g)]
    return list(node.input) + inner


def lower_selects(model: onnx.ModelProto) -> int:
    """Replaces every acm::Select marker of the main graph by an ONNX If; returns how many.

    A node goes into the then (else) branch when everything that reads its outputs is in that
    branch or is the marker reading it as a then (else) value; nodes both sides or the condition
    need stay outside, where both branches read them. Node order is kept, so each branch stays
    topologically sorted, and the If takes the marker's place, after everything it reads.
    """
    g = model.graph
    nodes = list(g.node)
    graph_outputs = {o.name for o in g.output}
    lowered = 0
    while True:
        at = next((i for i, n in enumerate(nodes) if n.domain == DOMAIN and n.op_type == SELECT), None)
        if at is None:
            break
        sel = nodes[at]
        count = len(sel.output)
        cond, values = sel.input[0], list(sel.input[1:])
        if len(values) != 2 * count:
            raise ValueError(f"{sel.name}: {len(values)} values for {count} outputs")
        then_vals, else_vals = values[:count], values[count:]
        readers: dict[str, list[int]] = {}
        for i, n in enumerate(nodes):
            for name in _reads(n):
                readers.setdefault(name, []).append(i)
        side: dict[int, str] = {}
        for i in range(at - 1, -1, -1):
            sides: set[str] = set()
            movable = not any(o in graph_outputs for o in nodes[i].output)
            for out in nodes[i].output:
                for r in readers.get(out, []):
                    if r == at:
                        if out == cond:
                            movable = False
                        sides |= {s for s, vals in (("then", then_vals), ("else", else_vals)) if out in vals}
                    elif r in side:
                        sides.add(side[r])
                    else:
                        movable = False
            if movable and len(sides) == 1:
                side[i] = sides.pop()
        if any(nodes[i].domain == DOMAIN and nodes[i].op_type == SELECT for i in side):
            raise ValueError(f"{sel.name}: a Select inside another's branch is not supported")
        types = next(a.ints for a in sel.attribute if a.name == "elem_types")
        infos = {v.name: v for v in g.value_info}
        branches = {}
        for name, vals in (("then", then_vals), ("else", else_vals)):
            inner = [nodes[i] for i in sorted(side) if side[i] == name]
            made = {o for n in inner for o in n.output}
            outputs, used = [], set()
            for j, v in enumerate(vals):
                if v in made and v not in used:
                    outputs.append(v)
                else:  # produced outside the branch, or already an output of it: pass it through
                    alias = f"{sel.output[j]}/{name}"
                    inner.append(helper.make_node("Identity", [v], [alias], name=alias))
                    outputs.append(alias)
                used.add(v)
            branches[name] = helper.make_graph(
                inner, f"{sel.name}/{name}", [], [helper.make_tensor_value_info(o, types[j], None) for j, o in enumerate(outputs)],
                value_info=[infos[o] for n in inner for o in n.output if o in infos and o not in outputs])
        moved = {o for i in side for o in nodes[i].output}
        kept_infos = [v for v in g.value_info if v.name not in moved]
        del g.value_info[:]
        g.value_info.extend(kept_infos)
        if_node = helper.make_node("If", [cond], list(sel.output), name=sel.name.replace(SELECT, "If") or f"If_{lowered}",
                                   then_branch=branches["then"], else_branch=branches["else"])
        nodes = [n for i, n in enumerate(nodes[:at]) if i not in side] + [if_node] + nodes[at + 1:]
        lowered += 1
    del g.node[:]
    g.node.extend(nodes)
    if not any(n.domain == DOMAIN for n in nodes):
        kept = [o for o in model.opset_import if o.domain != DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)
    return lowered
