"""`convert_to_wren` and `convert_from_wren`: config mapping + weight mapping + loading/saving."""

from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from ..configuration import WrenConfig
from ..hub import write_model_card
from ..modeling import WrenForCausalLM
from .checkpoint_io import (
    build_model,
    copy_generation_config,
    find_tokenizer,
    load_causal_lm,
    load_config,
    placement,
    reject_quantized,
    resolve_dtype,
    save_checkpoint,
)
from .config_mapping import config_from_wren, config_to_wren
from .errors import UnsupportedConversionError
from .state_dict_mapping import expected_shapes, state_dict_from_wren, state_dict_to_wren
from .tokenizer_conversion import tokenizer_from_wren, tokenizer_to_wren


def convert_to_wren(
    source: "PreTrainedModel | str | Path",
    output_dir: "str | Path | None" = None,
    *,
    dtype: "str | torch.dtype | None" = None,
    max_shard_size: "str | int" = "2GB",
    tokenizer=None,
    load_kwargs: dict | None = None,
    card_metadata: dict | None = None,
) -> WrenForCausalLM:
    """Convert a Llama / Mistral / Qwen2 / Qwen3 / Mixtral / Qwen3-MoE model to an equivalent Wren model.

    Args:
        source: a loaded `*ForCausalLM` model, or a checkpoint folder / Hub id (loaded with
            `AutoModelForCausalLM.from_pretrained`).
        output_dir: when given, the Wren checkpoint (config, generation config, safetensors sharded at
            `max_shard_size`, and the source's tokenizer) is saved there.
        dtype: "auto"/None keeps the source's dtype; else "float32", "bfloat16", "float16" or a torch dtype.
        tokenizer: tokenizer object or path to ship with it; by default the source folder's, if any
            (False: none). It is saved as a `WrenTokenizer` with the source's exact pipeline, special
            tokens and chat template when probes confirm identical behaviour, else unchanged.
        load_kwargs: extra `from_pretrained` arguments for a folder source (e.g. `{"gguf_file": ...}`).
        card_metadata: metadata of the model card written to `output_dir` (license, base_model, ...);
            `base_model` defaults to the source's Hub id when it came from the Hub.

    A model object is not modified; the Wren model gets its own copy of the weights.
    Raises `UnsupportedConversionError` (a ValueError) naming any feature Wren cannot reproduce.
    """
    dtype = resolve_dtype(dtype)
    config_to_wren(load_config(source, load_kwargs))  # refuse unsupported sources before loading weights
    hf_model = load_causal_lm(source, dtype=dtype, load_kwargs=load_kwargs)
    reject_quantized(hf_model)
    config = config_to_wren(hf_model.config)
    state_dict = state_dict_to_wren(hf_model.state_dict(), expected_shapes(WrenForCausalLM, config))
    model = build_model(
        WrenForCausalLM,
        config,
        state_dict,
        dtype=dtype,
        copy=isinstance(source, PreTrainedModel),
        attn_implementation=hf_model.config._attn_implementation,
        device_map=placement(hf_model),
    )
    copy_generation_config(hf_model, model)
    if output_dir is not None:
        save_checkpoint(
            model,
            output_dir,
            tokenizer=tokenizer_to_wren(find_tokenizer(source, tokenizer, load_kwargs)),
            max_shard_size=max_shard_size,
        )
        source_id = hub_source_id(source, hf_model)
        metadata = {**({"base_model": source_id} if source_id else {}), **(card_metadata or {})}
        if metadata:  # save_pretrained wrote the card without them
            write_model_card(output_dir, model.config.to_dict(), metadata=metadata)
    return model


def hub_source_id(source: "PreTrainedModel | str | Path", hf_model: PreTrainedModel) -> str | None:
    """The Hub repo id the source came from (the model card's `base_model`), or None for a local folder."""
    name = str(source) if isinstance(source, (str, Path)) else hf_model.config._name_or_path
    if not name or Path(name).exists():
        return None  # a local path is no Hub link
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name if "/" in name else None  # a bare name is more often a local label than a Hub id


def convert_from_wren(
    model_or_path: "PreTrainedModel | str | Path",
    output_dir: "str | Path | None" = None,
    *,
    target: str | None = None,
    dtype: "str | torch.dtype | None" = None,
    max_shard_size: "str | int" = "2GB",
    tokenizer=None,
) -> PreTrainedModel:
    """Convert a Wren model back to a Hugging Face architecture.

    `target` is one of llama, mistral, qwen2, qwen3, mixtral, qwen3_moe; by default the family that
    expresses the model exactly (dense: Llama, or Qwen3 with qk_norm, Qwen2 with q/k/v-only bias,
    Mistral with a sliding window; MoE: Mixtral, or Qwen3-MoE with qk_norm, dense layers or
    unnormalised top-k). Raises `UnsupportedConversionError` saying why when no family can.
    Saving works as in `convert_to_wren`; a `WrenTokenizer` is saved as transformers' plain
    `TokenizersBackend` (same pipeline, verified) so the folder loads without wrenlm.
    """
    dtype = resolve_dtype(dtype)
    source_config = load_config(model_or_path)
    if source_config.model_type != WrenConfig.model_type:
        raise UnsupportedConversionError(
            f"convert_from_wren needs a Wren model, got model_type {source_config.model_type!r}; "
            "use convert_to_wren for Hugging Face checkpoints."
        )
    config_from_wren(source_config, target)  # refuse inexpressible targets before loading weights
    wren = load_causal_lm(model_or_path, dtype=dtype)
    hf_config = config_from_wren(wren.config, target)
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(hf_config)]
    state_dict = state_dict_from_wren(wren.state_dict(), expected_shapes(model_class, hf_config), hf_config.model_type)
    model = build_model(
        model_class,
        hf_config,
        state_dict,
        dtype=dtype,
        copy=isinstance(model_or_path, PreTrainedModel),
        attn_implementation=wren.config._attn_implementation,
        device_map=placement(wren),
    )
    copy_generation_config(wren, model)
    if output_dir is not None:
        save_checkpoint(
            model,
            output_dir,
            tokenizer=tokenizer_from_wren(find_tokenizer(model_or_path, tokenizer)),
            max_shard_size=max_shard_size,
        )
    return model


__all__ = ["convert_from_wren", "convert_to_wren"]
