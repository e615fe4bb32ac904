"""The relaxed layer ``y = f_eq(x) + level * f_free(x)`` and the functions that add it to a model.

``level`` is one scalar per layer (``theta`` in CR, arXiv 2408.13242; ``gamma`` in ACE,
arXiv 2505.13631). ``level = 0`` gives back the equivariant layer exactly; a strategy moves the
level during training. :func:`relax` wraps chosen layers of a model, :func:`relaxed_layers` lists
them, and :func:`equirelax.project` removes them again.

Where relaxation goes (SPEC 2.7): a model may declare its relaxation sites with a method
``relaxation_sites(placement) -> list of module names``. :func:`relax` then wraps exactly those
layers: ``placement="hidden"`` (the default: the hidden / update maps, as the official CR and ACE
code, never the input embedding, the output head or the maps inside a bilinear product) or
``"linear"`` (every linear map of the model, as RPP's paper, and the E-MLP's gated
nonlinearities, as RPP's official ``MixedEMLP``). ``placement="all"`` (and any model that
declares nothing) wraps every layer whose type has a registered free-branch factory, except
layer types whose ``relaxation_placements`` leave the placement out (a gated nonlinearity is
relaxed by ``"linear"`` and ``"all"`` only); ``select=`` overrides all of this.

A layer type owns its free branch: a method ``free_branch()`` returning a fresh branch module
(the layers of :mod:`equirelax.nn` have one). Layer types the library does not own get one by
:func:`register_free_branch`, which also overrides a method; a layer type with neither gets a
dense map on its flattened feature axis: built at once where the layer states its shapes
(``nn.Linear``), else a :class:`~equirelax.free_branches.LazyDenseFreeBranch`, whose weights are
PyTorch's ``UninitializedParameter`` until the first forward call gives them shapes (an
optimiser built before that call holds them, so no free parameter goes untrained).

Likewise a layer says how the group acts on its inputs and outputs through
``action_in`` / ``action_out`` attributes, or a registration does (:func:`layer_actions`).

e3nn's ``o3.Linear`` and ``o3.FullyConnectedTensorProduct`` are registered out of the box
(:mod:`equirelax.e3nn_interop`), lazily: the first lookup after e3nn has been imported adds
them (a model cannot hold an e3nn layer before), so ``import equirelax`` never imports e3nn.
A user's own registration for these types takes precedence.

Moves, casts and copies: a :class:`Relaxed` layer is ordinary module state (its level, its free
branch and the free branch's norm bound), so ``.to(device)``, ``.double()``, ``.half()``,
``copy.deepcopy`` and pickling work at any time; a level trained outside the optimiser stays a
leaf tensor through a cast, and a norm-bounded free branch pickles (PyTorch refuses to pickle
its parametrised modules). A state dict saved from a relaxed model, whatever a strategy did to
it (learnable levels, ACE's or RECM's norm-bounded free branches), loads with the ordinary
``load_state_dict`` into a freshly built ``relax()`` copy of the same model; so does the state
dict of its projection (:func:`equirelax.project`), which gives level 0 (see :class:`Relaxed`).
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from equirelax._batches import call, index
from equirelax._checks import batch_size, check_choice, check_finite_number, describe
from equirelax.free_branches import DenseFreeBranch, LazyDenseFreeBranch

if TYPE_CHECKING:
    from equirelax.actions import Action

__all__ = [
    "PLACEMENTS",
    "Relaxed",
    "build_free_branches",
    "layer_actions",
    "register_free_branch",
    "relax",
    "relaxation_sites",
    "relaxed_layers",
    "unbuilt_free_branches",
    "weight_tensors",
]

FreeBranchFactory = Callable[[nn.Module], "nn.Module | None"]
ActionsOf = Callable[[nn.Module], "tuple[Action, Action]"]
_FACTORIES: dict[type[nn.Module], FreeBranchFactory] = {}
_ACTIONS: dict[type[nn.Module], ActionsOf] = {}
_INTEROP_LOADED: set[str] = set()
_INITS = ("default", "zero", "small", "normal", "relative")
PLACEMENTS = ("hidden", "linear", "all")
"""Placement names of :func:`relax` (see the module docstring)."""
_NORM_BOUNDS = (None, "spectral", "frobenius")


def register_free_branch(
    layer_type: type[nn.Module], factory: FreeBranchFactory, *, actions: ActionsOf | None = None
) -> None:
    """Register ``factory(layer) -> free branch`` for layers of ``layer_type`` (for types
    without a ``free_branch`` method, e.g. from other libraries; it takes precedence over one).

    The factory may return ``None`` to ask for the default dense branch (see
    :class:`Relaxed`). Registered types, and types with a ``free_branch`` method, are what
    :func:`relax` selects by default. ``actions(layer) -> (action_in, action_out)``, if given,
    says how the group acts on such a layer's inputs and outputs (for types without ``action_in`` /
    ``action_out`` attributes): a :class:`Relaxed` layer then carries them, as CR and RECM
    need, and :func:`equirelax.assert_equivariant` uses them by default.
    """
    if not (isinstance(layer_type, type) and issubclass(layer_type, nn.Module)):
        raise TypeError(f"layer_type: expected an nn.Module subclass, received {layer_type!r}")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable layer -> free branch, received {factory!r}")
    if actions is not None and not callable(actions):
        raise TypeError(
            f"actions: expected a callable layer -> (action_in, action_out) or None, "
            f"received {actions!r}"
        )
    _FACTORIES[layer_type] = factory
    if actions is not None:
        _ACTIONS[layer_type] = actions


def _register_interop() -> None:
    """Register e3nn's layer types (:data:`equirelax.e3nn_interop.REGISTRATIONS`) once e3nn is
    loaded; registrations made before for these types are kept."""
    if "e3nn" in _INTEROP_LOADED or "e3nn" not in sys.modules:
        return
    _INTEROP_LOADED.add("e3nn")
    from equirelax.e3nn_interop import REGISTRATIONS

    for layer_type, (factory, actions) in REGISTRATIONS.items():
        _FACTORIES.setdefault(layer_type, factory)
        _ACTIONS.setdefault(layer_type, actions)


def _registered(table: dict[type[nn.Module], Any], layer: nn.Module) -> Any:
    """The entry of ``table`` for the layer's type or its nearest registered base type."""
    _register_interop()
    return next((table[cls] for cls in type(layer).__mro__ if cls in table), None)


