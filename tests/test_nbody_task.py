"""The charged N-body task (EGNN, arXiv:2102.09844; NRI simulator, Kipf et al. 2018): physics of
the simulator, reproducibility, symmetry of the data, the cache and input validation.

Tolerances (float64 simulations):

- energy: over 4000 steps, for systems where the force clipping never triggered, the median
  relative drift ``|E_T - E_0| / |E_0|`` is below ``ENERGY_MEDIAN_TOL`` (observed ~3e-4) and the
  90th percentile below ``ENERGY_P90_TOL`` (observed <= 7e-3; close encounters with
  ``dt = 0.001`` cost accuracy). Clipped systems do not conserve energy (median drift ~1).
- E(3) and permutations: over 1000 steps the transformed simulation matches the transformed
  trajectory to ``SYMMETRY_TOL`` (observed < 1e-11) for the systems where clipping triggered in
  neither frame (clipping acts per Cartesian component, so it is not rotation equivariant;
  it is permutation equivariant, but round-off grows in close encounters, so 90% of systems
  are required to match).
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from equirelax.actions import DirectSumAction, PermutationAction, PointAction
from equirelax.groups import O3, Euclidean, SymmetricGroup
from equirelax.tasks import Task, nbody_task, simulate
from equirelax.tasks import nbody as nbody_module
from equirelax.tasks._cache import cache_directory, cache_file
from equirelax.tasks.nbody import SYMMETRY, energy, initial_conditions

ENERGY_MEDIAN_TOL = 2e-3
ENERGY_P90_TOL = 5e-2
SYMMETRY_TOL = 1e-8
SMALL = {"train_size": 6, "val_size": 3, "test_size": 2, "progress": False}
CHEAP = {**SMALL, "frame_in": 2, "frame_out": 3}  # 400 steps: for cache and seed tests


def _unclipped(x, v, q, steps):
    """The trajectory with the default clipping and a mask of the systems it never touched."""
    pos, vel = simulate(x, v, q, steps=steps)
    free, _ = simulate(x, v, q, steps=steps, max_force=np.inf)
    return pos, vel, (pos == free).all(axis=(1, 2, 3))


def _permute(a, perm):
    """``a[s, perm[s, i]]`` along the particle axis (axis 1 of ``(S, N, d)``)."""
    return np.take_along_axis(a, perm[:, :, None], axis=1)


# --- physics ------------------------------------------------------------------------------------


def test_energy_is_conserved_where_the_force_is_not_clipped():
    x, v, q = initial_conditions(200, seed=0)
    pos, vel, unclipped = _unclipped(x, v, q, steps=4000)
    assert unclipped.sum() >= 50  # about half the systems never hit the clip in 4000 steps
    e = energy(pos, vel, q[:, None])  # (S, frames)
    drift = np.abs(e[:, -1] - e[:, 0]) / np.abs(e[:, 0])
    assert np.median(drift[unclipped]) < ENERGY_MEDIAN_TOL
    assert np.quantile(drift[unclipped], 0.9) < ENERGY_P90_TOL


def test_energy_matches_a_direct_sum():
    x, v, q = initial_conditions(3, num_particles=4, seed=1)
    expected = []
    for s in range(3):
        total = 0.5 * float((v[s] ** 2).sum())
        for i in range(4):
            for j in range(i + 1, 4):
                total += q[s, i, 0] * q[s, j, 0] / np.linalg.norm(x[s, i] - x[s, j])
        expected.append(total)
    np.testing.assert_allclose(energy(x, v, q), expected, rtol=1e-12)


@pytest.mark.parametrize(("charge", "sign"), [(1.0, 1.0), (-1.0, -1.0)])
def test_force_sign_magnitude_and_integrator_order(charge, sign):
    """Like charges repel, opposite charges attract; one step is ``v = dt F(x_0)``,
    ``x_1 = x_0 + dt v`` (the reference's initial kick, then drift)."""
    x = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    v = np.zeros_like(x)
    q = np.array([[[1.0], [charge]]])
    pos, vel = simulate(x, v, q, steps=1, sample_every=1, dt=0.01)
    force_on_first = -sign * 0.25  # q_0 q_1 (x_0 - x_1) / |x_0 - x_1|^3 = -sign / 4 along x
    np.testing.assert_allclose(vel[0, 1, 0], [0.01 * force_on_first, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(vel[0, 1, 1], -vel[0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(pos[0, 1], x[0] + 0.01 * vel[0, 1], atol=1e-15)
    distance = np.linalg.norm(pos[0, -1, 1] - pos[0, -1, 0])
    assert (distance > 2.0) if sign > 0 else (distance < 2.0)
    pos, _ = simulate(x, v, q, steps=300, sample_every=100)
    gaps = np.linalg.norm(pos[0, :, 1] - pos[0, :, 0], axis=-1)
    assert np.all(np.diff(gaps) * sign > 0)


def test_force_is_clipped_per_component():
    x = np.array([[[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]]])  # |F| = 400
    _, vel = simulate(x, np.zeros_like(x), np.ones((1, 2, 1)), steps=1, sample_every=1)
    np.testing.assert_allclose(vel[0, 1, :, 0], [-0.1, 0.1], rtol=1e-12)  # dt * 100
    _, vel = simulate(
        x, np.zeros_like(x), np.ones((1, 2, 1)), steps=1, sample_every=1, max_force=np.inf
    )
    np.testing.assert_allclose(vel[0, 1, :, 0], [-0.4, 0.4], rtol=1e-12)


def test_initial_conditions_follow_the_protocol():
    x, v, q = initial_conditions(4000, seed=2)
    assert x.shape == v.shape == (4000, 5, 3)
    assert q.shape == (4000, 5, 1)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 0.5, rtol=1e-12)
    assert set(np.unique(q)) == {-1.0, 1.0}
    assert abs(q.mean()) < 0.03
    assert abs(x.mean()) < 0.03
    assert abs(x.std() - 1.0) < 0.03


def test_simulate_frames_and_prefix_of_steps():
    """Frame k is the state after k * sample_every steps, whatever the total number of steps."""
    x, v, q = initial_conditions(5, seed=3)
    long_x, long_v = simulate(x, v, q, steps=600)
    short_x, short_v = simulate(x, v, q, steps=300)
    assert long_x.shape == (5, 7, 5, 3)
    np.testing.assert_array_equal(long_x[:, 0], x)
    np.testing.assert_array_equal(long_v[:, 0], v)
    np.testing.assert_array_equal(long_x[:, :4], short_x)
    np.testing.assert_array_equal(long_v[:, :4], short_v)
    alone_x, _ = simulate(x[2:3], v[2:3], q[2:3], steps=600)
    np.testing.assert_array_equal(alone_x, long_x[2:3])  # independent of the batch


# --- symmetry of the simulator ------------------------------------------------------------------


def test_simulation_is_e3_equivariant_without_clipping():
    steps = 1000
    x, v, q = initial_conditions(200, seed=4)
    g = Euclidean(O3(), translation_scale=3.0).sample(
        200, torch.Generator().manual_seed(0), dtype=torch.float64
    )
    rot = Euclidean(O3()).rotation(g).numpy()
    shift = Euclidean(O3()).translation(g).numpy()[:, None]
    assert (np.linalg.det(rot) < 0).any()  # reflections included
    pos, vel, free = _unclipped(x, v, q, steps)
    x_g = np.einsum("sij,snj->sni", rot, x) + shift
    v_g = np.einsum("sij,snj->sni", rot, v)
    pos_g, vel_g, free_g = _unclipped(x_g, v_g, q, steps)
    keep = free & free_g
    assert keep.mean() > 0.5
    expected_pos = np.einsum("sij,sfnj->sfni", rot, pos) + shift[:, None]
    expected_vel = np.einsum("sij,sfnj->sfni", rot, vel)
    np.testing.assert_allclose(pos_g[keep], expected_pos[keep], rtol=0, atol=SYMMETRY_TOL)
    np.testing.assert_allclose(vel_g[keep], expected_vel[keep], rtol=0, atol=SYMMETRY_TOL)


def test_simulation_is_permutation_equivariant():
    x, v, q = initial_conditions(200, seed=5)
    perm = np.stack([np.random.default_rng(i).permutation(5) for i in range(200)])
    pos, _ = simulate(x, v, q, steps=1000)
    pos_p, _ = simulate(_permute(x, perm), _permute(v, perm), _permute(q, perm), steps=1000)
    expected = np.take_along_axis(pos, perm[:, None, :, None], axis=2)
    err = np.abs(pos_p - expected).max(axis=(1, 2, 3))
    assert np.mean(err < SYMMETRY_TOL) >= 0.9


# --- the task -----------------------------------------------------------------------------------


def test_task_fields_and_actions(tmp_path):
    task = nbody_task(**SMALL, cache_dir=tmp_path)
    assert isinstance(task, Task)
    assert task.name == "nbody"
    assert task.metric_name == "mse"
    assert SYMMETRY == task.extra["symmetry"] == "E(3) x S_5"
    (pos, vel, charges), targets = task.train
    assert pos.shape == vel.shape == targets.shape == (6, 5, 3)
    assert charges.shape == (6, 5, 1)
    assert all(t.dtype == torch.float32 for t in (pos, vel, charges, targets))
    assert set(charges.unique().tolist()) <= {-1.0, 1.0}
    assert task.val[1].shape[0] == 3
    assert task.test is not None
    assert task.test[1].shape[0] == 2
    assert float(task.loss(targets, targets)) == 0.0

    group = Euclidean(O3())
    assert task.action_in.group == group
    assert isinstance(task.action_out, PointAction)
    g = group.sample(6, torch.Generator().manual_seed(1))
    rot, shift = group.rotation(g), group.translation(g)
    pos_g, vel_g, charges_g = task.action_in(g, task.train[0])
    torch.testing.assert_close(pos_g, pos @ rot.transpose(1, 2) + shift[:, None])
    torch.testing.assert_close(vel_g, vel @ rot.transpose(1, 2))  # velocities: no translation
    torch.testing.assert_close(charges_g, charges)
    torch.testing.assert_close(
        task.action_out(g, targets), targets @ rot.transpose(1, 2) + shift[:, None]
    )

    perm_in, perm_out = task.extra["permutation"]
    assert isinstance(perm_in, DirectSumAction)
    assert isinstance(perm_out, PermutationAction)
    assert perm_in.group == perm_out.group == SymmetricGroup(5)
    p = SymmetricGroup(5).sample(6, torch.Generator().manual_seed(2))
    moved = perm_in(p, task.train[0])
    rows = torch.arange(6)[:, None]
    for part, original in zip(moved, task.train[0], strict=True):
        torch.testing.assert_close(part[rows, p], original)  # (g . x)[g[i]] = x[i]
    torch.testing.assert_close(perm_out(p, targets)[rows, p], targets)


def test_task_targets_are_the_simulated_frames(tmp_path):
    task = nbody_task(**CHEAP, cache_dir=tmp_path)
    x, v, q = initial_conditions(6, seed=(0, 0))  # the train split's seed is (seed, 0)
    pos, vel = simulate(x, v, q, steps=400)
    (pos_in, vel_in, charges), targets = task.train
    # the reference's frame k is the state after 100 (k + 1) steps: frames 2, 3 -> steps 300, 400
    np.testing.assert_array_equal(pos_in.numpy(), pos[:, 3].astype(np.float32))
    np.testing.assert_array_equal(vel_in.numpy(), vel[:, 3].astype(np.float32))
    np.testing.assert_array_equal(charges.numpy(), q.astype(np.float32))
    np.testing.assert_array_equal(targets.numpy(), pos[:, 4].astype(np.float32))
    assert task.extra["steps"] == 400


def _tensors(task, split):
    inputs, targets = getattr(task, split)
    return (*inputs, targets)


def test_reproducible_seeds_and_prefix(tmp_path):
    a = nbody_task(**CHEAP, cache_dir=tmp_path / "a")
    b = nbody_task(**CHEAP, cache_dir=tmp_path / "b")  # regenerated, not loaded
    for split in ("train", "val", "test"):
        for ta, tb in zip(_tensors(a, split), _tensors(b, split), strict=True):
            assert torch.equal(ta, tb)
    c = nbody_task(**CHEAP, seed=1, cache_dir=tmp_path)
    assert not torch.equal(a.train[1], c.train[1])
    assert not torch.equal(a.train[1][:3], a.val[1])  # each split has its own seed

    big = nbody_task(**{**CHEAP, "train_size": 30}, cache_dir=tmp_path)
    for small_part, big_part in zip(a.train[0], big.train[0], strict=True):
        assert torch.equal(small_part, big_part[:6])
    assert torch.equal(a.train[1], big.train[1][:6])
    assert torch.equal(a.val[1], big.val[1])  # other splits do not depend on train_size

    x1, v1, q1 = initial_conditions(10, seed=7)
    x2, v2, q2 = initial_conditions(30, seed=7)
    for first, second in ((x1, x2), (v1, v2), (q1, q2)):
        np.testing.assert_array_equal(first, second[:10])


# --- cache --------------------------------------------------------------------------------------


def test_cache_is_loaded_without_simulating(tmp_path, monkeypatch):
    first = nbody_task(**CHEAP, cache_dir=tmp_path)
    files = sorted(f.name for f in tmp_path.iterdir())
    assert [f for f in files if f.endswith(".npz")] == sorted(
        Path(f).name for f in first.extra["cache_files"].values()
    )
    assert [f for f in files if not f.endswith((".npz", ".lock"))] == []  # no temporary files

    def fail(*args, **kwargs):
        raise AssertionError("simulate was called although the cache exists")

    monkeypatch.setattr(nbody_module, "simulate", fail)
    start = time.perf_counter()
    second = nbody_task(**CHEAP, cache_dir=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(first.test[1], second.test[1])
    assert first.extra["cache_files"] == second.extra["cache_files"]


def test_cache_name_depends_on_every_parameter(tmp_path):
    task = nbody_task(**CHEAP, cache_dir=tmp_path)
    path = task.extra["cache_files"]["train"]
    with np.load(path) as stored:
        params = json.loads(str(stored["params"]))
    for key in (
        "format_version", "num_particles", "frame_in", "frame_out", "dt", "sample_every",
        "steps", "max_force", "loc_std", "vel_norm", "seed", "generator", "split", "size",
    ):  # fmt: skip
        assert key in params

    def name(p: dict) -> str:
        return cache_file(tmp_path, f"nbody-{p['split']}-{p['size']}", p).name

    assert name(params) == Path(path).name
    names = {name(params)}
    for key, value in params.items():
        changed = value + "x" if isinstance(value, str) else value * 2 + 1
        names.add(name({**params, key: changed}))
    assert len(names) == len(params) + 1

    other = {
        "seed": 1,
        "frame_in": 1,
        "frame_out": 4,
        "num_particles": 4,
        "train_size": 7,
    }
    for key, value in other.items():
        changed = nbody_task(**{**CHEAP, key: value}, cache_dir=tmp_path)
        assert changed.extra["cache_files"]["train"] != path, key


def test_corrupt_cache_is_regenerated(tmp_path):
    task = nbody_task(**CHEAP, cache_dir=tmp_path)
    path = task.extra["cache_files"]["val"]
    data = Path(path).read_bytes()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])  # a partial write
    with pytest.raises(zipfile.BadZipFile):
        np.load(path)["targets"]
    with pytest.warns(RuntimeWarning, match="cache"):
        again = nbody_task(**CHEAP, cache_dir=tmp_path)
    assert torch.equal(again.val[1], task.val[1])
    assert np.load(path)["targets"].shape == (3, 5, 3)  # rewritten

    np.savez(path, targets=np.zeros(3))  # a foreign file under the same name
    with pytest.warns(RuntimeWarning, match="cache"):
        again = nbody_task(**CHEAP, cache_dir=tmp_path)
    assert torch.equal(again.val[1], task.val[1])


def test_cache_directory_precedence(tmp_path, monkeypatch):
    resolve = cache_directory
    monkeypatch.setenv("EQUIRELAX_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve(tmp_path / "arg") == tmp_path / "arg"
    assert resolve(None) == tmp_path / "env"
    monkeypatch.delenv("EQUIRELAX_CACHE")
    assert resolve(None) == tmp_path / "xdg" / "equirelax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve(None) == tmp_path / "home" / ".cache" / "equirelax"


# --- input validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"train_size": -1}, "train_size"),
        ({"train_size": 0}, "train_size"),
        ({"val_size": -5}, "val_size"),
        ({"test_size": -1}, "test_size"),
        ({"num_particles": 1}, "num_particles"),
        ({"frame_in": -1}, "frame_in"),
        ({"frame_in": 30, "frame_out": 30}, "frame_out"),
        ({"frame_in": 30, "frame_out": 20}, "frame_out"),
        ({"seed": -1}, "seed"),
    ],
)
def test_task_rejects_bad_arguments(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        nbody_task(**{**SMALL, **kwargs}, cache_dir=tmp_path)


def test_task_rejects_bad_types(tmp_path):
    with pytest.raises(TypeError, match="train_size"):
        nbody_task(train_size=2.5, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="cache_dir"):
        nbody_task(**SMALL, cache_dir=3)


def test_simulate_rejects_bad_inputs():
    x, v, q = initial_conditions(2, seed=0)
    cases = [
        ((x[0], v, q), {"steps": 100}, "positions"),
        ((x[..., :2], v, q), {"steps": 100}, "positions"),
        ((x, v[:, :4], q), {"steps": 100}, "velocities"),
        ((x, v, q[..., 0]), {"steps": 100}, "charges"),
        ((x, v, q[:1]), {"steps": 100}, "charges"),
        ((x, v, q), {"steps": 150}, "steps"),
        ((x, v, q), {"steps": 0}, "steps"),
        ((x, v, q), {"steps": 100, "dt": 0.0}, "dt"),
        ((x, v, q), {"steps": 100, "max_force": -1.0}, "max_force"),
        ((x, v, q), {"steps": 100, "sample_every": 0}, "sample_every"),
        ((x * np.nan, v, q), {"steps": 100}, "positions"),
    ]
    for args, kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            simulate(*args, **kwargs)
    with pytest.raises(TypeError, match="positions"):
        simulate([[0.0]], v, q, steps=100)
    with pytest.raises(ValueError, match="charges"):
        energy(x, v, q[..., :3, :])
    with pytest.raises(ValueError, match="seed"):
        initial_conditions(3, seed=-2)
    with pytest.raises(ValueError, match="num_systems"):
        initial_conditions(0, seed=0)


def test_simulate_accepts_tensors():
    x, v, q = initial_conditions(2, seed=0)
    pos, _ = simulate(torch.from_numpy(x), torch.from_numpy(v), torch.from_numpy(q), steps=100)
    np.testing.assert_array_equal(pos, simulate(x, v, q, steps=100)[0])


# The first training system of the EGNN repository's nbody_small files, from its own simulator
# (github.com/vgsatorras/egnn, n_body_system/dataset: np.random.seed(43), ChargedParticlesSim
# (noise_var=0, n_balls=5, vel_norm=0.5).sample_trajectory(T=5000, sample_freq=100)), at
# frames 30 (positions, velocities) and 40 (positions), particles as rows; its charges were
# [-1, 1, -1, -1, -1].
EGNN_FIRST_POSITIONS_30 = [
    [2.989116317166655, 1.7693701204465262, -1.1712942795381607],
    [0.06995112699594831, 0.11228359246320845, 1.3656530512661111],
    [-0.9238757220080382, 0.6131790103122096, 1.3339073366756902],
    [0.3920945581339576, 0.2990995581732736, -1.7798811766294882],
    [-0.05206918373568528, -2.6627322017803485, -1.7504374012291943],
]
EGNN_FIRST_VELOCITIES_30 = [
    [1.1338110406668451, 0.39568061256371995, -0.22660657308868634],
    [-0.0570647040548398, 0.34777561521443145, 0.44538905812257457],
    [-0.2253070079646826, -0.1388227001170665, 0.5830045162802407],
    [-0.18940130946643147, 0.30410254035607515, -0.7416207003427772],
    [0.07705715020473165, -0.7990492554037132, -0.5727229037810229],
]
EGNN_FIRST_POSITIONS_40 = [
    [4.1654998367653935, 2.191309138415654, -1.3826188023600456],
    [-0.549322315126418, 0.5470967935416903, 1.8077873644485798],
    [-0.5968713104822592, 0.39296191465155966, 1.905819621015626],
    [0.17929104582269279, 0.6260655409674976, -2.524870663959486],
    [0.01571500895905927, -3.5165464953480843, -2.3207265914093873],
]


def test_egnn_generator_gives_the_reference_files_first_system(tmp_path):
    task = nbody_task(
        train_size=2, val_size=1, test_size=1, generator="egnn", cache_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    (positions, velocities, charges), targets = task.train
    expected = torch.tensor(EGNN_FIRST_POSITIONS_30)
    torch.testing.assert_close(positions[0], expected.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(velocities[0], torch.tensor(EGNN_FIRST_VELOCITIES_30).float(),
                               atol=1e-6, rtol=0)  # fmt: skip
    torch.testing.assert_close(targets[0], torch.tensor(EGNN_FIRST_POSITIONS_40).float(),
                               atol=1e-6, rtol=0)  # fmt: skip
    assert charges[0, :, 0].tolist() == [-1.0, 1.0, -1.0, -1.0, -1.0]
    assert task.extra["seed"] == 43
    assert task.extra["generator"] == "egnn"
    # validation and test come after the reference's 10000 training draws: not the train prefix
    assert not torch.equal(task.val[0][0][0], positions[0])
    assert not torch.equal(task.test[0][0][0], task.val[0][0][0])


def test_egnn_initial_conditions_are_prefixes_and_bounded():
    small = nbody_module.egnn_initial_conditions({"train": 3, "val": 2})
    large = nbody_module.egnn_initial_conditions({"train": 5, "val": 4})
    for split, size in (("train", 3), ("val", 2)):
        for a, b in zip(small[split], large[split], strict=True):
            np.testing.assert_array_equal(a, b[:size])
    _, velocities, charges = large["val"]
    np.testing.assert_allclose(np.linalg.norm(velocities, axis=-1), 0.5)
    assert set(np.unique(charges)) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match=r"sizes\['val'\].*at most.*2000.*2001"):
        nbody_module.egnn_initial_conditions({"val": 2001})
    with pytest.raises(ValueError, match=r"train_size.*10000.*10001"):
        nbody_task(train_size=10001, val_size=1, generator="egnn", progress=False)
    with pytest.raises(ValueError, match=r"generator.*'nrI'"):
        nbody_task(train_size=1, val_size=1, generator="nrI", progress=False)
