"""The hooks the training loop calls; subclass `TrainerCallback` and override the ones you need.

Per training step, in order: `forward_kwargs` once before its first micro-batch (extra arguments for
the model's forward), `on_micro_batch_end` after each micro-batch's backward pass,
`on_optimizer_step` once the optimizer has stepped, then (on log steps) `on_log` before the figures
are written, then `on_step_end`. `on_evaluate` follows each evaluation and `on_save` each checkpoint.
Every hook runs on every process, so a hook may use collectives (e.g. `accelerator.reduce`).
"""

from pathlib import Path


class TrainerCallback:
    """Override any hook; each gets the trainer (its `state`, `accelerator`, `model`, `config`)."""

    def on_train_begin(self, trainer) -> None: ...

    def forward_kwargs(self, trainer, step: int, logging: bool) -> dict:
        """Extra keyword arguments for the model's forward on every micro-batch of the coming training step `step`;
        `logging`: whether this step's figures will be logged (so output needed only for the log can be asked
        for then alone)."""
        return {}

    def on_micro_batch_end(self, trainer, outputs) -> None:
        """After the backward pass of each micro-batch; `outputs` is the model's output for it."""

    def on_optimizer_step(self, trainer) -> None:
        """After the optimizer step of every training step (gradients cleared, the step count not yet advanced)."""

    def on_log(self, trainer, step: int, logs: dict) -> None:
        """On log steps, before `logs` (this step's `train/*` figures) is written; add entries to it here."""

    def on_step_end(self, trainer, step: int, logs: dict) -> None:
        """After every optimizer step; `logs` holds this step's metrics on log steps, else is empty."""

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None: ...

    def on_save(self, trainer, step: int, path: Path) -> None: ...

    def on_train_end(self, trainer) -> None: ...


__all__ = ["TrainerCallback"]
