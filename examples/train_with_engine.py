"""The same O(3) regression as strategy_in_plain_loop.py, trained by ``equirelax.train``.

The engine runs the strategy's hooks around its own Adam loop, evaluates every epoch (the
relaxed model, its projection, the equivariance error of the model the strategy evaluates),
appends one JSON line per epoch to ``out_dir/metrics.jsonl`` and writes ``out_dir/checkpoint.pt``.
Part 1 trains Strict, CR and ACE and prints their last records. Part 2 stops a CR run at the
start of an epoch, as a killed job would, continues it with ``resume=True`` and checks that the
weights equal those of the uninterrupted CR run of part 1.

Run: python examples/train_with_engine.py   (about 20 s on 2 CPU cores; files go to a
temporary directory that is deleted at the end)
"""

import json
import tempfile
from pathlib import Path

import torch

# the data and the relaxed model of the plain-loop example (same directory)
from strategy_in_plain_loop import ACTION_IN, ACTION_OUT, make_data, make_model

import equirelax
from equirelax.strategies import ACE, CR, Strict
from equirelax.tasks import Task

EPOCHS = 150
OPTIONS = {"epochs": EPOCHS, "batch_size": 128, "lr": 3e-3, "lr_schedule": "cosine"}
# A 150-epoch run is far shorter than ACE's published ~60k steps: equirelax's gradient-descent
# level rule with a fast nuPI dual on spectrally bounded branches settles within it (the class
# defaults are the official rule).
GAME = {
    "level_rule": "gradient",
    "norm_bound": "spectral",
    "dual_lr": 0.1,
    "dual_optimizer": "nupi",
    "kp": 10.0,
    "level_lr": 0.1,
}


class KilledAt(CR):
    """CR that raises at the start of epoch ``stop``: stands in for a killed job."""

    def __init__(self, stop: int) -> None:
        super().__init__()
        self.stop = stop

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.stop:
            raise KeyboardInterrupt
        super().on_epoch_start(epoch)


def main() -> None:
    data = torch.Generator().manual_seed(0)
    task = Task(
        name="vectors",
        train=make_data(512, data),
        val=make_data(256, data),
        action_in=ACTION_IN,
        action_out=ACTION_OUT,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        # part 1: one call per strategy; result.final is the last line of metrics.jsonl
        results = {}
        strategies = {
            "strict": Strict(),
            "cr": CR(),  # the engine passes epochs=EPOCHS to attach: no CR(epochs=...) needed
            "cr-weight10": CR(weight=10.0),
            "ace": ACE(**GAME),
        }
        for name, strategy in strategies.items():
            result = equirelax.train(
                make_model(), strategy, task, out_dir=out / name, progress=False, **OPTIONS
            )
            results[name] = result
        print(f"{'strategy':<14}{'val MSE':>9}{'equivariance error':>20}   final levels")
        for name, result in results.items():
            final, levels = result.final, result.final.get("levels", [])
            print(
                f"{name:<14}{final['val']:>9.3f}{final['equivariance_error']:>20.2e}   "
                f"{[float(f'{v:.1e}') for v in levels]}"
            )
        records = [json.loads(line) for line in (out / "ace" / "metrics.jsonl").open()]
        print(f"\nace/metrics.jsonl: {len(records)} lines, keys {', '.join(records[0])}")
        for r in records[:: EPOCHS // 5] + records[-1:]:
            levels, multipliers = (
                ", ".join(f"{v:+.3f}" for v in r[k]) for k in ("levels", "multipliers")
            )
            print(
                f"  epoch {r['epoch']:>3}: val {r['val']:.3f}  levels {levels}  "
                f"multipliers {multipliers}"
            )

        # part 2: a CR run killed at the start of epoch 75, then continued with resume=True
        run = out / "cr-resumed"
        try:
            equirelax.train(
                make_model(), KilledAt(75), task, out_dir=run, progress=False, **OPTIONS
            )
        except KeyboardInterrupt:
            saved = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
            print(f"killed at epoch 75; the checkpoint holds epoch {saved}")
        resumed = equirelax.train(
            make_model(), CR(), task, out_dir=run, resume=True, progress=False, **OPTIONS
        )
        whole = results["cr"].model.state_dict()
        same = all(torch.equal(v, whole[k]) for k, v in resumed.model.state_dict().items())
        epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").open()]
        print(
            f"resumed: metrics.jsonl has epochs {epochs[0]}..{epochs[-1]} ({len(epochs)} lines); "
            f"weights equal to the uninterrupted run: {same}"
        )


if __name__ == "__main__":
    main()
