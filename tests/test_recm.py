"""RECM (equirelax's formulation): the recurrent rule's algebra, the exact Haar projection of
dense free branches, and the properties of section 2.3 of the spec on tasks whose gap is a
known knob: levels end below 1e-3 on symmetric data with no projection step, and on gap-dial
the final levels grow with delta and stay below the stated bound ``sqrt(gain * gap)``."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import equirelax
from _toy import VECTOR, vector_model, vector_task
from equirelax.actions import RepresentationAction
from equirelax.engine import CHECKPOINT, METRICS
from equirelax.experiments import model_registry
from equirelax.gap import group_average
from equirelax.metrics import equivariance_error
from equirelax.nn import EquivariantLinear
from equirelax.strategies import RECM
from equirelax.tasks import gap_dial_task

F64 = torch.float64
QUICK = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "progress": False}


def _attached(**options: object) -> tuple[RECM, torch.nn.Module]:
    strategy = RECM(**options)
    task = vector_task()
    model = strategy.attach(vector_model(), action_in=task.action_in, action_out=task.action_out)
    strategy.split_training_data(*task.train)
    return strategy, model


def test_rule_decays_geometrically_without_benefit_and_reaches_its_target_with_one() -> None:
    strategy, model = _attached(alpha=0.2, beta=0.5, gain=4.0, z=0.0)
    layers = list(equirelax.relaxed_layers(model).values())
    assert [float(layer.level) for layer in layers] == [1.0, 1.0]  # starts relaxed
    for t in range(1, 31):
        strategy.update(torch.tensor([-0.1, 0.05]), torch.zeros(2))
        assert math.isclose(float(layers[0].level), 0.8**t, rel_tol=1e-6)
    # layer 1: target gain * 0.05 = 0.2; the level contracts towards it by (1 - alpha)
    assert abs(float(layers[1].level) - 0.2) < 0.8**30 + 1e-6
    assert strategy.log()["targets"] == pytest.approx([0.0, 0.2])


def test_lower_confidence_bound_holds_the_level_at_zero_for_noisy_benefits() -> None:
    strategy, model = _attached(alpha=0.5, z=2.0)
    layers = list(equirelax.relaxed_layers(model).values())
    # a mean benefit of 0.01 with standard error 0.01: not significant at z = 2
    for _ in range(60):
        strategy.update(torch.tensor([0.01, 0.01]), torch.tensor([1e-4, 1e-4]))
    assert all(float(layer.level) < 1e-12 for layer in layers)
    _, bound = strategy.statistics()
    assert torch.allclose(bound, torch.full((2,), -0.01, dtype=F64))


def test_exact_projection_of_a_dense_free_branch_matches_the_group_average() -> None:
    strategy, model = _attached()
    name, layer = next(iter(equirelax.relaxed_layers(model).items()))
    layer.double()
    h = torch.randn(64, 12, dtype=F64)
    exact = strategy._asymmetric_part(name, layer, (h,), {})
    strategy._projectors[name] = None  # force the Monte-Carlo path
    strategy.num_elements = 4000
    sampled = strategy._asymmetric_part(name, layer, (h,), {})
    assert (exact - sampled).norm() / exact.norm() < 0.1
    # the asymmetric part is what the group average removes: averaging it again leaves ~0
    action = layer.action_in
    averaged = group_average(layer.free, h, action, layer.action_out, num_elements=4000)
    assert torch.allclose(
        exact, layer.free(h) - averaged, atol=0.1 * float(exact.detach().abs().max())
    )


def test_an_equivariant_free_branch_has_no_asymmetric_part_and_no_benefit() -> None:
    strategy, model = _attached()
    layers = equirelax.relaxed_layers(model)
    with torch.no_grad():
        for name, layer in layers.items():
            weight = layer.free.linear.parametrizations.weight.original
            projector, bias_projector = strategy._projectors[name]
            weight.copy_(projector(weight))
            bias = layer.free.linear.parametrizations.bias.original
            bias.copy_(bias_projector(bias.unsqueeze(-1)).squeeze(-1))
    benefit, error = strategy.benefits()
    assert torch.all(benefit.abs() < 1e-6), benefit
    assert torch.all(error < 1e-10)


def test_state_round_trip_and_validation() -> None:
    strategy, _ = _attached()
    strategy.update(torch.tensor([0.2, -0.1]), torch.tensor([1e-4, 1e-4]))
    state = strategy.state_dict()
    fresh = RECM()
    fresh.load_state_dict(state)
    assert fresh.probes == 1
    assert torch.equal(fresh.mean, strategy.mean)
    with pytest.raises(ValueError, match="benefit: expected"):
        strategy.update(torch.tensor([float("nan"), 0.0]), torch.zeros(2))
    with pytest.raises(ValueError, match="holdout"):
        RECM(holdout=1.0)
    with pytest.raises(ValueError, match="gain"):
        RECM(gain=-1.0)
    with pytest.raises(ValueError, match="every"):
        RECM(every=0)
    lonely = RECM()
    task = vector_task()
    lonely.attach(vector_model(), action_in=task.action_in, action_out=task.action_out)
    with pytest.raises(RuntimeError, match="split_training_data"):
        lonely.benefits()
    with pytest.raises(ValueError, match="RECM needs Relaxed layers"):
        RECM().attach(torch.nn.Linear(3, 3))


def test_recm_holds_out_a_probe_set_and_trains_on_the_rest(tmp_path) -> None:
    task = vector_task(n_train=100)
    result = equirelax.train(vector_model(), RECM(holdout=0.2), task, out_dir=tmp_path, **QUICK)
    inputs, _ = result.strategy._probe
    assert inputs.shape[0] == 20
    held = {tuple(row.tolist()) for row in inputs}
    assert len(held & {tuple(row.tolist()) for row in task.train[0]}) == 20
    record = json.loads((tmp_path / METRICS).read_text().splitlines()[-1])
    assert {"levels", "benefits", "gap_estimates", "targets"} <= set(record)
    assert result.evaluation_model is result.model  # evaluated as trained, never projected


def test_resume_is_bitwise_identical(tmp_path) -> None:
    task = vector_task(offset=0.5)
    options = {**QUICK, "epochs": 4, "seed": 2}
    whole = equirelax.train(vector_model(), RECM(every=1), task, out_dir=tmp_path / "a", **options)
    equirelax.train(
        vector_model(), RECM(every=1), task, out_dir=tmp_path / "b", **{**options, "epochs": 2}
    )
    state = torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1
    # continue the 2-epoch run as a 4-epoch run: the checkpoint's config differs only in
    # epochs, and the learning rate is constant, so the result must match the 4-epoch run
    resumed = equirelax.train(
        vector_model(), RECM(every=1), task, out_dir=tmp_path / "b", resume=True, **options
    )
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(whole.strategy.mean, resumed.strategy.mean)


def _gap_dial_run(delta: float, seed: int) -> tuple[list[float], list[float], float]:
    task = gap_dial_task(delta=delta, train_size=500, val_size=200, test_size=2, seed=seed)
    torch.manual_seed(seed)
    # two blocks: the default placement relaxes each block's linear map, and the break is
    # expressed past the first block (a one-block E-MLP relaxes only its input map)
    model = equirelax.relax(model_registry.build("emlp", task, num_layers=2))
    strategy = RECM(every=2)  # a 270-step run: probe twice as often as the default
    result = equirelax.train(
        model, strategy, task, epochs=30, batch_size=50, lr=3e-3, lr_schedule="cosine",
        seed=seed, progress=False,
    )  # fmt: skip
    levels = equirelax.strategies.base.levels(result.model)
    error = equivariance_error(
        result.model, task.val[0][:64], task.action_in, task.action_out, dtype=F64,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    return levels, strategy.gap_estimates(), error.mean


@pytest.mark.slow
def test_levels_vanish_on_symmetric_data_and_grow_with_the_gap_below_their_bound() -> None:
    deltas, seeds = (0.0, 0.5, 1.0, 2.0), (0, 1)
    runs = {(d, s): _gap_dial_run(d, s) for d in deltas for s in seeds}
    for seed in seeds:  # symmetric data: every level below 1e-3, equivariant as trained
        levels, _, error = runs[(0.0, seed)]
        assert max(levels) < 1e-3, levels
        assert error < 1e-3
    mean_levels = [
        sum(sum(runs[(d, s)][0]) / len(runs[(d, s)][0]) for s in seeds) / len(seeds) for d in deltas
    ]
    assert all(a < b for a, b in itertools.pairwise(mean_levels)), mean_levels
    gain = RECM().gain
    for levels, gaps, _ in runs.values():
        for level, gap in zip(levels, gaps, strict=True):
            assert level <= 1.1 * math.sqrt(gain * gap) + 1e-3, (level, gap)


def test_recm_refuses_layers_without_actions() -> None:
    layer = equirelax.Relaxed(torch.nn.Linear(3, 3), torch.nn.Linear(3, 3))
    model = torch.nn.Sequential(layer)
    with pytest.raises(ValueError, match="RECM needs action_in and action_out"):
        RECM().attach(model)
    action = RepresentationAction(VECTOR)
    ok = equirelax.relax(torch.nn.Sequential(EquivariantLinear(VECTOR, VECTOR)))
    RECM().attach(ok, action_in=action, action_out=action)


class _RecordingRECM(RECM):
    """RECM that records every batch the training loop steps the optimiser on."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.trained_rows: list[torch.Tensor] = []

    def transform_batch(self, inputs, targets):
        self.trained_rows.append(inputs.detach().clone())
        return super().transform_batch(inputs, targets)


def test_held_out_probe_samples_never_reach_the_optimiser() -> None:
    task = vector_task(n_train=100)
    strategy = _RecordingRECM(holdout=0.2, every=1)
    equirelax.train(vector_model(), strategy, task, **QUICK)
    probe = {tuple(row.tolist()) for row in strategy._probe[0]}
    trained = {tuple(row.tolist()) for batch in strategy.trained_rows for row in batch}
    assert len(probe) == 20
    assert not probe & trained
    assert trained | probe == {tuple(row.tolist()) for row in task.train[0]}
