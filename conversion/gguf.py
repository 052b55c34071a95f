"""GGUF files (llama.cpp's format) -> Wren checkpoints, through transformers' own GGUF loader.

transformers reads the file's config and tokenizer metadata and dequantizes its weights into a plain
floating-point `*ForCausalLM` model; from there the ordinary HF -> Wren conversion applies. Reading
GGUF needs the `gguf` package (`pip install 'wrenlm[gguf]'`).

    from wrenlm.conversion.gguf import convert_gguf_to_wren
    wren = convert_gguf_to_wren("model.Q4_K_M.gguf", "my-wren")
"""

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel
from transformers.utils import logging
from transformers.utils.import_utils import GGUF_MIN_VERSION, is_gguf_available

from ..tokenization.special_tokens import add_chat_stop_tokens
from ..tokenization.special_tokens import turn_end_token_ids as chat_stop_token_ids
from .config_mapping import config_to_wren
from .convert import convert_to_wren

logger = logging.get_logger(__name__)

GGUF_REQUIREMENT = f"gguf>={GGUF_MIN_VERSION}"
_GGUF_MAGIC = b"GGUF"
HUB_URL = "https://huggingface.co/"  # base models in GGUF metadata are Hub repo URLs


class GGUFPackageMissingError(ImportError, ValueError):
    """The `gguf` package is not installed (a ValueError too, so `wren` reports it as one line)."""


class GGUFFileError(ValueError):
    """A file that is not a readable GGUF model."""


def require_gguf() -> None:
    if not is_gguf_available():
        raise GGUFPackageMissingError(
            f"GGUF support needs the `gguf` package ({GGUF_REQUIREMENT}); install it with "
            f"`pip install 'wrenlm[gguf]'` (or `pip install '{GGUF_REQUIREMENT}'`).",
            name="gguf",
        )


def read_gguf_metadata(path: "str | Path") -> dict:
    """The file's scalar and string metadata (`general.architecture`, `general.license`, ...); arrays are left out.

    Raises FileNotFoundError for a missing file and `GGUFFileError` for anything that is not a readable GGUF.
    """
    require_gguf()
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No GGUF file at {path}.")
    with open(path, "rb") as handle:
        if handle.read(len(_GGUF_MAGIC)) != _GGUF_MAGIC:
            raise GGUFFileError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")
    try:
        fields = GGUFReader(path).fields
    except (ValueError, IndexError, KeyError, OSError) as error:  # what the reader raises on cut or bad data
        raise GGUFFileError(f"{path} is a damaged or truncated GGUF file: {error}") from error
    metadata = {}
    for key, field in fields.items():
        value = field.contents()
        if not isinstance(value, list):
            metadata[key] = value
    if "general.architecture" not in metadata:
        raise GGUFFileError(f"{path} names no model architecture (`general.architecture`); is it a model file?")
    return metadata


def _load_options(path: Path) -> tuple[str, dict]:
    # transformers reads a GGUF as `from_pretrained(folder, gguf_file=name)`; outside the Hub cache that must be local.
    return str(path.parent), {"gguf_file": path.name, "local_files_only": True}


def load_gguf(path: "str | Path", *, dtype=None, metadata: dict | None = None) -> tuple[PreTrainedModel, object]:
    """The HF `*ForCausalLM` model (weights dequantized) and tokenizer that transformers builds from a GGUF file.

    The model's generation config also stops at the chat template's end-of-turn token (see `add_chat_stop_tokens`).
    The architecture is checked against the families Wren converts before any weight is read. `metadata` is the
    file's `read_gguf_metadata` when the caller already has it (reading it parses the whole header again).
    """
    path = Path(path)
    metadata = metadata or read_gguf_metadata(path)
    folder, options = _load_options(path)
    try:
        config = AutoConfig.from_pretrained(folder, **options)
    except ValueError as error:  # transformers' GGUF reader names the architecture it does not know
        raise GGUFFileError(
            f"transformers cannot read the {metadata['general.architecture']!r} GGUF file {path}: {error}"
        ) from error
    config_to_wren(config)  # an architecture Wren cannot reproduce is refused here, naming the reason
    # Dequantize explicitly: a quantized-kernel load would leave packed weights that cannot be remapped.
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=GgufConfig(dequantize=True), dtype=dtype or "auto", **options
    )
    # The dequantized weights are plain tensors now; without the quantizer the model saves and converts normally.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    tokenizer = AutoTokenizer.from_pretrained(folder, **options)
    add_chat_stop_tokens(model.generation_config, tokenizer)
    return model.eval(), tokenizer


def convert_gguf_to_wren(
    path: "str | Path",
    output_dir: "str | Path | None" = None,
    *,
    dtype=None,
    max_shard_size: "str | int" = "2GB",
):
    """Convert a GGUF model of a family Wren reproduces (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE) to Wren.

    The weights are dequantized by transformers (to `dtype`, default float32 for quantized files) and converted
    exactly; the tokenizer (with the file's chat template) becomes a `WrenTokenizer`, and the generation config
    stops at the template's end-of-turn token. With `output_dir` the checkpoint is saved there.
    """
    metadata = read_gguf_metadata(path)
    hf_model, tokenizer = load_gguf(path, dtype=dtype, metadata=metadata)
    return convert_to_wren(
        hf_model,
        output_dir,
        dtype=dtype,
        max_shard_size=max_shard_size,
        tokenizer=tokenizer,
        card_metadata=gguf_card_metadata(metadata),
    )


def gguf_card_metadata(metadata: dict) -> dict:
    """Model card metadata the GGUF declares: its license and the Hub model it was quantized from."""
    card = {}
    if metadata.get("general.license"):
        card["license"] = metadata["general.license"]
    base_url = str(metadata.get("general.base_model.0.repo_url") or "")
    if base_url.startswith(HUB_URL):
        card["base_model"] = base_url.removeprefix(HUB_URL).strip("/")
        card["base_model_relation"] = "quantized"
    return card


__all__ = [
    "GGUF_REQUIREMENT",
    "HUB_URL",
    "GGUFFileError",
    "GGUFPackageMissingError",
    "add_chat_stop_tokens",
    "chat_stop_token_ids",
    "convert_gguf_to_wren",
    "gguf_card_metadata",
    "load_gguf",
    "read_gguf_metadata",
    "require_gguf",
]
