"""Loading conversion sources and saving converted checkpoints, all through transformers.

Sources are loaded as transformers model objects, so on-disk layouts (sharded safetensors, legacy
per-expert MoE names that transformers fuses on load, later GGUF through `gguf_file=`) never reach
the mapping code. Converted models are written with `save_pretrained(max_shard_size=...)`.
"""

from copy import deepcopy
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..hub.checkpoint_files import check_checkpoint_files
from .errors import UnsupportedConversionError

# Files whose presence means a folder carries a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
# from_pretrained options that also apply to loading the tokenizer of the same source.
_TOKENIZER_LOAD_KEYS = ("gguf_file", "revision", "subfolder", "trust_remote_code")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: "str | torch.dtype | None") -> torch.dtype | None:
    """None / "auto" keep the source's dtype; otherwise a torch floating dtype (or its name)."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of auto, {', '.join(_DTYPES)}.")
    return _DTYPES[name]


def load_config(source: "PreTrainedModel | str | Path", load_kwargs: dict | None = None):
    """The config of a model object, or of a checkpoint folder / Hub id without loading its weights."""
    if isinstance(source, PreTrainedModel):
        return source.config
    if not isinstance(source, (str, Path)):
        raise TypeError(f"Expected a PreTrainedModel, a folder or a Hub id, got {type(source).__name__}.")
    path = Path(source)
    if not path.exists() and not _is_repo_id(str(source)):
        raise FileNotFoundError(f"Checkpoint folder {source} does not exist (nor is it a Hub repo id).")
    if path.is_dir() and not (path / "config.json").is_file() and not (load_kwargs or {}).get("gguf_file"):
        raise FileNotFoundError(f"{path} has no config.json; is it a transformers checkpoint folder?")
    try:
        return AutoConfig.from_pretrained(str(source), **(load_kwargs or {}))
    except OSError as error:  # missing folder / unreachable Hub id: a user error, reported in one line
        raise FileNotFoundError(f"Cannot read a model config from {source}: {error}") from error


def _is_repo_id(name: str) -> bool:
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def source_model_type(source: "str | Path", load_kwargs: dict | None = None) -> str:
    """The `model_type` of a checkpoint folder or Hub id, read from its config only."""
    return load_config(source, load_kwargs).model_type


def load_causal_lm(
    source: "PreTrainedModel | str | Path", *, dtype: torch.dtype | None = None, load_kwargs: dict | None = None
) -> PreTrainedModel:
    """A model object as-is, or a folder / Hub id loaded with `AutoModelForCausalLM.from_pretrained`."""
    if isinstance(source, PreTrainedModel):
        return source
    if not isinstance(source, (str, Path)):
        raise TypeError(f"Expected a PreTrainedModel, a folder or a Hub id, got {type(source).__name__}.")
    if Path(source).is_dir():
        check_checkpoint_files(source)  # names a missing or corrupt weight file, which safetensors would not
    kwargs = dict(load_kwargs or {})
    kwargs.setdefault("dtype", dtype if dtype is not None else "auto")
    try:
        return AutoModelForCausalLM.from_pretrained(str(source), **kwargs)
    except OSError as error:  # e.g. a config without weights
        raise FileNotFoundError(f"Cannot load a model from {source}: {error}") from error


def reject_quantized(model: PreTrainedModel) -> None:
    """Quantized weights cannot be remapped; GGUF dequantized on load is plain floating point and fine."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    config = quantizer.quantization_config
    method = getattr(config, "quant_method", "unknown")
    method = str(getattr(method, "value", method))  # QuantizationMethod is a str enum; str() would give its name
    # transformers' GGUF quantizer keeps weights packed only in `packed_modules`; the legacy loader (Llama and
    # most families) always dequantizes, with `dequantize` left False.
    if method == "gguf" and (getattr(config, "dequantize", False) or not getattr(quantizer, "packed_modules", None)):
        return
    raise UnsupportedConversionError(
        f"The source model is quantized ({method}); load it in floating point (dequantized) before converting."
    )


def build_model(
    model_class: type[PreTrainedModel],
    config,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None,
    copy: bool,
    attn_implementation: str | None = None,
    device_map: dict | None = None,
) -> PreTrainedModel:
    """Instantiate `model_class` from `config` with exactly `state_dict` (already checked against it).

    `copy=False` lets the new model share storage with the source tensors (the source is a temporary);
    with `copy=True` the new model owns its weights. `device_map` (see `placement`) puts it where the
    source was; without one it is built on the CPU.
    """
    floating = [tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()]
    dtype = dtype or (floating[0] if floating else torch.float32)
    weights, done = {}, {}  # `done`: tensors shared under several names (tied weights) are converted once
    for name, tensor in state_dict.items():
        key = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if key not in done:
            converted = tensor.to(dtype) if tensor.is_floating_point() else tensor
            done[key] = converted.clone() if copy and converted.data_ptr() == tensor.data_ptr() else converted
        weights[name] = done[key]
    config.dtype = dtype
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if device_map:
        kwargs["device_map"] = device_map
    model = model_class.from_pretrained(None, config=config, state_dict=weights, dtype=dtype, **kwargs)
    return model.eval()


def placement(model: PreTrainedModel) -> dict | None:
    """A `device_map` that puts a converted model where `model` is (None: the CPU).

    Wren and the HF families share module names (model.embed_tokens, model.layers.N, model.norm,
    lm_head), so a multi-device `hf_device_map` applies as it is.
    """
    device_map = getattr(model, "hf_device_map", None)
    if device_map and len(set(device_map.values())) > 1:
        return dict(device_map)
    devices = {param.device for param in model.parameters()}
    if len(devices) == 1:
        device = devices.pop()
        return None if device.type == "cpu" else {"": device}
    return None


def find_tokenizer(source, tokenizer=None, load_kwargs: dict | None = None):
    """The tokenizer to ship with a converted model: the one given, else the source folder's, else None.

    `tokenizer` may be a tokenizer object, a folder / Hub id, or False to skip it.
    """
    if tokenizer is False:
        return None
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        return tokenizer
    kwargs = {key: value for key, value in (load_kwargs or {}).items() if key in _TOKENIZER_LOAD_KEYS}
    if tokenizer is not None:
        return AutoTokenizer.from_pretrained(str(tokenizer), **kwargs)
    location = source.name_or_path if isinstance(source, PreTrainedModel) else source
    if not location:
        return None
    path = Path(location)
    if path.is_dir():
        if kwargs.get("gguf_file") or any((path / name).is_file() for name in TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(str(path), **kwargs)
        return None
    if path.exists():
        return None
    try:  # a Hub id (or a model object loaded from one): the tokenizer may or may not be there
        return AutoTokenizer.from_pretrained(str(location), **kwargs)
    except (OSError, ValueError):
        return None


def copy_generation_config(source: PreTrainedModel, target: PreTrainedModel) -> None:
    if getattr(source, "generation_config", None) is not None:
        target.generation_config = deepcopy(source.generation_config)


def save_checkpoint(model: PreTrainedModel, output_dir: "str | Path", *, tokenizer=None, max_shard_size="2GB") -> Path:
    """Model (config, generation config, sharded safetensors) and tokenizer into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    return output_dir


__all__ = [
    "build_model",
    "copy_generation_config",
    "find_tokenizer",
    "load_causal_lm",
    "load_config",
    "placement",
    "reject_quantized",
    "resolve_dtype",
    "save_checkpoint",
    "source_model_type",
]
