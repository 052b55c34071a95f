"""PEFT LoRA for Wren: default targets, the MoE expert tensors, and adapter loading with clear errors.

`import wrenlm` calls `register_peft_defaults()`, so after it

    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))

targets every linear projection of a Wren model (attention q/k/v/o, the dense SwiGLU MLPs and the
shared experts). The routed experts of an MoE layer are 3-D parameters, not `nn.Linear`s; PEFT reaches
them through `target_parameters` (`ParamWrapper`, which adds one low-rank update per expert):

    LoraConfig(task_type="CAUSAL_LM", target_parameters=list(WREN_EXPERT_PARAMETERS))

`wren_lora_config(model_config, ...)` builds either, turning the experts on for MoE models by default.
"""

import json
import os
from pathlib import Path

WREN_MODEL_TYPE = "wren"
# All linear projections: on small models LoRA on every projection learns much more per step than the
# q/v-only default PEFT uses for Llama (the QLoRA paper's finding for large ones too).
WREN_LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Wren's fused expert tensors: gate_up_proj [E, 2I, H] and down_proj [E, H, I] ((experts, out, in) like Mixtral's).
WREN_EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
ADAPTER_CONFIG_FILE = "adapter_config.json"


def register_peft_defaults() -> None:
    """Teach PEFT Wren's default LoRA target modules (the table `LoraModel` reads when none are given)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[WREN_MODEL_TYPE] = list(WREN_LORA_TARGET_MODULES)


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


def read_adapter_config(adapter_dir: str | os.PathLike) -> dict:
    """The adapter's `adapter_config.json`; a clear FileNotFoundError when the folder holds no adapter."""
    path = Path(adapter_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"LoRA adapter folder {str(path)!r} does not exist.")
    config_file = path / ADAPTER_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} holds no LoRA adapter ({ADAPTER_CONFIG_FILE} is missing); pass the folder "
            "`wren finetune` wrote (its --output-dir)."
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} does not hold a JSON object.")  # noqa: TRY004 - one-line user error
    return config


def split_model_and_adapter(model: str | None, adapter: str | None) -> tuple[str | None, str | None]:
    """(model, adapter), where a `model` folder that holds an adapter becomes the adapter, and a missing model
    beside an adapter becomes the base model named in the adapter's `adapter_config.json`."""
    if adapter is None and model is not None and (Path(model) / ADAPTER_CONFIG_FILE).is_file():
        model, adapter = None, model
    if model is None and adapter is not None:
        model = read_adapter_config(adapter).get("base_model_name_or_path")
        if not model:
            config_file = Path(adapter) / ADAPTER_CONFIG_FILE
            raise ValueError(f"{config_file} does not name its base model (base_model_name_or_path).")
    return model, adapter


def tokenizer_source(model: str, adapter: str | None) -> str:
    """Where to load the tokenizer from: the adapter folder when it ships one (fine-tuning may add chat tokens)."""
    return adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file() else model


def load_adapter(base_model, adapter_dir: str | os.PathLike, *, is_trainable: bool = False):
    """`PeftModel.from_pretrained(base_model, adapter_dir)`, refusing an adapter made for another model.

    PEFT itself would raise a bare shape-mismatch RuntimeError (different widths) or silently skip
    adapter weights whose modules do not exist (different depth); both become a ValueError here.
    """
    from peft import PeftModel

    saved = read_adapter_config(adapter_dir)
    trained_on = saved.get("base_model_name_or_path") or "an unknown base model"
    try:
        model = PeftModel.from_pretrained(base_model, str(adapter_dir), is_trainable=is_trainable)
    except RuntimeError as error:
        if "size mismatch" not in str(error):
            raise
        raise ValueError(
            f"The LoRA adapter in {str(adapter_dir)!r} was trained on {trained_on!r}, whose layer shapes differ from "
            f"this base model ({str(error).strip().splitlines()[-1].strip()[:300]})."
        ) from error
    saved_tensors = _adapter_tensor_count(adapter_dir)
    created = sum(1 for name, _ in model.named_parameters() if ".lora_" in name)
    if saved_tensors != created:
        raise ValueError(
            f"The LoRA adapter in {str(adapter_dir)!r} was trained on {trained_on!r}: it holds {saved_tensors} LoRA "
            f"tensors but this base model has places for {created} (a different number of layers or targets)."
        )
    return model


def _adapter_tensor_count(adapter_dir) -> int:
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{str(adapter_dir)!r} has an adapter config but no adapter_model.safetensors.")
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return len(list(handle.keys()))


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "WREN_EXPERT_PARAMETERS",
    "WREN_LORA_TARGET_MODULES",
    "load_adapter",
    "read_adapter_config",
    "register_peft_defaults",
    "split_model_and_adapter",
    "tokenizer_source",
    "wren_lora_config",
]
