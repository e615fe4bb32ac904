"""The PyTorch Lightning integration (issue 21): every strategy in a real ``Trainer`` on the
CPU, resumed from a Lightning checkpoint to the state of an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("lightning")

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

import equirelax
from _toy import vector_model, vector_task
from equirelax.integrations.lightning import STATE_KEY, RelaxedLightningModule
from equirelax.strategies import ACE, CR, RECM, STRATEGIES, Strategy

TASK = vector_task(n_train=64, n_val=32, offset=0.5)
BATCH = 16
STEPS_PER_EPOCH = 64 // BATCH
FRESH_GENERATOR = torch.Generator().manual_seed(0).get_state()  # vector_model seeds torch with 0


def _loader(split: tuple[torch.Tensor, torch.Tensor]) -> DataLoader:
    return DataLoader(TensorDataset(*split), batch_size=BATCH)


def _module(strategy: Strategy, **options) -> RelaxedLightningModule:
    if strategy.holds_out_data:
        options.setdefault("probe_dataloader", _loader(TASK.val))
    return RelaxedLightningModule(
        vector_model(),
        strategy,
        nn.functional.mse_loss,
        action_in=TASK.action_in,
        action_out=TASK.action_out,
        **options,
    )


def _trainer(max_epochs: int, checkpoints: Path | None = None, **options) -> Trainer:
    callbacks = options.pop("callbacks", [])
    if checkpoints is not None:
        callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="last"))
    return Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoints is not None,
        callbacks=callbacks,
        **options,
    )


def _fit(strategy: Strategy, max_epochs: int, **options) -> tuple[RelaxedLightningModule, Trainer]:
    checkpoints, resume = options.pop("checkpoints", None), options.pop("ckpt_path", None)
    module = _module(strategy, epochs=3)  # the plan: 3 epochs, stopped after max_epochs
    trainer = _trainer(max_epochs, checkpoints, **options)
    trainer.fit(module, _loader(TASK.train), ckpt_path=resume, weights_only=True)
    return module, trainer


def _moved(strategy: Strategy) -> bool:
    return not torch.equal(strategy.generator.get_state(), FRESH_GENERATOR)


# What each strategy must have done in 3 epochs (12 optimiser steps) at its class defaults.
ACTED = {
    "strict": lambda s: not equirelax.relaxed_layers(s.model),  # it trained the projection
    "free": lambda s: s.log()["levels"] == [1.0, 1.0],
    "augment": _moved,  # it drew group elements for the batches
    "cr": lambda s: s.epoch == 3 and s.log()["penalty"] > 0,  # the schedule ran to its end
    "rpp": lambda s: s.log()["free_prior_term"] > 0,
    "penalty": lambda s: _moved(s) and s.log()["equivariance_error"] > 0,
    "ace-equality": lambda s: all(m != 0 for m in s.log()["multipliers"]),
    "ace-resilient": lambda s: all(m > 0 for m in s.log()["multipliers"]),
    "recm": lambda s: s.probes == 12 // s.every and all(v != 1.0 for v in s.log()["levels"]),
}


def _strategy(name: str) -> Strategy:
    if name.startswith("ace-"):
        return ACE(mode=name.removeprefix("ace-"))
    return STRATEGIES[name]()


def _state(module: RelaxedLightningModule) -> dict[str, object]:
    log = module.strategy.log()
    return {
        "levels": log["levels"],
        "multipliers": log.get("multipliers"),
        "slacks": log.get("slacks"),
        "model": module.model.state_dict(),
    }


@pytest.mark.parametrize("name", list(ACTED))
def test_a_resumed_run_ends_as_an_uninterrupted_one(name: str, tmp_path: Path) -> None:
    _fit(_strategy(name), 2, checkpoints=tmp_path)
    resumed, trainer = _fit(_strategy(name), 3, ckpt_path=tmp_path / "last.ckpt")
    uninterrupted, _ = _fit(_strategy(name), 3)
    assert trainer.global_step == 3 * STEPS_PER_EPOCH
    a, b = _state(resumed), _state(uninterrupted)
    assert a["levels"] == b["levels"]
    assert a["multipliers"] == b["multipliers"]
    assert a["slacks"] == b["slacks"]
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert ACTED[name](resumed.strategy), resumed.strategy.log()


def test_the_strategy_steps_after_every_optimiser_step() -> None:
    """RECM counts ``after_step`` calls: one per optimiser step, also when gradients are
    accumulated over two batches."""
    module = _module(RECM(every=1))
    trainer = _trainer(2, accumulate_grad_batches=2)
    trainer.fit(module, _loader(TASK.train))
    assert trainer.global_step == STEPS_PER_EPOCH
    assert module.strategy.steps == STEPS_PER_EPOCH


class _LevelsDuringEpochs(Callback):
    """Records the levels the first step of every epoch trains with."""

    def __init__(self) -> None:
        self.levels: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.levels.append(pl_module.strategy.log()["levels"])


def test_cr_trains_each_epoch_at_its_scheduled_level() -> None:
    """The triangular schedule over T = 4 epochs: theta = 2e/T up to T/2, then 2 - 2e/T,
    and 0 after the last epoch."""
    recorder = _LevelsDuringEpochs()
    module = _module(CR())
    _trainer(4, callbacks=[recorder]).fit(module, _loader(TASK.train))
    assert recorder.levels == [[theta] * 2 for theta in (0.0, 0.5, 1.0, 0.5)]
    assert module.strategy.log()["levels"] == [0.0, 0.0]


def test_recm_probes_on_the_held_out_batches_only() -> None:
    held_out = (torch.randn(24, 12), torch.randn(24, 3))
    module = _module(RECM(), probe_dataloader=DataLoader(TensorDataset(*held_out), batch_size=10))
    _trainer(1).fit(module, _loader(TASK.train))
    inputs, targets = module.strategy._probe
    assert torch.equal(inputs, held_out[0])
    assert torch.equal(targets, held_out[1])


def test_held_out_data_goes_only_to_a_strategy_that_holds_it_out() -> None:
    with pytest.raises(ValueError, match=r"probe_dataloader: recm.*received None"):
        _module(RECM(), probe_dataloader=None)
    with pytest.raises(ValueError, match="probe_dataloader: ace keeps no held-out data"):
        _module(ACE(), probe_dataloader=_loader(TASK.val))
    with pytest.raises(ValueError, match="inputs: ace keeps no held-out data"):
        ACE().use_held_out_data(*TASK.val)


def test_bad_arguments_and_batches_are_named() -> None:
    loss = nn.functional.mse_loss
    with pytest.raises(TypeError, match=r"model: expected an nn\.Module, received str"):
        RelaxedLightningModule("model", ACE(), loss)
    with pytest.raises(TypeError, match="strategy: expected an equirelax Strategy"):
        RelaxedLightningModule(vector_model(), "ace", loss)
    with pytest.raises(TypeError, match="loss_fn: expected a callable"):
        RelaxedLightningModule(vector_model(), ACE(), "mse")
    with pytest.raises(ValueError, match="epochs: expected an int >= 1, received 0"):
        RelaxedLightningModule(vector_model(), ACE(), loss, epochs=0)
    with pytest.raises(ValueError, match="lr: expected"):
        RelaxedLightningModule(vector_model(), ACE(), loss, lr=-1.0)
    inputs_only = DataLoader(TensorDataset(TASK.train[0]), batch_size=BATCH)
    with pytest.raises(ValueError, match=r"batch: expected \(inputs, targets\) batches"):
        _trainer(1).fit(_module(ACE()), inputs_only)


def test_validation_scores_the_model_the_strategy_evaluates() -> None:
    """ACE-equality is evaluated projected (level := 0): ``val_loss`` is the projected model's
    loss, not the relaxed one's."""
    module = _module(ACE())
    trainer = _trainer(1)
    trainer.fit(module, _loader(TASK.train), _loader(TASK.val))
    x, y = TASK.val
    with torch.no_grad():
        projected = nn.functional.mse_loss(equirelax.project(module.model)(x), y)
        relaxed = nn.functional.mse_loss(module.model(x), y)
    assert float(trainer.callback_metrics["val_loss"]) == pytest.approx(float(projected))
    assert float(projected) != pytest.approx(float(relaxed))


