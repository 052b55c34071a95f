"""AdamW with weight-decay groups and the warmup + cosine schedule.

Weight decay applies to the matrices that do the work (attention and MLP projections, the 3-D
expert tensors, router weights, an untied LM head). It is NOT applied to:
  * embeddings (`nn.Embedding`, and therefore a tied LM head): decaying them pulls rare tokens'
    vectors to zero, which hurts small-vocabulary/small-data models;
  * norm weights and any bias (every parameter with fewer than 2 dimensions): they set scales and
    offsets, shrinking them towards 0 is not a regulariser.
Only parameters with `requires_grad` are included (LoRA adapters pass their own subset).
"""

import torch
from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups, each with a `names` list (for logging and tests)."""
    embedding_params = {
        id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()
    }
    decay, no_decay = [], []
    decay_names, no_decay_names = [], []
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.ndim < 2 or id(param) in embedding_params:
            no_decay.append(param)
            no_decay_names.append(name)
        else:
            decay.append(param)
            decay_names.append(name)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay, "names": decay_names})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "names": no_decay_names})
    if not groups:
        raise ValueError("The model has no trainable parameters.")
    return groups


def build_optimizer(model_or_groups, config) -> torch.optim.AdamW:
    """AdamW over `weight_decay_groups(model)` (or caller-made groups) with the config's hyperparameters."""
    groups = (
        model_or_groups
        if isinstance(model_or_groups, list)
        else weight_decay_groups(model_or_groups, config.weight_decay)
    )
    groups = [{k: v for k, v in group.items() if k != "names"} for group in groups]
    kwargs = {}
    if all(p.device.type == "cuda" for g in groups for p in g["params"]):
        kwargs["fused"] = True
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        **kwargs,
    )


def build_scheduler(optimizer, config):
    """Linear warmup to the peak LR, then cosine decay to `min_lr_ratio * peak` at `max_steps`."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=config.warmup_steps,
        num_training_steps=config.max_steps,
        min_lr_rate=config.min_lr_ratio,
    )


__all__ = ["build_optimizer", "build_scheduler", "weight_decay_groups"]
