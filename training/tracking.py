"""Where the loop's figures go: Accelerate's trackers (TensorBoard, ...) and `metrics.jsonl` in the output folder.

    metrics = MetricsLog(accelerator, output_dir, run_name="wren", tracker_config=config_dict)
    metrics.start()                               # trackers, once
    metrics.log({"train/loss": 2.31}, step=10)    # both sinks; the file only on the main process
    metrics.truncate(step=8)                      # after resuming at step 8: drop what the lost run wrote later

`LossWindow` pools the training loss and token counts between two log steps and reduces them across
processes when they are logged.
"""

import json
import os
import time
from pathlib import Path

import torch

from ..paths import METRICS_FILE


class MetricsLog:
    """The metrics file and the trackers of one run."""

    def __init__(self, accelerator, output_dir: str | os.PathLike, run_name: str, tracker_config: dict):
        self.accelerator = accelerator
        self.path = Path(output_dir) / METRICS_FILE
        self.run_name = run_name
        self.tracker_config = tracker_config

    def start(self) -> None:
        """Start the trackers (once) with the run's settings as flat hyper-parameters."""
        acc = self.accelerator
        if not acc.trackers and acc.log_with:
            flat = {
                k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                for k, v in self.tracker_config.items()
                if v is not None
            }
            acc.init_trackers(self.run_name, config=flat)

    def log(self, metrics: dict, step: int) -> None:
        """To the trackers and `metrics.jsonl` (main process)."""
        self.accelerator.log(metrics, step=step)
        if not self.accelerator.is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": step, **metrics}) + "\n")

    def truncate(self, step: int) -> None:
        """After resuming at `step`, forget records the interrupted run wrote past it."""
        if not self.accelerator.is_main_process or not self.path.exists():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


class LossWindow:
    """Training loss (per optimizer step) and tokens since the last log step."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss = 0.0
        self.steps = 0
        self.tokens = 0
        self.start = time.perf_counter()

    def add_batch(self, batch: dict) -> None:
        mask = batch.get("attention_mask")
        # Kept on the device until the log step: int() here would stall every micro-batch on a GPU.
        self.tokens += mask.sum() if mask is not None else batch["input_ids"].numel()

    def add_step(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.steps += 1

    def logs(self, accelerator, lr: float, epoch: int, grad_norm) -> tuple[dict, int]:
        """(`train/*` figures, tokens of all processes) for the window; call on every process."""
        seconds = time.perf_counter() - self.start
        loss = torch.as_tensor(self.loss, device=accelerator.device, dtype=torch.float32).reshape(())
        loss = accelerator.reduce(loss, reduction="mean") / max(self.steps, 1)
        tokens = int(accelerator.reduce(torch.as_tensor(self.tokens, device=accelerator.device), reduction="sum"))
        logs = {
            "train/loss": float(loss),
            "train/lr": float(lr),
            "train/tokens_per_s": tokens / max(seconds, 1e-9),
            "train/epoch": epoch,
        }
        if grad_norm is not None:
            logs["train/grad_norm"] = float(grad_norm)
        return logs, tokens


__all__ = ["METRICS_FILE", "LossWindow", "MetricsLog"]
