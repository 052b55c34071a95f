"""PEFT LoRA configs for Wren: default targets, and the MoE expert tensors.

`import wrenlm` registers Wren's default LoRA targets with PEFT (`wrenlm.peft_defaults`), so

    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))

targets every linear projection of a Wren model. The routed experts of an MoE layer are 3-D parameters, not
`nn.Linear`s; PEFT reaches them through `target_parameters` (`ParamWrapper`, one low-rank update per expert):

    LoraConfig(task_type="CAUSAL_LM", target_parameters=list(WREN_EXPERT_PARAMETERS))

`wren_lora_config(model_config, ...)` builds either, turning the experts on for MoE models by default. Loading
an adapter (with clear errors for one made for another model) lives in `wrenlm.hub.loading`.
"""

from ..hub.loading import load_adapter, read_adapter_config, split_model_and_adapter, tokenizer_source
from ..paths import ADAPTER_CONFIG_FILE
from ..peft_defaults import (
    WREN_EXPERT_PARAMETERS,
    WREN_LORA_TARGET_MODULES,
    WREN_MODEL_TYPE,
    register_peft_defaults,
)


def wren_lora_config(
    model_config,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
    experts: bool | None = None,
):
    """A causal-LM `LoraConfig`; `experts=None` adds the routed expert tensors exactly when the model is MoE."""
    from peft import LoraConfig

    if experts is None:
        experts = bool(getattr(model_config, "num_experts", 0))
    if experts and not getattr(model_config, "num_experts", 0):
        raise ValueError("LoRA on experts was requested but the model has no routed experts (dense model).")
    if experts and dropout:
        # PEFT cannot apply dropout to a parameter-level LoRA update (it never sees the layer input).
        raise ValueError("LoRA dropout must be 0 when the expert tensors are targeted; use --lora-dropout 0.")
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules) if target_modules else None,
        target_parameters=list(WREN_EXPERT_PARAMETERS) if experts else None,
    )


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "WREN_EXPERT_PARAMETERS",
    "WREN_LORA_TARGET_MODULES",
    "WREN_MODEL_TYPE",
    "load_adapter",
    "read_adapter_config",
    "register_peft_defaults",
    "split_model_and_adapter",
    "tokenizer_source",
    "wren_lora_config",
]
