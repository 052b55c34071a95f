"""Subprocess entry for the resume and multi-process tests.

    python pretrain_worker.py SETTINGS_JSON [--kill-after-step K] [--expect-processes N [--expect-engine TYPE]]
                              [--dump-shards DIR] [--report-partitions PREFIX]

Runs `run_pretraining` with the given settings; `--kill-after-step` sends SIGKILL to this very
process right after optimizer step K (no cleanup, no flush: a hard crash). `--expect-engine` is
Accelerate's distributed type (default: MULTI_CPU or NO). `--dump-shards` writes, at
the end of training, what each rank holds (`shards_rank{R}.json`: every parameter's global and local
shape and placements, and the local shapes of its optimizer state) and the parameters gathered with
`DTensor.full_tensor()` (`gathered.safetensors`, rank 0). `--report-partitions` writes what DeepSpeed's
partitions hold on each process to PREFIX.rankN.json at the end of training.
"""

import argparse
import json
import os
import signal
from pathlib import Path

import torch

torch.set_num_threads(1)

# Imported after the thread count is set.
import wrenlm  # noqa: F401
from wrenlm.training.accelerator import make_accelerator
from wrenlm.training.callbacks import TrainerCallback
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining


class ReportPartitions(TrainerCallback):
    def __init__(self, prefix: str):
        self.prefix = prefix

    def on_train_end(self, trainer):
        from wrenlm.training.deepspeed_engine import partition_numels

        path = f"{self.prefix}.rank{trainer.accelerator.process_index}.json"
        with open(path, "w") as handle:
            json.dump(partition_numels(trainer.model), handle)


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class DumpShards(TrainerCallback):
    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_train_end(self, trainer):
        from safetensors.torch import save_file
        from torch.distributed.tensor import DTensor

        rank = trainer.accelerator.process_index
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        report, gathered = {}, {}
        for name, param in trainer.model.named_parameters():
            sharded = isinstance(param, DTensor)
            local = param.to_local() if sharded else param
            state = optimizer.state.get(param, {})
            report[name] = {
                "global": list(param.shape),
                "local": list(local.shape),
                "placements": [f"{type(p).__name__}({getattr(p, 'dim', '')})" for p in param.placements]
                if sharded
                else [],
                "optimizer_local": {
                    k: list((v.to_local() if isinstance(v, DTensor) else v).shape)
                    for k, v in state.items()
                    if torch.is_tensor(v) and v.dim()
                },
            }
            full = param.full_tensor() if sharded else param  # a collective: every rank, same order
            if rank == 0:
                gathered[name] = full.detach().clone()
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"shards_rank{rank}.json").write_text(json.dumps(report))
        if rank == 0:
            save_file(gathered, self.folder / "gathered.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--expect-processes", type=int)
    parser.add_argument("--expect-engine")
    parser.add_argument("--dump-shards")
    parser.add_argument("--report-partitions")
    args = parser.parse_args()
    config = apply_overrides(PretrainConfig(), json.loads(args.settings))
    accelerator = make_accelerator(config)
    if args.expect_processes is not None:
        assert accelerator.num_processes == args.expect_processes, accelerator.num_processes
        engines = (args.expect_engine,) if args.expect_engine else ("MULTI_CPU", "NO")
        assert accelerator.state.distributed_type.value in engines, accelerator.state.distributed_type
    callbacks = [KillAfterStep(args.kill_after_step)] if args.kill_after_step else []
    if args.dump_shards:
        callbacks.append(DumpShards(args.dump_shards))
    if args.report_partitions:
        callbacks.append(ReportPartitions(args.report_partitions))
    run_pretraining(config, callbacks=callbacks, accelerator=accelerator)


if __name__ == "__main__":
    main()
