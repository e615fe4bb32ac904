"""The training engine: outputs, checkpoints that load with weights_only=True, bitwise resume,
non-finite loss detection, every strategy end to end, and 2-process DDP (gloo) against 1."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import equirelax
from _toy import InterruptError, interrupt_at, vector_model, vector_task
from equirelax.engine import CHECKPOINT, METRICS, NonFiniteLossError, TrainConfig
from equirelax.strategies import ACE, STRATEGIES, Free

TESTS = Path(__file__).parent
SMALL = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "progress": False}


def _run(strategy, task=None, **kwargs):
    options = {**SMALL, **kwargs}
    return equirelax.train(vector_model(), strategy, task or vector_task(), **options)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_trains_and_reports(name, tmp_path):
    result = _run(STRATEGIES[name](), out_dir=tmp_path)
    lines = (tmp_path / METRICS).read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[-1])
    for key in ("epoch", "train_loss", "val", "equivariance_error", "epoch_seconds", "lr"):
        assert key in record, key
    assert record == result.history[-1]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    if name in ("strict", "cr", "ace"):  # evaluated after projection: exactly equivariant
        assert record["equivariance_error"] < 1e-10
        assert not equirelax.relaxed_layers(result.evaluation_model)
        # the relaxed model's metric beside the evaluated one (strict trains the projection)
        assert ("val_relaxed" in record) == (name != "strict")
    else:  # evaluated as trained: val is the trained model's own
        assert "val_relaxed" not in record


def test_checkpoint_loads_with_weights_only(tmp_path):
    _run(ACE("resilient"), vector_task(offset=0.5), out_dir=tmp_path, lr_schedule="cosine")
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1
    assert set(state) >= {"model", "optimiser", "scheduler", "strategy", "rng", "config"}
    assert "slacks" in state["strategy"]
    assert "multipliers" in state["strategy"]["problem"]
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    options = {
        "epochs": 4,
        "lr_schedule": "cosine",
        "seed": 3,
        "batch_size": 48,
        "lr": 3e-3,
        "progress": False,
    }
    game = {"mode": "resilient", "dual_lr": 0.05, "level_lr": 0.1, "dual_optimizer": "nupi"}
    task = vector_task(offset=0.5)
    whole = equirelax.train(vector_model(), ACE(**game), task, out_dir=tmp_path / "a", **options)
    with pytest.raises(InterruptError):
        equirelax.train(
            vector_model(), interrupt_at(ACE(**game), 2), task, out_dir=tmp_path / "b", **options
        )
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=True)["epoch"] == 1
    resumed = equirelax.train(
        vector_model(), ACE(**game), task, out_dir=tmp_path / "b", resume=True, **options
    )
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert torch.equal(whole.strategy.multipliers(), resumed.strategy.multipliers())
    assert torch.equal(whole.strategy.slacks, resumed.strategy.slacks)
    history = [json.loads(line) for line in (tmp_path / "b" / METRICS).read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[-1]["val"] == whole.history[-1]["val"]


class _NaNAt(Free):
    """Returns a NaN objective at one (epoch, step)."""

    def __init__(self, epoch, step):
        super().__init__()
        self.target, self.epoch, self.step = (epoch, step), 0, 0

    def on_epoch_start(self, epoch):
        self.epoch, self.step = epoch, 0

    def loss(self, task_loss, model, inputs, outputs):
        bad = (self.epoch, self.step) == self.target
        self.step += 1
        return task_loss * float("nan") if bad else task_loss


def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1") as caught:
        _run(_NaNAt(2, 1), epochs=4, out_dir=tmp_path)
    assert str(tmp_path / CHECKPOINT) in str(caught.value)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_seeded_runs_repeat_and_seeds_differ():
    first, again = _run(Free(), seed=5), _run(Free(), seed=5)
    other = _run(Free(), seed=6)
    assert first.history[-1]["train_loss"] == again.history[-1]["train_loss"]
    assert first.history[-1]["train_loss"] != other.history[-1]["train_loss"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("lr_schedule", "step"), ("seed", 0.5),
     ("lr_scale", {"layer": 0.0}), ("lr_scale", ["layer"]), ("lr", True), ("lr", math.inf),
     ("weight_decay", math.inf), ("weight_decay", -1.0), ("max_grad_norm", math.nan),
     ("epochs", 10**20), ("lr_scale", {"layer": True}), ("device", "banana"), ("device", "meta")],
)  # fmt: skip
def test_bad_config_is_rejected_by_name(field, value):
    with pytest.raises((ValueError, TypeError), match=field):
        TrainConfig(**{field: value})


def test_lr_scale_gives_matching_parameters_their_own_learning_rate():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 4), torch.nn.Linear(4, 3))
    model[0].bias.requires_grad_(False)  # frozen parameters are left out of the optimiser
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(epochs=1, batch_size=50, lr=1e-3, lr_scale={"1.": 10.0, "1.weight": 100.0})
    equirelax.train(model, Free(), vector_task(), config, progress=False)
    after = list(model.parameters())
    steps = [float((p.detach() - b).abs().max()) for p, b in zip(after, before, strict=True)]
    # Adam moves a coordinate by about lr per step: lr 1e-3 for layer 0's weight, 1e-2 for
    # layer 1's bias (prefix "1."), 0.1 for its weight (the longer prefix "1.weight" wins)
    assert steps[1] == 0.0
    assert 5 * steps[0] < steps[3] < 0.2 * steps[2]
    with pytest.raises(ValueError, match=r"lr_scale: expected prefixes .* \['head.'\]"):
        equirelax.train(model, Free(), vector_task(), config, lr_scale={"head.": 2.0})


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match="strategy"):
        equirelax.train(vector_model(), "ace", vector_task())
    with pytest.raises(ValueError, match="out_dir"):
        equirelax.train(vector_model(), Free(), vector_task(), resume=True)


def _launch(args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [*args, str(TESTS / "distributed_ace.py"), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_process_ace_matches_one_process(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    _launch([*torchrun, "--nproc_per_node=2"], tmp_path / "two")
    _launch([sys.executable], tmp_path / "one")
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ranks[0]["multipliers"] == ranks[1]["multipliers"]  # bitwise, on both ranks
    assert ranks[0]["levels"] == ranks[1]["levels"]
    assert ranks[0]["weights"] == ranks[1]["weights"]
    for key in ("multipliers", "levels"):
        torch.testing.assert_close(
            torch.tensor(ranks[0][key]), torch.tensor(single[key]), atol=1e-5, rtol=1e-4
        )
    for key, value in single["weights"].items():
        torch.testing.assert_close(
            torch.tensor(ranks[0]["weights"][key]), torch.tensor(value), atol=1e-5, rtol=1e-4
        )
    assert (tmp_path / "two" / "run" / CHECKPOINT).exists()


def test_ace_levels_and_slacks_are_primal_parameters_of_the_engines_optimiser():
    """The official rule: the engine's Adam (and its gradient clipping, which runs over the
    optimiser's parameter groups) owns every level and the resilient slacks."""
    from equirelax.engine.loop import _parameter_groups

    ace = ACE("resilient")
    model = ace.attach(vector_model())
    owned = {
        id(p) for group in _parameter_groups(model, ace, TrainConfig()) for p in group["params"]
    }
    levels = [layer.level for layer in equirelax.relaxed_layers(model).values()]
    assert all(id(level) in owned for level in levels)
    assert id(ace.slacks) in owned
