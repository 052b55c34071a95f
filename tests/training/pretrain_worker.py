"""Subprocess entry for the resume and multi-process tests.

    python pretrain_worker.py SETTINGS_JSON [--kill-after-step K] [--expect-processes N]

Runs `run_pretraining` with the given settings; `--kill-after-step` sends SIGKILL to this very
process right after optimizer step K (no cleanup, no flush: a hard crash).
"""

import argparse
import json
import os
import signal

import torch

torch.set_num_threads(1)

# Imported after the thread count is set.
from wrenlm.training.accelerator import make_accelerator
from wrenlm.training.callbacks import TrainerCallback
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining

import wrenlm  # noqa: F401


class KillAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("settings")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--expect-processes", type=int)
    args = parser.parse_args()
    config = apply_overrides(PretrainConfig(), json.loads(args.settings))
    accelerator = make_accelerator(config)
    if args.expect_processes is not None:
        assert accelerator.num_processes == args.expect_processes, accelerator.num_processes
        assert accelerator.state.distributed_type.value in ("MULTI_CPU", "NO"), accelerator.state.distributed_type
    callbacks = [KillAfterStep(args.kill_after_step)] if args.kill_after_step else []
    run_pretraining(config, callbacks=callbacks, accelerator=accelerator)


if __name__ == "__main__":
    main()
