"""What training a mixture-of-experts Wren needs beyond the loop, as a `TrainerCallback`.

    trainer = Trainer(model, config, train, callbacks=[*moe_callbacks(model), ...])

* the router losses (load-balancing `aux_loss`, `z_loss`) are part of the model's loss; they are logged
  on their own as `train/aux_loss` and `train/z_loss`, with `train/lm_loss` = loss minus both terms;
* with `router_bias_update_rate > 0`, the aux-loss-free bias update runs after every optimizer step,
  on the expert load summed over all data-parallel processes so every process applies the same update.

The router bias is a model buffer, so checkpoints carry it; the logged windows start afresh on resume.
"""

import torch

from .callbacks import TrainerCallback


def is_moe(model) -> bool:
    return bool(getattr(getattr(model, "config", None), "is_moe", False))


def moe_callbacks(model) -> list[TrainerCallback]:
    """`[MoeRouterCallback()]` for a mixture-of-experts model (PEFT-wrapped or not), else `[]`."""
    return [MoeRouterCallback()] if is_moe(model) else []


class MoeRouterCallback(TrainerCallback):
    """Router-loss logging and the router-bias update (see the module docstring)."""

    def on_train_begin(self, trainer) -> None:
        model_config = getattr(trainer.unwrapped_model, "config", None)
        self.update_bias = getattr(model_config, "router_bias_update_rate", 0) > 0
        self.has_router_losses = False
        self._new_step()
        self._new_window()

    def _new_step(self) -> None:
        self.step_aux = self.step_z = 0.0

    def _new_window(self) -> None:
        self.window_aux = self.window_z = 0.0
        self.window_steps = 0

    def on_micro_batch_end(self, trainer, outputs) -> None:
        if getattr(outputs, "aux_loss", None) is not None:
            self.has_router_losses = True
            self.step_aux += outputs.aux_loss.detach().float()
            self.step_z += outputs.z_loss.detach().float()

    def on_optimizer_step(self, trainer) -> None:
        acc = trainer.accelerator
        if self.update_bias:
            reduce = (lambda t: acc.reduce(t, reduction="sum")) if acc.num_processes > 1 else None
            trainer.unwrapped_model.update_router_bias(reduce=reduce)
        gas = trainer.config.gradient_accumulation_steps
        self.window_aux += self.step_aux / gas
        self.window_z += self.step_z / gas
        self.window_steps += 1
        self._new_step()

    def on_log(self, trainer, step: int, logs: dict) -> None:
        acc = trainer.accelerator
        values = torch.stack(
            [
                torch.as_tensor(v, device=acc.device, dtype=torch.float32).reshape(())
                for v in (self.window_aux, self.window_z)
            ]
        )
        # Every process reduces, whatever its outputs held: collectives must match across processes.
        values = acc.reduce(values, reduction="mean") / max(self.window_steps, 1)
        if self.has_router_losses:
            cfg = trainer.unwrapped_model.config
            aux, z = float(values[0]), float(values[1])
            logs["train/aux_loss"] = aux
            logs["train/z_loss"] = z
            logs["train/lm_loss"] = logs["train/loss"] - cfg.router_aux_loss_coef * aux - cfg.router_z_loss_coef * z
        self._new_window()


__all__ = ["MoeRouterCallback", "is_moe", "moe_callbacks"]