def _factory_for(layer: nn.Module) -> FreeBranchFactory | None:
    """The factory registered for the layer's type (or a base type), else the layer type's own
    ``free_branch`` method, else ``None``."""
    factory = _registered(_FACTORIES, layer)
    if factory is not None:
        return factory
    method = getattr(type(layer), "free_branch", None)
    return method if callable(method) else None


def layer_actions(layer: nn.Module) -> tuple[Action | None, Action | None]:
    """``(action_in, action_out)`` of ``layer``: its ``action_in`` / ``action_out``
    attributes (``None`` where absent) if it has either, else the actions registered for its
    type (:func:`register_free_branch`; e.g. e3nn's ``o3.Linear`` acted on through its
    ``irreps_in`` / ``irreps_out``), else ``(None, None)``."""
    own = (getattr(layer, "action_in", None), getattr(layer, "action_out", None))
    if own != (None, None) or not isinstance(layer, nn.Module):
        return own
    actions = _registered(_ACTIONS, layer)
    return (None, None) if actions is None else actions(layer)


class Relaxed(nn.Module):
    """``y = equivariant(x) + level * free(x)``: an equivariant layer with a free branch.

    Parameters
    ----------
    equivariant:
        The equivariant layer ``f_eq``. Its actions (:func:`layer_actions`: its ``action_in``
        / ``action_out`` attributes or those registered for its type), if any, are forwarded
        so that metrics and strategies can check the relaxed layer.
    free:
        The unconstrained branch ``f_free`` with the same input and output structure. ``None``:
        use the factory registered for ``type(equivariant)`` or its ``free_branch()``, failing
        that a :class:`DenseFreeBranch` on the last ``feature_dims`` axes: built at once for
        an ``nn.Linear`` (``feature_dims=1``), else a :class:`LazyDenseFreeBranch` whose
        ``UninitializedParameter`` weights are materialised at the first forward call, from
        the input's and the equivariant output's shapes (an optimiser built before that call
        already holds them).
    level:
        Initial value of the relaxation level (a buffer named ``level``; see
        :meth:`set_level_learnable` to make it a parameter).
    init:
        ``"default"`` (PyTorch's init), ``"zero"`` (all free weights 0), ``"small"``
        (default init times ``init_scale``) or ``"normal"`` (CR's official init: the branch's
        output map bias-free, its weights drawn from ``N(0, init_scale^2)``; earlier maps of a
        multi-layer branch keep PyTorch's init so that the branch can still learn) or
        ``"relative"`` (RPP's official init: a dense branch of a layer that gives its dense
        matrices, ``dense_parameters()`` as :class:`~equirelax.nn.EquivariantLinear`, starts
        at ``init_scale`` times them, the official ``w_basic = 1e-3 * w_equiv``; any other
        branch keeps PyTorch's init rescaled so that the free weights' root-mean-square is
        ``init_scale`` times that of the equivariant layer's weights, as ``"small"`` for an
        equivariant layer without weights).
    norm_bound:
        ``None``, ``"spectral"`` (spectral normalisation of each free weight) or
        ``"frobenius"`` (each free weight rescaled to unit Frobenius norm); either way each free
        bias is kept at norm <= 1, so that the level carries the size of the deviation (needed
        by ACE).
    feature_dims:
        How many trailing axes the default dense free branch flattens (1: the feature axis of
        ``(..., d)`` inputs; the leading axes such as batch and nodes are shared).

    Notes
    -----
    Moves and casts (``.to(device)``, ``.double()``, ``.float()``, ``.half()``) apply to the
    level, the free branch and its norm bound like to any module state; a level trained
    outside the optimiser (a buffer that requires grad, ACE's ``"gradient"`` rule) stays a leaf
    tensor through them, and a learnable level stays the same ``nn.Parameter``. ``deepcopy``
    and pickling (``torch.save(model)``) keep a norm-bounded free branch bounded, with its
    spectral-norm state.

    ``load_state_dict`` (of the layer or of any model holding it) accepts what a freshly built
    layer cannot produce by itself: a state with a norm-bounded free branch (ACE's
    ``norm_bound``, RECM's Frobenius bound; the bound is taken from the saved keys), a saved
    free branch for a free branch that is still lazy (it gets the saved shapes), and the state
    of the projected layer (the equivariant layer's own keys, as :func:`equirelax.project`
    saves them; recognised by those keys, so an equivariant layer with no parameters or
    buffers needs its relaxed state): then the level is set to 0, the projected model's
    function, and the free branch is kept as it is.

    Examples
    --------
    >>> layer = Relaxed(nn.Identity(), nn.Linear(3, 3), level=0.5)
    >>> layer(torch.zeros(2, 3)).shape
    torch.Size([2, 3])
    """

    level: Tensor
    free: nn.Module

    def __init__(
        self,
        equivariant: nn.Module,
        free: nn.Module | None = None,
        *,
        level: float = 1.0,
        init: str = "default",
        init_scale: float = 1e-3,
        norm_bound: str | None = None,
        feature_dims: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(equivariant, nn.Module):
            raise TypeError(f"equivariant: expected an nn.Module, received {equivariant!r}")
        if free is not None and not isinstance(free, nn.Module):
            raise TypeError(f"free: expected an nn.Module or None, received {free!r}")
        check_choice("init", init, _INITS)
        check_choice("norm_bound", norm_bound, _NORM_BOUNDS)
        check_finite_number("level", level)
        self.equivariant = equivariant
        self.init = init
        self.init_scale = float(init_scale)
        self.norm_bound = norm_bound
        self.feature_dims = feature_dims
        self.register_buffer("level", torch.tensor(float(level)))
        if free is None:
            factory = _factory_for(equivariant)
            free = factory(equivariant) if factory is not None else None
        self._install_free(free if free is not None else _default_free(equivariant, feature_dims))
        for name, action in zip(
            ("action_in", "action_out"), layer_actions(equivariant), strict=True
        ):
            if action is not None:
                setattr(self, name, action)

    def _install_free(self, free: nn.Module) -> None:
        reference = next(
            (
                t
                for t in (*self.equivariant.parameters(), *self.equivariant.buffers())
                if t.is_floating_point()
            ),
            None,
        )
        if reference is not None:
            free = free.to(device=reference.device, dtype=reference.dtype)
        self.free = free
        if not self._free_unset:
            _initialise(free, self.init, self.init_scale, self.equivariant)
            _bound_norms(free, self.norm_bound)

    @property
    def free_is_lazy(self) -> bool:
        """Whether the free branch still waits for its shapes (a :class:`LazyDenseFreeBranch`
        before the layer's first forward call)."""
        return isinstance(self.free, LazyDenseFreeBranch)

    @property
    def _free_unset(self) -> bool:
        """A lazy free branch whose weights have no values yet: its init and norm bound wait."""
        return isinstance(self.free, LazyDenseFreeBranch) and self.free.has_uninitialized_params

    def configure_free(
        self,
        *,
        init: str | None = None,
        init_scale: float | None = None,
        norm_bound: str | None = None,
    ) -> None:
        """Re-initialise and/or norm-bound the free branch after construction.

        Strategies use this (ACE needs a norm bound, RPP a small initialisation). Applies to
        the free branch at once or, for a lazy one, when its first forward call builds it. A
        norm bound, once set, cannot be changed.
        """
        if init is not None:
            check_choice("init", init, _INITS)
        check_choice("norm_bound", norm_bound, _NORM_BOUNDS)
        if norm_bound is not None and self.norm_bound not in (None, norm_bound):
            raise ValueError(
                f"norm_bound: this layer is already bounded by {self.norm_bound!r}, "
                f"received {norm_bound!r}"
            )
        if init_scale is not None:
            self.init_scale = float(init_scale)
        if init is not None:
            self.init = init
            if not self._free_unset:
                _initialise(self.free, init, self.init_scale, self.equivariant)
        if norm_bound is not None and self.norm_bound is None:
            self.norm_bound = norm_bound
            if not self._free_unset:
                _bound_norms(self.free, norm_bound)

    def set_level_learnable(self, learnable: bool = True) -> None:
        """Turn ``level`` into an ``nn.Parameter`` (``learnable=True``) or back into a buffer."""
        value = self.level.detach().clone()
        del self.level
        if learnable:
            self.level = nn.Parameter(value)  # type: ignore[assignment]
        else:
            self.register_buffer("level", value)

    @property
    def level_is_learnable(self) -> bool:
        """Whether ``level`` is a parameter (owned by an optimiser) rather than a buffer."""
        return isinstance(self.level, nn.Parameter)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.equivariant(*args, **kwargs)
        if self.free_is_lazy:
            self._build_lazy_free(args, out)
        try:
            deviation = self.free(*args, **kwargs)
        except RuntimeError as error:  # torch's shape errors name no layer
            shapes = ", ".join(describe(a) for a in args)
            raise ValueError(
                f"free: the free branch {type(self.free).__name__} of "
                f"{type(self.equivariant).__name__} does not accept the layer's input ({shapes}): "
                f"{str(error).splitlines()[0]}"
            ) from error
        return _combine(out, deviation, self.level)

    def _build_lazy_free(self, args: tuple[Any, ...], out: Any) -> None:
        """Give the lazy dense branch the shapes of this first call (and, unless a state dict
        gave it values, PyTorch's init, then ``init`` and ``norm_bound``)."""
        if len(args) != 1 or not isinstance(args[0], Tensor) or not isinstance(out, Tensor):
            raise TypeError(
                f"free: {type(self.equivariant).__name__} takes or returns several tensors, so "
                "no default free branch can be built; pass free= or register a factory with "
                "equirelax.register_free_branch"
            )
        unset, k = self._free_unset, self.feature_dims
        branch = self.free
        assert isinstance(branch, LazyDenseFreeBranch)
        with torch.no_grad():
            branch.materialize(
                tuple(args[0].shape[-k:]), tuple(out.shape[-k:]), device=out.device, dtype=out.dtype
            )
        if unset:
            _initialise(branch, self.init, self.init_scale, self.equivariant)
            _bound_norms(branch, self.norm_bound)

    # ------------------------------------------------------------------ moves, copies, loads

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Relaxed:
        """``.to()``, ``.double()``, ...: as for any module, except that a level buffer that
        requires grad (trained outside the optimiser) stays a leaf tensor."""
        trained = "level" in self._buffers and self.level.requires_grad
        super()._apply(fn, recurse)
        if trained and not self.level.is_leaf:
            self.level = self.level.detach().requires_grad_(True)
        return self

    def __getstate__(self) -> dict[str, Any]:
        """Pickle (and deepcopy) a parametrised (norm-bounded) free branch as its plain module
        plus its parametrisations, since PyTorch refuses to pickle parametrised modules."""
        state = dict(self.__dict__)
        free = self._modules.get("free")
        if free is not None and any(parametrize.is_parametrized(m) for m in free.modules()):
            state["_modules"] = {**self._modules, "free": _unparametrized(free)}
            state["_free_parametrizations"] = [
                (path, name, chain.unsafe, list(chain))
                for path, module in free.named_modules()
                if parametrize.is_parametrized(module)
                for name, chain in module.parametrizations.items()
            ]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        chains = state.pop("_free_parametrizations", [])
        super().__setstate__(state)
        for path, name, unsafe, parametrizations in chains:
            module = self.free.get_submodule(path)
            for parametrization in parametrizations:  # unsafe: no forward call, state kept
                parametrize.register_parametrization(module, name, parametrization, unsafe=True)
            module.parametrizations[name].unsafe = unsafe

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Adapt this layer to the saved state (see the class notes) before PyTorch loads it;
        the children load after this call, so they see the adapted free branch and keys."""
        own = [key[len(prefix) :] for key in state_dict if key.startswith(prefix)]
        if own and "level" not in own and not any(k.startswith("equivariant.") for k in own):
            self._adopt_projected_state(state_dict, prefix, own)
        else:
            saved = {
                k[len("free.") :]: state_dict[prefix + k] for k in own if k.startswith("free.")
            }
            if saved:
                self._adopt_free_state(saved)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _adopt_projected_state(self, state: dict[str, Any], prefix: str, own: list[str]) -> None:
        """Read a projected layer's state as this layer's at level 0 with its free branch."""
        for key in own:
            state[f"{prefix}equivariant.{key}"] = state.pop(prefix + key)
        state[f"{prefix}level"] = torch.zeros_like(self.level)
        for key, value in self.free.state_dict(keep_vars=True).items():
            state[f"{prefix}free.{key}"] = value

    def _adopt_free_state(self, saved: dict[str, Any]) -> None:
        """Give a lazy free branch the saved shapes, and bound the free branch as the saved one
        was bounded."""
        if self._free_unset:
            weight = saved.get(
                "linear.weight", saved.get("linear.parametrizations.weight.original")
            )
            if isinstance(weight, Tensor) and weight.ndim == 2:
                assert isinstance(self.free, LazyDenseFreeBranch)
                self.free.allocate(*weight.shape, device=self.level.device, dtype=self.level.dtype)
        bound = _saved_norm_bound(saved)
        if bound is None or self.norm_bound is not None or self._free_unset:
            return
        if set(saved) != set(self.free.state_dict()):
            with _random_state_kept(self.free):  # spectral_norm draws its start vectors
                self.configure_free(norm_bound=bound)

    def extra_repr(self) -> str:
        kind = "learnable" if self.level_is_learnable else "buffer"
        return f"level={float(self.level.detach()):.4g} ({kind}), norm_bound={self.norm_bound}"


def _default_free(layer: nn.Module, feature_dims: int) -> nn.Module:
    """The dense free branch of a layer type without a factory: built from ``nn.Linear``'s
    stated shapes, else lazy (shapes from the first call)."""
    if feature_dims == 1 and isinstance(layer, nn.Linear) and layer.in_features > 0:
        return DenseFreeBranch((layer.in_features,), (layer.out_features,))
    return LazyDenseFreeBranch()


def _unparametrized(module: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` and its submodules without parametrisations, holding the
    same tensors (each parametrised tensor's unconstrained ``original``)."""
    parametrized = parametrize.is_parametrized(module)
    plain = object.__new__(parametrize.type_before_parametrizations(module))
    plain.__dict__.update(module.__dict__)
    plain._parameters = dict(module._parameters)
    if parametrized:
        for name, chain in module.parametrizations.items():
            plain._parameters[name] = chain.original
    plain._modules = {
        name: _unparametrized(child)
        for name, child in module._modules.items()
        if child is not None and not (parametrized and name == "parametrizations")
    }
    return plain


def _saved_norm_bound(keys: Iterable[str]) -> str | None:
    """The norm bound a free branch's saved state-dict keys show: ``"spectral"`` (its
    power-iteration vectors ``_u``), ``"frobenius"`` (parametrised tensors without them) or
    ``None``."""
    parametrized = [
        k for k in keys if k.startswith("parametrizations.") or ".parametrizations." in k
    ]
    if not parametrized:
        return None
    return "spectral" if any(k.endswith("._u") for k in parametrized) else "frobenius"


def _random_state_kept(module: nn.Module) -> contextlib.AbstractContextManager:
    """Restore the CPU's random state, and that of the accelerator holding ``module``, after
    the block (loading a state dict draws nothing from the user's random stream)."""
    accelerators = {p.device for p in module.parameters()} - {torch.device("cpu")}
    kinds = {device.type for device in accelerators} - {"meta"}
    if len(kinds) != 1:
        return torch.random.fork_rng(devices=[])
    (kind,) = kinds
    indices = sorted({device.index or 0 for device in accelerators if device.type == kind})
    return torch.random.fork_rng(devices=indices, device_type=kind)


def _combine(out: Any, deviation: Any, level: Tensor) -> Any:
    if isinstance(out, Tensor):
        if not isinstance(deviation, Tensor) or deviation.shape != out.shape:
            raise ValueError(
                "free: expected the free branch to return the equivariant layer's output shape "
                f"{tuple(out.shape)}, received {describe(deviation)}"
            )
        return out + level * deviation
    if isinstance(out, (tuple, list)):
        if not isinstance(deviation, (tuple, list)) or len(deviation) != len(out):
            raise ValueError(
                f"free: expected {len(out)} outputs like the equivariant layer, "
                f"received {describe(deviation)}"
            )
        return type(out)(_combine(o, d, level) for o, d in zip(out, deviation, strict=True))
    raise TypeError(f"equivariant: expected tensor or tuple outputs, received {type(out).__name__}")


def _weights(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, name) of every weight matrix / kernel of ``module`` (ndim >= 2)."""
    return [
        (m, name)
        for m in module.modules()
        for name, p in list(m.named_parameters(recurse=False))
        if p.ndim >= 2
    ]


def weight_tensors(module: nn.Module) -> list[Tensor]:
    """The weights of ``module``: its parameters whose qualified name holds no ``bias``
    (weight matrices, kernels, basis coefficients of equivariant maps)."""
    return [p for name, p in module.named_parameters() if "bias" not in name]


def _rms(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum(t.pow(2).sum() for t in tensors) / sum(t.numel() for t in tensors))


def _copy_dense(free: nn.Module, equivariant: nn.Module, scale: float) -> bool:
    """RPP's official init of a dense free branch, ``W_free = scale * W0``,
    ``b_free = scale * b0`` (``MixedLinear``: ``w_basic = 1e-3 * w_equiv``, ``b_basic = 1e-3 * b``),
    where the equivariant layer gives its dense matrices (``dense_parameters()``, e.g.
    :class:`~equirelax.nn.EquivariantLinear`) in the branch's shape; ``False`` elsewhere."""
    dense = getattr(equivariant, "dense_parameters", None)
    if not callable(dense) or not isinstance(free, DenseFreeBranch):
        return False
    weight, bias = dense()
    linear = free.linear
    if linear.weight.shape != weight.shape:
        return False
    linear.weight.copy_(scale * weight)
    if linear.bias is not None:
        linear.bias.copy_(torch.zeros_like(linear.bias) if bias is None else scale * bias)
    return True


def _initialise(free: nn.Module, init: str, scale: float, equivariant: nn.Module) -> None:
    if init == "default":
        return
    with torch.no_grad():
        if init == "relative":
            if _copy_dense(free, equivariant, scale):
                return
            reference, own = weight_tensors(equivariant), weight_tensors(free)
            factor: Tensor | float = scale
            if reference and own:  # else (a weightless equivariant layer): as "small"
                factor = scale * _rms(reference) / _rms(own).clamp_min(1e-30)
            for p in free.parameters():
                p.mul_(factor)
            return
        if init == "normal":
            module, name = _weights(free)[-1]  # the output map (modules are in call order)
            weight = getattr(module, name)  # drawn on the CPU: one seed, one branch on all devices
            weight.copy_(torch.empty(weight.shape, dtype=weight.dtype).normal_(0.0, scale))
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter):
                bias.zero_()
                bias.requires_grad_(False)  # bias-free: held at 0, never trained
            return
        for p in free.parameters():
            p.mul_(0.0 if init == "zero" else scale)


