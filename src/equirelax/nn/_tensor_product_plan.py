"""The evaluation plan of :class:`~equirelax.nn.steerable.SteerableLinear`'s tensor product.

:func:`compile_paths` lists the paths ``(input block) x (attribute block) -> (output block)`` of
e3nn's fully connected tensor product with their weight offsets, normalisation and how each is
evaluated (elementwise where the Clebsch-Gordan coefficients are a multiple of the identity);
:func:`make_plan` groups them, for one pattern of broadcast inputs, into matrix products taken
weights first (``C(W^T x, a)``) or product first (``W^T C(x, a)``), with the gather indices of
their weight matrices in the flat weight. Built once per layer, so that ``forward`` is plain
tensor code.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from e3nn import o3
from torch import Tensor

__all__ = ["PRODUCT_FIRST", "Fused", "Path", "Plan", "compile_paths", "make_plan", "product_kind"]


class Path(NamedTuple):
    """One path ``(input block) x (attribute block) -> (output block)`` of the product."""

    i_in: int  # input block, counted over all parts of the input
    i_attr: int
    i_out: int
    start: int  # offset of the path's weights (mul_in, mul_attr, mul_out) in the flat weight
    mul_in: int
    mul_attr: int
    mul_out: int
    kind: str  # how the product is evaluated: "scalar", "left", "right", "contract", "general"
    cg: int  # index of the coefficient buffer ("general" only)


class Fused(NamedTuple):
    """Weights-first paths that share one product ``C(sum_b W_b^T x_b, a_j)``: all input
    blocks of one irrep, one attribute block, every output block of one irrep (or one output
    block for the ``general`` kind)."""

    kind: str
    i_attr: int
    out_type: int
    i_out: int  # the output block of a "general" product, -1 otherwise
    cg: int
    mul_attr: int


class Plan(NamedTuple):
    """How to evaluate the product for one pattern of broadcast inputs."""

    # Per input block: (block, columns of each fused group, the fused groups' indices)
    weights_first: list[tuple[int, list[int], list[int]]]
    fused: list[Fused]
    # Per output irrep: (output type, the products (input block, attribute block, kind))
    product_first: list[tuple[int, list[tuple[int, int, str]]]]
    # The weight matrices of both, in this order, as one gather from the flat weight: the
    # gather's indices are row ``row`` of the layer's ``_plan_index`` buffer.
    row: int
    shapes: list[tuple[int, int]]


# Kinds whose product may come before the weights (``C(x, a)`` has no more components than x).
PRODUCT_FIRST = ("scalar", "right", "contract")


def compile_paths(
    irreps_in: o3.Irreps, irreps_attr: o3.Irreps, irreps_out: o3.Irreps
) -> tuple[list[Path], list[Tensor], list[Tensor], list[int]]:
    """The paths in e3nn's order, each path's weight scales (float64, one per weight, the
    normalisation ``alpha`` and an elementwise product's coefficient folded in), the
    coefficient tensors of the ``general`` paths (``alpha`` folded in) and each output block's
    fan-in ``sum_paths mul_in mul_attr``. A ``ValueError`` names the output irreps no input and
    attribute pair reaches."""
    triples = [
        (i, j, k)
        for i, (mul_i, ir_i) in enumerate(irreps_in)
        for j, (mul_j, ir_j) in enumerate(irreps_attr)
        for k, (mul_k, ir_k) in enumerate(irreps_out)
        if mul_i * mul_j * mul_k > 0 and ir_k in ir_i * ir_j
    ]
    fan_in = [0] * len(irreps_out)
    for i, j, k in triples:
        fan_in[k] += irreps_in[i].mul * irreps_attr[j].mul
    unreachable = [str(ir) for k, (mul, ir) in enumerate(irreps_out) if mul > 0 and fan_in[k] == 0]
    if unreachable:
        raise ValueError(
            f"irreps_out: {', '.join(unreachable)} cannot be reached from "
            f"{irreps_in} x {irreps_attr}"
        )

    paths: list[Path] = []
    scales: list[Tensor] = []
    cgs: dict[tuple[int, int, int, int], int] = {}  # (l_in, l_attr, l_out, i_out) -> index
    coefficients: list[Tensor] = []
    start = 0
    for i, j, k in triples:
        (mul_i, ir_i), (mul_j, ir_j), (mul_k, ir_k) = (
            irreps_in[i],
            irreps_attr[j],
            irreps_out[k],
        )
        alpha = math.sqrt(ir_k.dim / fan_in[k])
        cg = o3.wigner_3j(ir_i.l, ir_j.l, ir_k.l, dtype=torch.float64)
        kind, scale = product_kind(cg, ir_i.l, ir_j.l, ir_k.l, mul_j)
        index = -1
        if kind == "general":  # alpha stays in the coefficients, shared by the blocks
            scale, key = 1.0, (ir_i.l, ir_j.l, ir_k.l, k)
            if key not in cgs:
                cgs[key] = len(coefficients)
                coefficients.append(cg * alpha)
            index = cgs[key]
        else:
            scale *= alpha
        paths.append(Path(i, j, k, start, mul_i, mul_j, mul_k, kind, index))
        size = mul_i * mul_j * mul_k
        scales.append(torch.full((size,), scale, dtype=torch.float64))
        start += size
    return paths, scales, coefficients, fan_in


def make_plan(
    paths: list[Path],
    full: list[bool],
    row: int,
    irreps_in: o3.Irreps,
    type_of: list[int],
    type_blocks: list[list[int]],
) -> tuple[Plan, list[int]]:
    """Group ``paths`` for inputs whose blocks do (``full``) or do not have the output's
    leading shape: product first only for elementwise kinds of full blocks. Returns the
    plan and its gather indices (row ``row`` of the layer's gather table). ``type_of`` gives
    each output block's irrep type, ``type_blocks`` each type's output blocks."""
    first = [p for p in paths if full[p.i_in] and p.kind in PRODUCT_FIRST]
    rest = [p for p in paths if not (full[p.i_in] and p.kind in PRODUCT_FIRST)]
    groups: dict[tuple[o3.Irrep, int, int, int], list[Path]] = {}
    for p in rest:
        general = p.kind == "general"
        ir = irreps_in[p.i_in].ir
        groups.setdefault((ir, p.i_attr, type_of[p.i_out], p.i_out if general else -1), []).append(
            p
        )
    fused = []
    per_block: dict[int, list[tuple[int, list[Path]]]] = {}
    for f, ((_, j, t, k), members) in enumerate(groups.items()):
        p0 = members[0]
        fused.append(Fused(p0.kind, j, t, k, p0.cg, p0.mul_attr))
        by_block: dict[int, list[Path]] = {}
        for p in members:
            by_block.setdefault(p.i_in, []).append(p)
        for b, block_paths in by_block.items():
            if k < 0:  # columns must follow the output blocks of the type
                assert [p.i_out for p in block_paths] == type_blocks[t]
            per_block.setdefault(b, []).append((f, block_paths))
    matrices: list[list[list[tuple[Path, int]]]] = []  # rows of (path, row in path)
    weights_first = []
    for b, entries in sorted(per_block.items()):
        block_paths_all = [p for _, g in entries for p in g]
        matrices.append([[(p, u) for p in block_paths_all] for u in range(irreps_in[b].mul)])
        sizes = [sum(p.mul_attr * p.mul_out for p in g) for _, g in entries]
        weights_first.append((b, sizes, [f for f, _ in entries]))
    product_first = []
    for t, blocks in enumerate(type_blocks):
        members = [p for p in first if type_of[p.i_out] == t]
        if not members:
            continue
        products = list(dict.fromkeys((p.i_in, p.i_attr, p.kind) for p in members))
        lookup = {(p.i_in, p.i_attr, p.i_out): p for p in members}
        rows = []
        for b, j, _ in products:  # a fully connected product reaches every block of t
            row_paths = [lookup[(b, j, k)] for k in blocks]
            rows += [[(p, u) for p in row_paths] for u in range(irreps_in[b].mul)]
        matrices.append(rows)
        product_first.append((t, products))
    index = [
        p.start + u * p.mul_attr * p.mul_out + c
        for rows in matrices
        for row in rows
        for p, u in row
        for c in range(p.mul_attr * p.mul_out)
    ]
    shapes = [
        (len(rows), len(rows[0]) and sum(p.mul_attr * p.mul_out for p, _ in rows[0]))
        for rows in matrices
    ]
    assert sorted(index) == list(range(len(index)))  # every weight, once
    return Plan(weights_first, fused, product_first, row, shapes), index


def product_kind(
    cg: Tensor, l_in: int, l_attr: int, l_out: int, mul_attr: int
) -> tuple[str, float]:
    """How to evaluate a path: when one of the three degrees is 0 the coefficients are a
    multiple ``scale`` of the identity (checked) and the product is elementwise."""
    if mul_attr != 1:
        return "general", 1.0
    if l_in == 0:
        kind, eye_like = ("scalar" if l_attr == 0 else "left"), cg[0]
    elif l_attr == 0:
        kind, eye_like = "right", cg[:, 0, :]
    elif l_out == 0:
        kind, eye_like = "contract", cg[:, :, 0]
    else:
        return "general", 1.0
    scale = float(eye_like[0, 0])
    identity = torch.eye(eye_like.shape[0], dtype=eye_like.dtype) * scale
    if eye_like.shape != identity.shape or not torch.allclose(eye_like, identity, atol=1e-14):
        return "general", 1.0
    return kind, scale
