"""CUDA checks: every strategy and model trains on a GPU as it does on the CPU.

Skipped without a CUDA device (CI has none). On a GPU machine:
``python -m pytest -q tests/test_cuda.py`` (and ``-m compile`` for the compiled case).

The model's and the free branches' initialisation, the data order and the group elements the
strategies draw (:meth:`equirelax.groups.Group.sample`) all come from CPU generators, so a run on
``cuda`` follows its run on the CPU up to float32 rounding: two epochs agree to ``RTOL``. (On an
H200 these tests found CR's and ACE's free branches drawn from the GPU's generator.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from equirelax.experiments.cli import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

RTOL = 1e-3  # two epochs of float32 training, reduced in another order on the GPU
ATOL_EQUIVARIANCE = 1e-5  # float32 equivariance errors, near 0 on both devices

# (task, model, strategy): every default strategy on EGNN, the SEGNN and E-MLP arms of the
# claims, the penalty, RECM, ACE's modes and the canonicalized MLP.
CASES = [
    *(
        ("nbody", "egnn", s)
        for s in ("strict", "free", "augment", "cr", "rpp", "penalty", "ace-equality")
    ),
    ("nbody", "egnn", "ace-resilient"),
    ("nbody", "segnn", "strict"),
    ("nbody", "segnn", "cr"),
    ("nbody", "segnn", "ace-equality"),
    ("nbody", "canon-mlp", "strict"),
    ("inertia", "emlp", "recm"),
    ("inertia", "emlp", "rpp"),
    ("modified-inertia", "emlp", "ace-inequality"),
    ("gap-dial", "emlp", "recm"),
]
# (task, model, strategy, its options): settings away from the defaults that draw at random,
# and the official E-MLP's layers
OPTION_CASES = [
    ("nbody", "egnn", "ace-equality", ("--option", "norm_bound=spectral")),
    (
        "modified-inertia",
        "emlp",
        "rpp",
        ("--model-option", "bilinear=official", "--model-option", "linear=projected"),
    ),
]


def _train(
    capsys: pytest.CaptureFixture[str], out: Path, task: str, model: str, strategy: str, *extra: str
) -> dict:
    words = ["train", task, "--model", model, "--strategy", strategy, "--epochs", "2"]
    words += ["--eval-every", "1", "--quiet", "--json", "--out", str(out), *extra]
    capsys.readouterr()
    assert main(words) == 0
    return json.loads(capsys.readouterr().out)


def _assert_same_run(cpu: dict, cuda: dict) -> None:
    """The two records' training loss, validation and test metrics and levels agree."""
    keys = ("train_loss", "val", "best_val", "test", "test_final", "test_relaxed")
    for key in (k for k in keys if k in cpu["final"]):  # test_relaxed: strategies that project
        assert math.isfinite(cuda["final"][key]), key
        assert cuda["final"][key] == pytest.approx(cpu["final"][key], rel=RTOL), key
    assert cuda["final"]["equivariance_error"] == pytest.approx(
        cpu["final"]["equivariance_error"], abs=ATOL_EQUIVARIANCE
    )
    assert cuda["final"]["levels"] == pytest.approx(cpu["final"]["levels"], rel=RTOL, abs=1e-6)


@pytest.mark.parametrize(
    ("task", "model", "strategy", "options"),
    [(*case, ()) for case in CASES] + OPTION_CASES,
)
def test_training_on_cuda_follows_the_cpu_run(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    task: str,
    model: str,
    strategy: str,
    options: tuple[str, ...],
) -> None:
    cpu = _train(capsys, tmp_path / "cpu", task, model, strategy, *options)
    cuda = _train(capsys, tmp_path / "cuda", task, model, strategy, *options, "--device", "cuda")
    assert cuda["config"]["device"] == "cuda"
    _assert_same_run(cpu, cuda)


def test_a_cuda_run_resumes_on_the_cpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A checkpoint written on the GPU continues on the CPU (and the run ends as one
    uninterrupted run on the CPU)."""
    # ACE-equality at a constant lr: a run planned for 1 epoch continues to 2
    run = ("nbody", "egnn", "ace-equality", "--lr-schedule", "constant")
    whole = _train(capsys, tmp_path / "whole", *run)
    _train(capsys, tmp_path / "moved", *run, "--epochs", "1", "--device", "cuda")
    resumed = _train(capsys, tmp_path / "moved", *run, "--resume")
    assert resumed["config"]["device"] == "cpu"
    _assert_same_run(whole, resumed)


def test_compare_runs_jobs_side_by_side_on_one_gpu(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    words = ["compare", "nbody", "--strategies", "strict,cr", "--epochs", "1", "--jobs", "2"]
    assert main([*words, "--device", "cuda", "--quiet", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["machine"]["gpu"]
    assert [r["strategy"] for r in results["runs"]] == ["strict", "cr"]
    assert all(math.isfinite(r["final"]["test"]) for r in results["runs"])


@pytest.mark.compile
def test_compiled_training_on_cuda_follows_the_eager_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    eager = _train(capsys, tmp_path / "eager", "nbody", "segnn", "cr", "--device", "cuda")
    compiled = _train(
        capsys, tmp_path / "compiled", "nbody", "segnn", "cr", "--device", "cuda", "--compile"
    )
    _assert_same_run(eager, compiled)