def test_a_checkpoint_of_another_strategy_or_plan_is_refused(tmp_path: Path) -> None:
    _fit(ACE(), 1, checkpoints=tmp_path)
    checkpoint = tmp_path / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)[STATE_KEY]["name"] == "ace"
    with pytest.raises(ValueError, match="strategy 'ace', received 'recm'"):
        _fit(RECM(), 2, ckpt_path=checkpoint)
    module = _module(CR())  # its plan is max_epochs: 1 in the checkpoint, 2 when resumed
    _trainer(1, tmp_path / "cr").fit(module, _loader(TASK.train))
    module = _module(CR())
    with pytest.raises(ValueError, match="epochs=2, received epochs=1"):
        _trainer(2).fit(module, _loader(TASK.train), ckpt_path=tmp_path / "cr" / "last.ckpt")


def test_a_lazy_free_branch_trains_with_or_without_an_example_input() -> None:
    from equirelax.free_branches import LazyDenseFreeBranch

    for example in (None, TASK.train[0][:2]):
        torch.manual_seed(0)
        model = nn.Sequential(equirelax.Relaxed(nn.Linear(12, 3), LazyDenseFreeBranch()))
        module = RelaxedLightningModule(model, STRATEGIES["free"](), nn.functional.mse_loss)
        module.example_input_array = example
        module.attach_strategy()  # what setup does (once)
        assert model[0].free_is_lazy is (example is None)
        _trainer(1).fit(module, _loader(TASK.train))
        assert not model[0].free_is_lazy
        assert model[0].free.linear.weight.grad is not None  # the optimiser stepped it


def test_ace_trains_under_double_precision_cast_by_lightning() -> None:
    for mode in ("equality", "resilient"):
        module = _module(STRATEGIES["ace"](mode=mode))
        _trainer(1, precision="64-true").fit(module, _loader(TASK.train))
        assert module.strategy.multipliers().dtype == torch.float64
        assert all(p.dtype == torch.float64 for p in module.model.parameters())
        assert torch.isfinite(module.strategy.multipliers()).all()
        projected = equirelax.project(module.model)
        assert next(projected.parameters()).dtype == torch.float64
