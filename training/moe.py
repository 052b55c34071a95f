"""What training a mixture-of-experts Wren needs beyond the loop, as a `TrainerCallback`.

    trainer = Trainer(model, config, train, callbacks=[*moe_callbacks(model), ...])

* the router losses (load-balancing `aux_loss`, `z_loss`) are part of the model's loss; they are logged
  on their own as `train/aux_loss` and `train/z_loss`, with `train/lm_loss` = loss minus both terms;
* on logging steps only, the model is asked for its expert load (`output_expert_load=True`; other steps
  skip that work). Logged as load ratios, an expert's share of the token->expert assignments over the
  even share (1.0 = balanced): `train/expert_load_max_layer_<i>` (the busiest expert of decoder layer i),
  `train/expert_load_max` (the busiest in any layer) and `train/expert_load_min` (the idlest; 0 = an
  expert got no token). The load is that of the logged step alone: the mean of its micro-batches'
  load fractions, then the mean over data-parallel processes (each micro-batch weighs the same, which
  is the pooled load when micro-batches hold equally many real tokens, as packed blocks do);
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
        self._new_load()

    def _new_step(self) -> None:
        self.step_aux = self.step_z = 0.0

    def _new_window(self) -> None:
        self.window_aux = self.window_z = 0.0
        self.window_steps = 0

    def _new_load(self) -> None:
        self.load_sum = None  # [moe layers, experts] load fractions summed over the logged step's micro-batches
        self.load_batches = 0

    def forward_kwargs(self, trainer, step: int, logging: bool) -> dict:
        return {"output_expert_load": True} if logging else {}

    def on_micro_batch_end(self, trainer, outputs) -> None:
        if getattr(outputs, "aux_loss", None) is not None:
            self.has_router_losses = True
            self.step_aux += outputs.aux_loss.detach().float()
            self.step_z += outputs.z_loss.detach().float()
        load = getattr(outputs, "expert_load", None)
        if load is not None:
            load = load.detach().float()
            self.load_sum = load if self.load_sum is None else self.load_sum + load
            self.load_batches += 1

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
        if self.load_batches:  # the same on every process: each was asked for the load on this step
            load = acc.reduce(self.load_sum.to(acc.device) / self.load_batches, reduction="mean")
            logs.update(load_ratio_logs(load, trainer.unwrapped_model.config))
        self._new_window()
        self._new_load()


def load_ratio_logs(load: torch.Tensor, config) -> dict[str, float]:
    """The logged summary of `[moe layers, experts]` load fractions (see the module docstring)."""
    ratio = load / load.mean(dim=-1, keepdim=True).clamp(min=torch.finfo(load.dtype).tiny)
    layer_max = ratio.amax(dim=-1).tolist()
    moe_layers = [i for i in range(config.num_hidden_layers) if config.is_moe_layer(i)]
    logs = {f"train/expert_load_max_layer_{layer}": value for layer, value in zip(moe_layers, layer_max)}
    logs["train/expert_load_max"] = max(layer_max)
    logs["train/expert_load_min"] = float(ratio.amin())
    return logs


__all__ = ["MoeRouterCallback", "is_moe", "load_ratio_logs", "moe_callbacks"]