class _UnitFrobenius(nn.Module):
    """Parametrisation ``W -> W / ||W||_F``."""

    def forward(self, weight: Tensor) -> Tensor:
        return weight / torch.linalg.vector_norm(weight).clamp_min(1e-12)


class _AtMostUnit(nn.Module):
    """Parametrisation ``b -> b / max(1, ||b||)`` (biases of norm-bounded free branches)."""

    def forward(self, bias: Tensor) -> Tensor:
        return bias / torch.linalg.vector_norm(bias).clamp_min(1.0)


def _bound_norms(free: nn.Module, norm_bound: str | None) -> None:
    """Bound every weight (spectral or unit Frobenius norm) and every bias (norm <= 1), so the
    free branch's output size is set by its input and the level, not by its parameters."""
    if norm_bound is None:
        return
    biases = [
        (module, name)
        for module in free.modules()
        for name, p in module.named_parameters(recurse=False)
        if p.ndim == 1
    ]
    for module, name in _weights(free):
        if norm_bound == "spectral":  # on the CPU: its power iteration starts from random
            device = getattr(module, name).device  # vectors, which a seed then fixes everywhere
            spectral_norm(module.to("cpu"), name=name)
            module.to(device)
        else:
            parametrize.register_parametrization(module, name, _UnitFrobenius())
    for module, name in biases:
        parametrize.register_parametrization(module, name, _AtMostUnit())


