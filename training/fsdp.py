"""FSDP2 (torch `fully_shard`) for the training loop, on GPUs and on CPU.

`accelerate launch --config_file fsdp.yaml` exports the config's FSDP settings (ACCELERATE_USE_FSDP, FSDP_*).

* On GPUs Accelerate's FSDP plugin (fsdp_version 2) shards the model in `accelerator.prepare` and writes sharded
  checkpoints in `save_state`; nothing in this module runs then, except `full_state_dict` for the final save.
* On CPU (gloo) Accelerate enables its FSDP plugin for GPU-type backends only and would run plain DDP. There wren
  applies torch's `fully_shard` itself (`TorchFsdp`), with the same settings read by Accelerate's own
  `FullyShardedDataParallelPlugin` from the same environment: one unit per decoder layer (the config's
  `fsdp_transformer_layer_cls_to_wrap`, else the model's `_no_split_modules`) plus the root, `reshard_after_forward`,
  the `MixedPrecisionPolicy` Accelerate would build, and checkpoints written by Accelerate's own
  `save_fsdp_model` / `save_fsdp_optimizer` (torch.distributed.checkpoint), laid out as on GPUs.

    if wren_applies_fsdp(accelerator):
        fsdp = TorchFsdp(accelerator)
        model = fsdp.shard(model)                  # before the optimizer is built: parameters become DTensors
        fsdp.optimizer = optimizer
        fsdp.save(checkpoint_dir) / fsdp.load(checkpoint_dir)   # model + optimizer shards, every process
    state_dict = full_state_dict(model)            # gathered on the main process, for save_pretrained

The LM head stays inside the root unit, so the chunked loss (which reads `lm_head.weight` in the root's forward)
sees the unsharded weight and its gradient is reduce-scattered like any other.
"""

import os
from contextlib import contextmanager

import torch


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() in ("1", "true", "yes")


def wren_applies_fsdp(accelerator) -> bool:
    """FSDP2 was asked for and Accelerate runs plain CPU data parallelism: wren shards the model itself."""
    from accelerate.utils import DistributedType

    return (
        fsdp_requested()
        and os.environ.get("FSDP_VERSION", "1") == "2"
        and accelerator.distributed_type == DistributedType.MULTI_CPU
    )


def is_fsdp2_model(model) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model, trainable_only: bool = False) -> dict:
    """The full (unsharded) state dict of an FSDP2 or tensor-parallel (DTensor) model on the main process ({} on the
    others); every process must call it. `trainable_only`: only parameters that require grad (a LoRA adapter)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
    return get_model_state_dict(model, options=options)


def mark_for_generation(model) -> None:
    """Tell `generate` that the parameters are FSDP-sharded, so every rank keeps stepping until all are done
    (`synced_gpus`); transformers reads this attribute, which its own FSDP path sets."""
    from transformers import PreTrainedModel

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module._is_fsdp_managed_module = True


@contextmanager
def gathered_root(model):
    """Gather the root unit's own parameters (embeddings, final norm, LM head) around `generate` on an FSDP2 model.

    `generate` may call an inner module directly (PEFT's base model), past the root's FSDP hooks, which would
    leave those parameters sharded. Every process must enter it (a collective); a no-op for other models."""
    if not is_fsdp2_model(model):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


class TorchFsdp:
    """torch's `fully_shard` applied by wren where Accelerate does not (CPU process groups); see the module doc."""

    def __init__(self, accelerator):
        from accelerate.utils import FullyShardedDataParallelPlugin

        self.accelerator = accelerator
        self.model = self.optimizer = None
        self.plugin = FullyShardedDataParallelPlugin()  # the launch's FSDP_* settings, parsed by Accelerate
        if accelerator.mixed_precision != "no":
            self.plugin.set_mixed_precision(accelerator.mixed_precision)

    def layer_classes(self, model) -> set[str]:
        names = self.plugin.transformer_cls_names_to_wrap or getattr(model, "_no_split_modules", None) or []
        found = {type(module).__name__ for module in model.modules()}
        missing = [name for name in names if name not in found]
        if missing or not names:
            raise ValueError(
                f"FSDP: the model has no {', '.join(missing) or 'layer class to wrap'} modules "
                f"(fsdp_transformer_layer_cls_to_wrap); its modules include {', '.join(sorted(found)[:12])}."
            )
        return set(names)

    def shard(self, model: torch.nn.Module) -> torch.nn.Module:
        """`fully_shard` every decoder layer, then the root (embeddings, final norm, LM head); in place."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        plugin = self.plugin
        if self.accelerator.mixed_precision != "no":
            # FSDP2 needs one dtype per unit; Accelerate keeps fp32 masters and computes in the policy's dtype.
            for param in model.parameters():
                if param.requires_grad and param.dtype != torch.float32:
                    param.data = param.data.float()
        kwargs = {
            "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
            "offload_policy": plugin.cpu_offload,
        }
        classes = self.layer_classes(model)
        for module in list(model.modules()):
            if type(module).__name__ in classes:
                fully_shard(module, reshard_after_forward=plugin.reshard_after_forward, **kwargs)
        fully_shard(model, **kwargs)  # the root keeps its parameters gathered between forward and backward
        if self.accelerator.native_amp:
            self._autocast_forward(model)
        mark_for_generation(model)
        self.model = model
        return model

    def _autocast_forward(self, model) -> None:
        """Run forward under the accelerator's autocast, as Accelerate does for the models it prepares."""
        forward = model.forward
        accelerator = self.accelerator

        def autocast_forward(*args, **kwargs):
            with accelerator.autocast():
                return forward(*args, **kwargs)

        model.forward = autocast_forward

    def save(self, directory) -> None:
        """Model and optimizer shards into `directory` (every process), as Accelerate's `save_state` writes them."""
        from accelerate.utils import save_fsdp_model, save_fsdp_optimizer

        save_fsdp_model(self.plugin, self.accelerator, self.model, str(directory))
        save_fsdp_optimizer(self.plugin, self.accelerator, self.optimizer, self.model, str(directory))

    def load(self, directory) -> None:
        from accelerate.utils import load_fsdp_model, load_fsdp_optimizer

        load_fsdp_model(self.plugin, self.accelerator, self.model, str(directory))
        load_fsdp_optimizer(self.plugin, self.accelerator, self.optimizer, self.model, str(directory))

    @contextmanager
    def gradient_sync(self, enabled: bool):
        """Skip the reduce-scatter on accumulation micro-batches (Accelerate's `no_sync` does this for FSDP2)."""
        self.model.set_requires_gradient_sync(enabled)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)


def rebind_parameters(groups: list[dict], names_before: dict[int, str], model) -> None:
    """Point parameter groups made before `shard` at the sharded parameters (matched by name), in place."""
    after = dict(model.named_parameters())
    for group in groups:
        try:
            group["params"] = [after[names_before[id(param)]] for param in group["params"]]
        except KeyError as error:
            raise ValueError(f"An optimizer parameter is not a parameter of the model ({error}).") from error


__all__ = [
    "TorchFsdp",
    "fsdp_requested",
    "full_state_dict",
    "gathered_root",
    "is_fsdp2_model",
    "mark_for_generation",
    "rebind_parameters",
    "wren_applies_fsdp",
]
