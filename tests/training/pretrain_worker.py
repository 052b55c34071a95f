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

from wrenlm.training.accelerator import make_accelerator  # noqa: E402  (after the thread count)
from wrenlm.training.callbacks import TrainerCallback  # noqa: E402
from wrenlm.training.config import PretrainConfig, apply_overrides  # noqa: E402
from wrenlm.training.pretrain import run_pretraining  # noqa: E402

import wrenlm  # noqa: E402, F401


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