Selector = type | tuple[type, ...] | Callable[[str, nn.Module], bool] | None


def relax(
    model: nn.Module,
    select: Selector = None,
    *,
    placement: str = "hidden",
    inplace: bool = False,
    example_input: Any = None,
    **options: Any,
) -> nn.Module:
    """Wrap the selected layers of ``model`` in :class:`Relaxed` layers.

    Parameters
    ----------
    select:
        A layer type, a tuple of types, or a predicate ``(name, module) -> bool``. ``None``
        uses ``placement``.
    placement:
        Used when ``select`` is ``None``: ``"hidden"`` (default) or ``"linear"`` relax the
        sites the model declares through ``model.relaxation_sites(placement)``; ``"all"``, or
        a model that declares no sites, relaxes every layer whose type has a registered
        free-branch factory (a layer type may limit that to some placements with a
        ``relaxation_placements`` attribute: a gated nonlinearity's residual pathway is RPP's,
        ``("linear", "all")``).
    inplace:
        Modify ``model`` itself instead of a deep copy.
    example_input:
        If given, run one forward pass (``model(*example_input)`` for a tuple), which gives
        lazy free branches (layers whose shapes only a call shows) their shapes now. Not needed
        for training: an optimiser built before that call already holds their parameters.
    options:
        Keyword arguments for :class:`Relaxed` (``level``, ``init``, ``norm_bound``, ...).
    """
    predicate = _selector(select) if select is not None else _placement(model, placement)
    if not inplace:
        model = copy.deepcopy(model)
    if predicate("", model):
        model = Relaxed(model, **options)
    else:
        _relax_children(model, "", predicate, options)
    if not relaxed_layers(model):
        what = f"select: {select!r}" if select is not None else f"placement: {placement!r}"
        raise ValueError(f"{what} matched no layer of the model")
    if example_input is not None:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    return model


