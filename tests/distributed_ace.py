"""ACE through the training engine, run as ``python distributed_ace.py OUT`` (one process) or
under ``torchrun --nproc_per_node=2`` (gloo); each rank writes ``OUT/rank{r}.json`` with its
final levels, multipliers and a copy of every weight, for tests/test_engine.py to compare."""

import json
import sys
from pathlib import Path

import torch

import equirelax
from _toy import vector_model, vector_task
from equirelax.strategies import ACE

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    ace = ACE("equality", dual_lr=0.05, dual_optimizer="nupi", kp=5.0, level_lr=0.1)
    result = equirelax.train(
        vector_model(),
        ace,
        vector_task(n_train=64, n_val=16),
        epochs=3,
        batch_size=16,
        lr=3e-3,
        seed=7,
        progress=False,
        out_dir=out / "run",
    )
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    record = {
        "levels": ace.log()["levels"],
        "multipliers": ace.log()["multipliers"],
        "weights": {k: v.tolist() for k, v in result.model.state_dict().items()},
    }
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
