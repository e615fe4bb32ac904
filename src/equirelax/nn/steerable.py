"""Steerable O(3)-equivariant building blocks on e3nn irreps (SEGNN, arXiv 2110.02905).

Features are e3nn irreps vectors ``(..., irreps.dim)`` (e3nn's layout: blocks of
``mul x (2l + 1)`` components, ``l = 1`` in ``(x, y, z)`` order). :class:`SteerableLinear` is
SEGNN's steerable linear layer, a tensor product with a steerable attribute;
:class:`SteerableGate` its gated nonlinearity; :class:`SEGNNLayer` one message-passing layer
of SEGNN on dense, fully connected batched graphs. Every module exposes ``action_in`` /
``action_out`` (O(3) acting through the irreps' representation matrices), so the library's
metrics can check it.

:func:`equirelax.relax` relaxes every :class:`SteerableLinear` by default: its free branch is
a dense map on the concatenated features ``[x, a]``
(:class:`~equirelax.free_branches.SteerableFreeBranch`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from e3nn import o3
from torch import Tensor, nn

from equirelax._checks import check_choice, check_int, check_ndim, check_tensor
from equirelax.actions import DirectSumAction, irreps_action
from equirelax.free_branches import SteerableFreeBranch
from equirelax.groups import check_irreps
from equirelax.nn._tensor_product_plan import Fused, Plan, compile_paths, make_plan

__all__ = [
    "SEGNNLayer",
    "SteerableGate",
    "SteerableLinear",
    "check_irreps",
    "off_diagonal",
]

_AGGREGATIONS = ("sum", "mean")
_PARAMETRIZATIONS = ("e3nn", "linear")


def _check_features(name: str, value: object, dim: int, irreps: str) -> Tensor:
    value = check_tensor(name, value)
    if value.ndim < 1 or value.shape[-1] != dim or not value.is_floating_point():
        raise ValueError(
            f"{name}: expected a float tensor (..., {dim}) for irreps {irreps}, received dtype "
            f"{value.dtype} and shape {tuple(value.shape)}"
        )
    return value


class SteerableLinear(nn.Module):
    r"""SEGNN's steerable linear layer ``y = TP_W(x, a)`` (+ a bias on ``0e`` outputs).

    A fully connected tensor product of the features ``x`` with a steerable attribute ``a``
    (Brandstetter et al., ICLR 2022, arXiv 2110.02905, eq. (8)): for every path
    ``(l_1, p_1) x (l_2, p_2) -> (l, p)`` allowed by the selection rules,

    .. math::

        y^{(l)}_{w, m} = \sum_{\text{paths}} \alpha_{\text{path}} \sum_{u, v}
            W^{\text{path}}_{u v w} \sum_{m_1, m_2} C^{(l_1, l_2, l)}_{m_1 m_2 m}
            x^{(l_1)}_{u, m_1} a^{(l_2)}_{v, m_2},

    with e3nn's Wigner 3j symbols ``C``, weights ``W ~ N(0, 1)`` shared by all inputs (not
    edge dependent) and e3nn's normalisation (``irrep_normalization="component"``,
    ``path_normalization="element"``: ``alpha^2 = (2l + 1) / sum_paths mul_1 mul_2``). It is
    e3nn's ``o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, irreps_out)`` with the
    same flat ``weight`` (tested), evaluated faster on CPU: a path is computed as
    ``C(W^T x, a)`` (weights first, one matrix product per input block at ``x``'s own
    leading shape, one product with ``a`` for all blocks of an irrep) or, where that is
    cheaper, as ``W^T C(x, a)`` (one matrix product per output irrep).

    The input may come in parts: with ``irreps_in`` a sequence of irreps the layer is called
    as ``layer(x_1, ..., x_k, a)`` and equals the tensor product of the concatenation
    ``[x_1, ..., x_k]`` (leading axes broadcast). SEGNN's message layer uses this to apply
    the weights to node features ``(B, N, 1, F)`` and ``(B, 1, N, F)`` once per node, not
    once per edge.

    Equivariance: ``TP_W(D_in(g) x, D_attr(g) a) = D_out(g) TP_W(x, a)`` for every ``g`` in
    O(3); ``action_in`` acts on the tuple ``(x_1, ..., x_k, a)`` and ``action_out`` on ``y``.

    Parameters
    ----------
    irreps_in:
        e3nn irreps of ``x`` (a string or ``o3.Irreps``), or a list of them, one per part.
    irreps_attr, irreps_out:
        Irreps of ``a`` and ``y``. Every output irrep must be reachable from some
        ``in x attr`` pair.
    bias:
        Learn a bias on the ``0e`` outputs (the only equivariant bias).
    parametrization:
        ``"e3nn"`` (default): ``W ~ N(0, 1)`` under e3nn's normalisation, biases 0.
        ``"linear"``: as the official SEGNN's ``O3TensorProduct`` (github.com/RobDHess/
        Steerable-E3-GNN, also ACE's and CR's N-body code), initialised like ``torch.nn.Linear``:
        every output block is multiplied by ``sqrt(f)``, ``f`` its fan-in
        ``sum_paths mul_in mul_attr``, and its weights and biases start ``U(-1/sqrt(f),
        1/sqrt(f))``. The function class is the same; an optimiser step on ``W`` moves the
        output ``sqrt(f)`` times more (Adam at a given learning rate trains 8-11x faster on
        SEGNN's N-body layers).

    Examples
    --------
    >>> layer = SteerableLinear("4x0e + 2x1o", "1x0e + 1x1o", "3x0e + 1x1o")
    >>> layer(torch.randn(10, 10), torch.randn(10, 4)).shape
    torch.Size([10, 6])
    """

    def __init__(
        self,
        irreps_in: str | o3.Irreps | Sequence[str | o3.Irreps],
        irreps_attr: str | o3.Irreps,
        irreps_out: str | o3.Irreps,
        *,
        bias: bool = True,
        parametrization: str = "e3nn",
    ) -> None:
        super().__init__()
        check_choice("parametrization", parametrization, _PARAMETRIZATIONS)
        self.parametrization = parametrization
        if isinstance(irreps_in, (list, tuple)) and not isinstance(irreps_in, o3.Irreps):
            if not irreps_in:
                raise ValueError("irreps_in: expected irreps or a non-empty list of irreps")
            parts = [check_irreps(f"irreps_in[{i}]", part) for i, part in enumerate(irreps_in)]
        else:
            parts = [check_irreps("irreps_in", irreps_in)]
        self.irreps_parts = tuple(parts)
        self.irreps_in = sum(parts[1:], parts[0])
        self.irreps_attr = check_irreps("irreps_attr", irreps_attr)
        self.irreps_out = check_irreps("irreps_out", irreps_out)
        self.in_features = self.irreps_in.dim
        self.attr_features = self.irreps_attr.dim
        self.out_features = self.irreps_out.dim
        self.action_in = DirectSumAction(
            *(irreps_action(part) for part in parts),
            irreps_action(self.irreps_attr),
        )
        self.action_out = irreps_action(self.irreps_out)

        paths, scales, coefficients, fan_in = compile_paths(
            self.irreps_in, self.irreps_attr, self.irreps_out
        )
        start = sum(p.mul_in * p.mul_attr * p.mul_out for p in paths)
        self.weight_numel = start
        self.weight = nn.Parameter(torch.randn(start))
        if parametrization == "linear":
            bound = [1.0 / math.sqrt(f) if f else 0.0 for f in fan_in]
            with torch.no_grad():
                for path, scale in zip(paths, scales, strict=True):
                    scale.mul_(math.sqrt(fan_in[path.i_out]))
                    size = path.mul_in * path.mul_attr * path.mul_out
                    self.weight[path.start : path.start + size].uniform_(
                        -bound[path.i_out], bound[path.i_out]
                    )
        # The constants, kept in float64 (not buffers: module.float().double() would round
        # them) and converted once per dtype and device: the weight scales (the coefficients
        # of the elementwise products folded in) and the other paths' coefficients.
        self._constants64 = (torch.cat(scales), coefficients)
        self._constants: dict[tuple[torch.dtype, torch.device], tuple[Tensor, list[Tensor]]] = {}
        self._part_dims = [part.dim for part in parts]
        self._part_names = [str(part) for part in parts]
        self._attr_name = str(self.irreps_attr)
        self._part_blocks: list[list[int]] = []
        self._in_shapes = [(mul, ir.dim) for mul, ir in self.irreps_in]
        first = 0
        for part in parts:
            self._part_blocks.append(list(range(first, first + len(part))))
            first += len(part)
        self._attr_sizes = [mul * ir.dim for mul, ir in self.irreps_attr]
        self._attr_shapes = [(mul, ir.dim) for mul, ir in self.irreps_attr]
        # Output irreps ("types") and their blocks; products are accumulated per type.
        types = list(dict.fromkeys(ir for mul, ir in self.irreps_out if mul))
        self._type_of = [types.index(ir) if mul else -1 for mul, ir in self.irreps_out]
        self._type_blocks = [
            [k for k, (mul, ir) in enumerate(self.irreps_out) if mul and ir == t] for t in types
        ]
        self._type_dims = [t.dim for t in types]
        self._out_shapes = [(mul, ir.dim) for mul, ir in self.irreps_out]
        # One plan per pattern of full parts (2 ** parts of them), made here so that forward()
        # is plain tensor code on ints and tuples (torch.compile traces it without guarding on
        # e3nn objects); the gather indices of each plan, a permutation of the flat weight, in a
        # non-persistent buffer that follows the module's device (int32: half the memory).
        self._plans: dict[tuple[bool, ...], Plan] = {}
        indices: list[list[int]] = []
        for pattern in itertools.product((True, False), repeat=len(parts)):
            full = [f for f, blocks in zip(pattern, self._part_blocks, strict=True) for _ in blocks]
            plan, index = make_plan(
                paths, full, len(indices), self.irreps_in, self._type_of, self._type_blocks
            )
            self._plans[pattern] = plan
            indices.append(index)
        self._plan_index: Tensor
        self.register_buffer(
            "_plan_index",
            torch.tensor(indices, dtype=torch.int32 if start < 2**31 else torch.long),
            persistent=False,
        )
        scalar = o3.Irrep("0e")
        self._bias_type = types.index(scalar) if scalar in types else -1
        num_biases = sum(mul for mul, ir in self.irreps_out if ir == scalar)
        self.bias: nn.Parameter | None = (
            nn.Parameter(torch.zeros(num_biases)) if bias and num_biases else None
        )
        if self.bias is not None and parametrization == "linear":
            bounds = [
                1.0 / math.sqrt(f)
                for f, (mul, ir) in zip(fan_in, self.irreps_out, strict=True)
                for _ in range(mul)
                if ir == scalar
            ]
            with torch.no_grad():
                self.bias.copy_((2 * torch.rand(num_biases) - 1) * torch.tensor(bounds))

    def free_branch(self) -> nn.Module:
        """A fresh free branch for this layer (used by :func:`~equirelax.relax`):
        a dense map of the concatenated inputs."""
        return SteerableFreeBranch(
            [part.dim for part in self.irreps_parts], self.attr_features, self.out_features
        )

    def forward(self, *inputs: Tensor) -> Tensor:
        """``TP_W(x, a)``: ``layer(x, a)`` (or ``layer(x_1, ..., x_k, a)`` for an input in
        parts) for ``x`` ``(..., irreps_in.dim)`` and ``a`` ``(..., irreps_attr.dim)``, leading
        axes broadcast; returns ``(..., irreps_out.dim)``."""
        parts, a = self._check_inputs(inputs)
        lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts), a.shape[:-1])
        xs = self._input_blocks(parts)
        # Attribute blocks as (..., mul, d) and, for mul = 1, as columns (..., d, 1).
        attrs = [
            piece.unflatten(-1, (mul, d))
            for piece, (mul, d) in zip(
                a.split(self._attr_sizes, -1), self._attr_shapes, strict=True
            )
        ]
        columns_a = [block.transpose(-1, -2) if block.shape[-2] == 1 else block for block in attrs]
        # Whether each part has the output's leading shape (else it is broadcast).
        plan = self._plans[tuple(tuple(part.shape[:-1]) == tuple(lead) for part in parts)]
        # Every weight matrix of this pattern in one gather (coefficients folded in).
        scale, coefficients = self._constants_for(self.weight.dtype, self.weight.device)
        flat = (self.weight * scale)[self._plan_index[plan.row]]
        matrices = iter(
            w.view(shape)
            for w, shape in zip(
                flat.split([r * c for r, c in plan.shapes]), plan.shapes, strict=True
            )
        )
        acc: list[Tensor | None] = [None] * len(self._type_dims)  # (..., d, columns of type)
        extra: dict[int, Tensor] = {}  # "general" products per output block
        # Weights first: one matrix product per input block, one product per fused group.
        chunks: list[list[Tensor]] = [[] for _ in plan.fused]
        for b, sizes, fused in plan.weights_first:
            z = _matmul(xs[b], next(matrices))
            for f, chunk in zip(fused, z.split(sizes, -1), strict=True):
                chunks[f].append(chunk)
        for f, terms in zip(plan.fused, chunks, strict=True):
            z = terms[0]
            for term in terms[1:]:
                z = z + term
            y = _weights_then_product(z, attrs[f.i_attr], columns_a[f.i_attr], f, coefficients)
            if f.kind == "general":
                extra[f.i_out] = y if f.i_out not in extra else extra[f.i_out] + y
            else:
                acc[f.out_type] = _add(acc[f.out_type], y)
        # Product first: the products of all blocks, then one matrix product per output irrep.
        for t, products in plan.product_first:
            p_all = [_product(xs[b], columns_a[j], kind) for b, j, kind in products]
            acc[t] = _add(acc[t], _matmul(torch.cat(p_all, -1), next(matrices)))
        if self.bias is not None:
            acc[self._bias_type] = _add(acc[self._bias_type], self.bias.to(flat.dtype))
        return self._output(acc, extra, lead)

    def _input_blocks(self, parts: list[Tensor]) -> list[Tensor]:
        """Every input block as ``(..., d, mul)``: the weights act on ``mul``."""
        xs: list[Tensor] = []
        for part, indices in zip(parts, self._part_blocks, strict=True):
            pieces = part.split(
                [self._in_shapes[b][0] * self._in_shapes[b][1] for b in indices], -1
            )
            for piece, b in zip(pieces, indices, strict=True):
                mul, d = self._in_shapes[b]
                xs.append(
                    piece.unsqueeze(-2)
                    if d == 1
                    else piece.unflatten(-1, (mul, d)).transpose(-1, -2)
                )
        return xs

    def _output(
        self, acc: list[Tensor | None], extra: dict[int, Tensor], lead: torch.Size
    ) -> Tensor:
        """The output ``(..., irreps_out.dim)`` from the sums per output irrep type ``acc``
        (columns ``(..., d, mul)``) and the general products per output block ``extra``."""
        columns: dict[int, Tensor] = {}
        for t, blocks in enumerate(self._type_blocks):
            total = acc[t]
            if total is not None:
                sizes = [self._out_shapes[k][0] for k in blocks]
                columns.update(zip(blocks, total.split(sizes, -1), strict=True))
        out = []
        for k, (mul, d) in enumerate(self._out_shapes):
            if mul == 0:
                continue
            y = columns.get(k)
            if k in extra:
                y = extra[k] if y is None else y + extra[k]
            assert y is not None  # every output is reachable (checked at construction)
            y = y.expand(*lead, d, mul)
            out.append(y.reshape(*lead, mul) if d == 1 else y.transpose(-1, -2).flatten(-2))
        return out[0] if len(out) == 1 else torch.cat(out, dim=-1)

    def _check_inputs(self, inputs: tuple[object, ...]) -> tuple[list[Tensor], Tensor]:
        k = len(self.irreps_parts)
        if len(inputs) != k + 1:
            raise ValueError(
                f"inputs: expected {k + 1} tensors (x{' in ' + str(k) + ' parts' if k > 1 else ''}"
                f" and a), received {len(inputs)}"
            )
        names = ["x"] if k == 1 else [f"x[{i}]" for i in range(k)]
        parts = [
            _check_features(name, value, dim, irreps)
            for name, value, dim, irreps in zip(
                names, inputs[:k], self._part_dims, self._part_names, strict=True
            )
        ]
        a = _check_features("a", inputs[k], self.attr_features, self._attr_name)
        for name, value in (*zip(names, parts, strict=True), ("a", a)):
            if value.dtype != self.weight.dtype:
                raise ValueError(
                    f"{name}: expected dtype {self.weight.dtype} like the layer's weights, "
                    f"received {value.dtype}"
                )
        try:
            torch.broadcast_shapes(*(p.shape[:-1] for p in parts), a.shape[:-1])
        except RuntimeError:
            shapes = ", ".join(str(tuple(v.shape)) for v in (*parts, a))
            raise ValueError(
                f"a: expected leading axes that broadcast with the inputs', received shapes "
                f"{shapes}"
            ) from None
        return parts, a

    def _constants_for(
        self, dtype: torch.dtype, device: torch.device
    ) -> tuple[Tensor, list[Tensor]]:
        """The float64 constants in ``dtype`` on ``device``: cached in eager mode; converted in
        the graph under ``torch.compile`` (no cache to guard on or mutate)."""
        key = (dtype, device)
        if torch.compiler.is_compiling() or key not in self._constants:
            scale, coefficients = self._constants64
            constants = (
                scale.to(dtype=dtype, device=device),
                [c.to(dtype=dtype, device=device) for c in coefficients],
            )
            if torch.compiler.is_compiling():
                return constants
            self._constants[key] = constants
        return self._constants[key]

    def extra_repr(self) -> str:
        parts = (
            " + ".join(f"({p})" for p in self.irreps_parts)
            if len(self.irreps_parts) > 1
            else str(self.irreps_in)
        )
        return (
            f"{parts} x {self.irreps_attr} -> {self.irreps_out}, "
            f"weights={self.weight_numel}, bias={self.bias is not None}"
        )


def _matmul(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w`` for ``x`` ``(..., k)`` and ``w`` ``(k, n)`` as one 2-D matrix product (a
    non-contiguous ``x`` would otherwise become a batched product with an expanded ``w``)."""
    return (x.reshape(-1, x.shape[-1]) @ w).view(*x.shape[:-1], w.shape[1])


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


def _weights_then_product(
    z: Tensor, a: Tensor, column: Tensor, f: Fused, coefficients: list[Tensor]
) -> Tensor:
    """``C(z, a)`` for ``z = W^T x`` ``(..., d_in, columns)`` and ``a``
    ``(..., mul_attr, d_attr)`` (``column``: ``a`` as ``(..., d_attr, 1)`` if ``mul_attr = 1``);
    returns ``(..., d_out, columns / mul_attr)``."""
    if f.kind == "general":
        cg = coefficients[f.cg].to(z.dtype)
        return torch.einsum("ijk,...vj,...ivw->...kw", cg, a, z.unflatten(-1, (f.mul_attr, -1)))
    if f.kind == "left":  # 0 x l -> l: the outer product of a with the weighted scalars
        return column * z
    return _product(z, column, f.kind)


def _product(z: Tensor, column: Tensor, kind: str) -> Tensor:
    """The coefficient-free product of ``z`` ``(..., d, mul)`` with one attribute irrep given
    as a column ``(..., d_attr, 1)``, for the kinds whose coefficients are an identity:
    ``"scalar"`` and ``"right"`` (``a`` a scalar: ``a z``), ``"contract"`` (``l x l -> 0``:
    ``a . z``)."""
    if kind == "contract":
        return (z * column).sum(dim=-2, keepdim=True)
    return z * column


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


@functools.cache
def _unit_second_moment(name: str) -> float:
    """``c`` with ``E[(c f(z))^2] = 1`` for ``z ~ N(0, 1)`` (e3nn's ``normalize2mom``), by
    Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(128)
    values = _ACTIVATIONS[name](torch.from_numpy(nodes)).numpy()
    return float(1.0 / math.sqrt((weights * values**2).sum() / math.sqrt(2 * math.pi)))


class SteerableGate(nn.Module):
    r"""Gated nonlinearity on irreps (Weiler et al. 2018; SEGNN, arXiv 2110.02905, sec. 3).

    For the output irreps ``irreps`` (e.g. ``"32x0e + 16x1o"``) the input holds, as in
    e3nn's ``Gate``, the scalars (the ``l = 0`` blocks of ``irreps``), then one ``0e`` gate
    per copy of an ``l > 0`` irrep, then those irreps: ``irreps_in = scalars + "Gx0e" +
    gated``, simplified (``"48x0e + 16x1o"`` for the example), the layout a preceding
    :class:`SteerableLinear` with ``irreps_out=gate.irreps_in`` produces:

    .. math::

        y^{(0e)} = c_1\, \mathrm{SiLU}(x^{(0e)}), \qquad
        y^{(0o)} = c_2 \tanh(x^{(0o)}), \qquad
        y^{(l > 0)}_u = c_3\, \sigma(g_u)\, x^{(l)}_u,

    with constants ``c`` that give each activation a unit second moment on ``N(0, 1)``
    inputs (as e3nn's ``Gate``). Scalars pass through functions of themselves and vectors are
    scaled by invariant gates, so the map is O(3)-equivariant (``0o`` scalars need an odd
    function: ``tanh``). The output irreps are ``irreps`` in the given order.

    Examples
    --------
    >>> gate = SteerableGate("4x0e + 2x1o")
    >>> str(gate.irreps_in), gate(torch.randn(3, 12)).shape
    ('6x0e+2x1o', torch.Size([3, 10]))
    """

    def __init__(self, irreps: str | o3.Irreps) -> None:
        super().__init__()
        self.irreps_out = check_irreps("irreps", irreps)
        scalars = [(mul, ir) for mul, ir in self.irreps_out if ir.l == 0]
        gated = [(mul, ir) for mul, ir in self.irreps_out if ir.l > 0]
        num_gates = sum(mul for mul, _ in gated)
        gates = [(num_gates, o3.Irrep("0e"))] if num_gates else []
        self.irreps_in = o3.Irreps(scalars + gates + gated).simplify()
        self.in_features, self.out_features = self.irreps_in.dim, self.irreps_out.dim
        self._irreps_in_name = str(self.irreps_in)
        self.action_in = irreps_action(self.irreps_in)
        self.action_out = irreps_action(self.irreps_out)
        # Input pieces: each scalar block, the gates, each gated block; and where each
        # output block comes from.
        self._sizes = [mul for mul, _ in scalars] + [num_gates] + [m * ir.dim for m, ir in gated]
        self._num_scalars = len(scalars)
        self._gated_shapes = [(mul, ir.dim) for mul, ir in gated]
        self._gate_sizes = [mul for mul, _ in gated]
        self._scalar_kinds = ["silu" if ir.p == 1 else "tanh" for _, ir in scalars]
        order = [("scalar" if ir.l == 0 else "gated") for _, ir in self.irreps_out]
        self._order = [
            (kind, order[:k].count(kind)) for k, kind in enumerate(order)
        ]  # (kind, index among its kind) per output block
        self._scales = {name: _unit_second_moment(name) for name in _ACTIVATIONS}

    def forward(self, x: Tensor) -> Tensor:
        """Apply the gate to ``x`` ``(..., irreps_in.dim)``; returns ``(..., irreps_out.dim)``."""
        x = _check_features("x", x, self.in_features, self._irreps_in_name)
        parts = x.split(self._sizes, dim=-1)
        n = self._num_scalars
        scalars = [
            _ACTIVATIONS[kind](part) * self._scales[kind]
            for part, kind in zip(parts[:n], self._scalar_kinds, strict=True)
        ]
        gated = []
        if self._gated_shapes:
            gates = torch.sigmoid(parts[n]) * self._scales["sigmoid"]
            for part, gate, shape in zip(
                parts[n + 1 :], gates.split(self._gate_sizes, -1), self._gated_shapes, strict=True
            ):
                gated.append((part.unflatten(-1, shape) * gate.unsqueeze(-1)).flatten(-2))
        pieces = [scalars[i] if kind == "scalar" else gated[i] for kind, i in self._order]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps_in} -> {self.irreps_out}"


@functools.lru_cache(maxsize=64)
def _neighbours(n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` ``(n, n - 1)``: the edges ``j -> i`` of a fully connected graph without
    self loops, ``rows[i, k] = i`` and ``cols[i, k] = k + (k >= i)``."""
    k = torch.arange(max(n - 1, 0), device=device).unsqueeze(0)
    i = torch.arange(n, device=device).unsqueeze(1)
    return i.expand(n, max(n - 1, 0)), k + (k >= i).long()


def off_diagonal(edges: Tensor) -> Tensor:
    """The ``(B, N, N - 1, ...)`` entries ``j != i`` of a dense edge tensor ``(B, N, N, ...)``
    (neighbour ``k`` of node ``i`` is node ``k + (k >= i)``)."""
    # Under torch.compile the indices are traced (and constant-folded), not cached.
    neighbours = _neighbours.__wrapped__ if torch.compiler.is_compiling() else _neighbours
    rows, cols = neighbours(edges.shape[1], edges.device)
    return edges[:, rows, cols]


class SEGNNLayer(nn.Module):
    r"""One SEGNN message-passing layer (Brandstetter et al., arXiv 2110.02905, eqs. (9)-(10)).

    On a fully connected graph without self loops (``N`` nodes, edges ``j -> i`` for
    ``j != i``), with steerable edge attributes ``a_ij`` (e.g. spherical harmonics of
    ``x_i - x_j``) and node attributes ``a_i``:

    .. math::

        m_{ij} &= \phi_m(h_i, h_j, e_{ij}; a_{ij})
               = G(\mathrm{TP}_2(G(\mathrm{TP}_1([h_i, h_j, e_{ij}], a_{ij})), a_{ij})), \\
        m_i &= \textstyle\sum_{j \ne i} m_{ij}
            \quad (\text{or } \tfrac{1}{N - 1} \sum_{j \ne i} m_{ij}), \\
        h_i' &= h_i + \phi_h(h_i, m_i; a_i)
              = h_i + \mathrm{TP}_4(G(\mathrm{TP}_3([h_i, m_i], a_i)), a_i),

    with :class:`SteerableLinear` layers ``TP_k``, :class:`SteerableGate` nonlinearities ``G``
    and invariant edge features ``e_ij`` (``0e``; e.g. ``|x_i - x_j|^2`` and ``q_i q_j``).

    ``TP_1`` takes its input in parts (see :class:`SteerableLinear`): it is one tensor
    product on ``[h_i, h_j, e_ij]``, but its weights act on the ``N`` node features before
    the ``N (N - 1)`` edge products.

    Dense batched graphs: every graph, node and edge is handled by tensor operations.

    Parameters
    ----------
    irreps_hidden:
        Irreps of the node features ``h`` and messages, e.g. ``"32x0e + 16x1o"``.
    irreps_attr:
        Irreps of the attributes ``a_ij`` and ``a_i`` (default ``"1x0e + 1x1o"``: spherical
        harmonics up to ``l = 1``).
    edge_features:
        Number ``E`` of invariant edge features ``e_ij`` (0: none).
    aggregation:
        ``"sum"`` (default, as SEGNN) or ``"mean"`` over the ``N - 1`` neighbours.
    parametrization:
        Of the four :class:`SteerableLinear` maps: ``"linear"`` (default, as SEGNN's
        ``O3TensorProduct``) or ``"e3nn"``.

    Examples
    --------
    >>> layer = SEGNNLayer("8x0e + 4x1o", edge_features=1)
    >>> h = torch.randn(2, 5, 20)
    >>> out = layer(h, torch.randn(2, 5, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 5, 1))
    >>> out.shape
    torch.Size([2, 5, 20])
    """

    def __init__(
        self,
        irreps_hidden: str | o3.Irreps,
        irreps_attr: str | o3.Irreps = "1x0e + 1x1o",
        edge_features: int = 0,
        *,
        aggregation: str = "sum",
        parametrization: str = "linear",
    ) -> None:
        super().__init__()
        hidden = check_irreps("irreps_hidden", irreps_hidden)
        attr = check_irreps("irreps_attr", irreps_attr)
        edge_features = check_int("edge_features", edge_features)
        check_choice("aggregation", aggregation, _AGGREGATIONS)
        self.irreps_hidden, self.irreps_attr = hidden, attr
        self.edge_features, self.aggregation = edge_features, aggregation
        self.hidden_features, self.attr_features = hidden.dim, attr.dim
        gated = SteerableGate(hidden).irreps_in
        message_parts = [hidden, hidden]
        if edge_features:
            message_parts.append(o3.Irreps(f"{edge_features}x0e"))
        linear = functools.partial(SteerableLinear, parametrization=parametrization)
        self.message_1 = linear(message_parts, attr, gated)
        self.message_gate_1 = SteerableGate(hidden)
        self.message_2 = linear(hidden, attr, gated)
        self.message_gate_2 = SteerableGate(hidden)
        self.update_1 = linear(hidden + hidden, attr, gated)
        self.update_gate = SteerableGate(hidden)
        self.update_2 = linear(hidden, attr, hidden)

    def forward(
        self,
        h: Tensor,
        edge_attr: Tensor,
        node_attr: Tensor,
        edge_features: Tensor | None = None,
    ) -> Tensor:
        """Update the node features.

        Parameters
        ----------
        h:
            Node features ``(B, N, irreps_hidden.dim)``.
        edge_attr:
            Edge attributes ``(B, N, N, irreps_attr.dim)``; ``edge_attr[b, i, j]`` belongs to
            the edge ``j -> i``. The diagonal (no self loops) is not used but must be finite.
        node_attr:
            Node attributes ``(B, N, irreps_attr.dim)``.
        edge_features:
            Invariant edge features ``(B, N, N, E)`` laid out like ``edge_attr``; required if
            and only if ``edge_features > 0``.
        """
        h, edge_attr, node_attr, edge_features = self._check_inputs(
            h, edge_attr, node_attr, edge_features
        )
        n = h.shape[1]
        # TP_1 on all N x N pairs, its weights applied to each node's h once, as receiver i
        # (B, N, 1, F) and as sender j (B, 1, N, F); then only the N (N - 1) edges j != i.
        parts = [h.unsqueeze(2), h.unsqueeze(1)]
        if edge_features is not None:
            parts.append(edge_features)
        m = self.message_gate_1(off_diagonal(self.message_1(*parts, edge_attr)))
        a_ij = off_diagonal(edge_attr)
        m = self.message_gate_2(self.message_2(m, a_ij))
        m_i = m.sum(dim=2)
        if self.aggregation == "mean":
            m_i = m_i / max(n - 1, 1)
        u = self.update_gate(self.update_1(torch.cat([h, m_i], dim=-1), node_attr))
        return h + self.update_2(u, node_attr)

    def _check_inputs(
        self, h: object, edge_attr: object, node_attr: object, edge_features: object
    ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        h = check_ndim("h", check_tensor("h", h), 3)
        if h.shape[2] != self.hidden_features or not h.is_floating_point():
            raise ValueError(
                f"h: expected a float tensor (B, N, {self.hidden_features}) for irreps "
                f"{self.irreps_hidden}, received dtype {h.dtype} and shape {tuple(h.shape)}"
            )
        batch, n, _ = h.shape
        expected = {
            "edge_attr": (batch, n, n, self.attr_features),
            "node_attr": (batch, n, self.attr_features),
        }
        values = {"edge_attr": edge_attr, "node_attr": node_attr}
        if self.edge_features:
            if edge_features is None:
                raise ValueError(
                    f"edge_features: expected a ({batch}, {n}, {n}, {self.edge_features}) tensor "
                    f"for a layer built with edge_features={self.edge_features}, received None"
                )
            expected["edge_features"] = (batch, n, n, self.edge_features)
            values["edge_features"] = edge_features
        elif edge_features is not None:
            raise ValueError(
                "edge_features: expected None for a layer built with edge_features=0, "
                "received a tensor"
            )
        for name, shape in expected.items():
            value = check_tensor(name, values[name])
            if tuple(value.shape) != shape or value.dtype != h.dtype:
                raise ValueError(
                    f"{name}: expected a {h.dtype} tensor of shape {shape}, received dtype "
                    f"{value.dtype} and shape {tuple(value.shape)}"
                )
        return h, edge_attr, node_attr, edge_features  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (
            f"hidden={self.irreps_hidden}, attr={self.irreps_attr}, "
            f"edge_features={self.edge_features}, aggregation={self.aggregation!r}"
        )