def _relax_children(
    module: nn.Module, prefix: str, predicate: Callable[[str, nn.Module], bool], options: dict
) -> None:
    for name, child in module.named_children():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(child, Relaxed):
            continue
        if predicate(full, child):
            setattr(module, name, Relaxed(child, **options))
        else:
            _relax_children(child, full, predicate, options)


def relaxation_sites(model: nn.Module, placement: str = "hidden") -> list[str] | None:
    """The module names ``model`` declares for ``placement`` (``None``: it declares none, or
    ``placement="all"``); an error names a declared site the model does not have."""
    check_choice("placement", placement, PLACEMENTS)
    declare = getattr(model, "relaxation_sites", None)
    if placement == "all" or not callable(declare):
        return None
    sites = list(declare(placement))
    modules = dict(model.named_modules())
    missing = [name for name in sites if name not in modules]
    if missing:
        raise ValueError(
            f"placement: {type(model).__name__}.relaxation_sites({placement!r}) names "
            f"{missing}, which the model does not have"
        )
    return sites


def _placement(model: nn.Module, placement: str) -> Callable[[str, nn.Module], bool]:
    sites = relaxation_sites(model, placement)
    if sites is None:
        return lambda _, m: (
            _factory_for(m) is not None
            and placement in getattr(m, "relaxation_placements", PLACEMENTS)
        )
    chosen = set(sites)
    return lambda name, _: name in chosen


