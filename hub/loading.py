"""Loading a model to use it: a folder or Hub repo, optionally with a PEFT (LoRA) adapter on top.

One place decides what a model name and an adapter name mean, for `wren eval`, `wren chat` and Python:

* `model` is a model folder or Hub repo id; `adapter` a PEFT adapter folder or Hub repo id applied on top;
* a `model` folder that holds an adapter is the adapter, and an adapter without a model brings its own base
  model (the `base_model_name_or_path` of its `adapter_config.json`);
* the tokenizer comes from the adapter when it ships one (fine-tuning may add chat tokens), else from the model;
* an adapter made for another base model is refused with a ValueError, where PEFT alone would raise a bare
  shape error or silently skip the weights whose modules do not exist.

    from wrenlm.hub.loading import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer("runs/wren-nano-shakespeare", adapter="runs/wren-lora")
"""

import json
import os
from pathlib import Path

from ..paths import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, TOKENIZER_CONFIG_FILE


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
        raise ValueError(f"{config_file} does not hold a JSON object.")
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
    return adapter if adapter is not None and (Path(adapter) / TOKENIZER_CONFIG_FILE).is_file() else model


def looks_local(spec: str) -> bool:
    """Whether `spec` can only mean a local path: not a valid Hub repo id (`name` or `org/name`), or shaped
    like a path (`./x`, `~/x`, `/x`), or `org/name` where `org` is a local folder (`runs/my-model`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return True
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return True
    return "/" in spec and Path(spec.split("/")[0]).is_dir()


def check_model_source(spec: str, what: str = "Model") -> None:
    """A missing local folder is a FileNotFoundError naming it; Hub repo ids pass."""
    if not Path(spec).expanduser().exists() and looks_local(spec):
        raise FileNotFoundError(f"{what} folder {spec!r} does not exist.")


def load_model_config(spec: str, what: str = "Model"):
    """`AutoConfig.from_pretrained(spec)`; a missing, unreadable or invalid config.json is a ValueError naming it."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    import wrenlm  # noqa: F401  (registers the Wren config with AutoConfig)

    check_model_source(spec, what)
    try:
        return AutoConfig.from_pretrained(spec)
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as error:
        if isinstance(error, OSError) and not Path(spec).is_dir():
            raise  # a Hub repo that cannot be fetched: the caller says so in its own words
        where = Path(spec) / "config.json" if Path(spec).is_dir() else spec
        raise ValueError(f"Cannot load the model config {where}: {' '.join(str(error).split())}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def adapter_folder(adapter: str | os.PathLike) -> str:
    """A local adapter folder as given; a Hub repo id that names no local path is downloaded (Hugging Face cache),
    so an adapter from the Hub gets the same checks as a local one."""
    if Path(adapter).exists() or looks_local(str(adapter)):
        return str(adapter)  # a missing folder is reported by `read_adapter_config`
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(str(adapter))
    except OSError as error:  # the Hub's errors (not found, offline, gated) are all OSErrors
        raise FileNotFoundError(
            f"LoRA adapter folder {str(adapter)!r} does not exist, nor could a Hub repository of that name be "
            f"downloaded ({_first_line(error)})."
        ) from error


def resolve_model_and_adapter(model: str | None, adapter: str | None) -> tuple[str, str | None]:
    """(base model folder or Hub id, local adapter folder or None), checked before any weights load."""
    if adapter is not None:
        adapter = adapter_folder(adapter)
    model, adapter = split_model_and_adapter(model, adapter)
    if adapter is not None:
        read_adapter_config(adapter)  # a missing adapter fails before the base model loads
    if not model:
        raise ValueError("Name a model folder or Hub repo id (or an adapter, whose base model it names).")
    check_model_source(str(model))
    return str(model), adapter


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
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{str(adapter_dir)!r} has an adapter config but no {ADAPTER_WEIGHTS_FILE}.")
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return len(list(handle.keys()))


def load_model_and_tokenizer(model: str | None, adapter: str | None = None, device: str | None = None):
    """(model in eval mode on `device`, in the checkpoint's dtype; tokenizer) for the names that
    `resolve_model_and_adapter` accepts. `device` None: cuda when available, else cpu."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, adapter = resolve_model_and_adapter(model, adapter)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model, config=load_model_config(model))
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model, adapter))
    except OSError as error:  # an incomplete folder, an unknown Hub repo, no network: one line, not a traceback
        if Path(model).exists():
            raise FileNotFoundError(f"Cannot load a model from {model!r}: {_first_line(error)}") from error
        raise FileNotFoundError(
            f"Model folder {model!r} does not exist, nor could a Hub repository of that name be loaded "
            f"({_first_line(error)})."
        ) from error
    if adapter is not None:
        loaded = load_adapter(loaded, adapter)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return loaded.to(device).eval(), tokenizer


__all__ = [
    "adapter_folder",
    "check_model_source",
    "load_adapter",
    "load_model_and_tokenizer",
    "load_model_config",
    "looks_local",
    "read_adapter_config",
    "resolve_model_and_adapter",
    "split_model_and_adapter",
    "tokenizer_source",
]
