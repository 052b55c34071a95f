"""`--compile`: `torch.compile` each decoder block (as torchtitan does) and the chunked LM loss.

Per-block compilation keeps graphs small (one compile serves every block of the same shape, since
the blocks share their code), compiles in place (`state_dict` keys, checkpoints and resume are
unchanged) and leaves the rest of the model eager. Only the training path is compiled: evaluation
and generation (no gradients, a growing cache) run the eager blocks, so they cost no recompiles.

Works for any transformers model whose `_no_split_modules` names its block class (the HF references
in bench/ too); on a Wren model the loss chunk is compiled as well (`loss_implementation="compile"`).
"""

import torch
from torch import nn


def _base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: modules whose class `_no_split_modules` names."""
    block_classes = set(getattr(_base_model(model), "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in block_classes]


def _training_only(block: nn.Module, compiled_forward, eager_forward):
    def forward(*args, **kwargs):
        if block.training and torch.is_grad_enabled():
            return compiled_forward(*args, **kwargs)
        return eager_forward(*args, **kwargs)

    return forward


def compile_for_training(model: nn.Module, **compile_options) -> nn.Module:
    """Compile `model`'s decoder blocks (training path) and Wren's loss chunk, in place; returns `model`.

    `compile_options` go to `torch.compile` (e.g. `mode="max-autotune-no-cudagraphs"`). An error names the
    model when there is nothing to compile, rather than silently training eagerly.
    """
    blocks = decoder_blocks(model)
    if not blocks:
        raise ValueError(
            f"--compile: {type(_base_model(model)).__name__} names no decoder block class in `_no_split_modules`, "
            "so there is nothing to compile per block."
        )
    for block in blocks:
        if getattr(block, "_wren_compiled", False):
            continue
        eager_forward = block.forward
        # An instance attribute: the class, the weights and their names are untouched.
        block.forward = _training_only(block, torch.compile(eager_forward, **compile_options), eager_forward)
        block._wren_compiled = True
    base = _base_model(model)
    if hasattr(base, "loss_implementation"):
        base.loss_implementation = "compile"
    return model


__all__ = ["compile_for_training", "decoder_blocks"]