def _selector(select: Selector) -> Callable[[str, nn.Module], bool]:
    if isinstance(select, type) or (
        isinstance(select, tuple) and all(isinstance(t, type) for t in select)
    ):
        types = select
        return lambda _, m: isinstance(m, types)
    if callable(select):
        return select
    raise TypeError(
        f"select: expected a type, a tuple of types or a predicate, received {select!r}"
    )


def relaxed_layers(model: nn.Module) -> dict[str, Relaxed]:
    """Every :class:`Relaxed` layer of ``model`` by qualified name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Relaxed)}


def unbuilt_free_branches(model: nn.Module) -> list[str]:
    """Names of the relaxed layers of ``model`` whose free branch gets its shapes at their first
    forward call and has not had it yet (:attr:`Relaxed.free_is_lazy`)."""
    return [name for name, layer in relaxed_layers(model).items() if layer.free_is_lazy]


@torch.no_grad()
def build_free_branches(model: nn.Module, inputs: Any) -> None:
    """Build the lazily built free branches of ``model`` (:func:`unbuilt_free_branches`) by
    one forward pass on at most two samples of ``inputs`` (a tensor or a tuple of tensors),
    leaving torch's random state as it was; nothing runs when every branch exists."""
    if unbuilt_free_branches(model):
        state = torch.get_rng_state()
        call(model, index(inputs, torch.arange(min(2, batch_size(inputs)))))
        torch.set_rng_state(state)
