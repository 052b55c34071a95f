"""Checkpoint conversion between Hugging Face decoder families and Wren.

    from wrenlm.conversion import convert_to_wren, convert_from_wren
    wren = convert_to_wren("path/to/llama", "path/to/wren")       # Llama/Mistral/Qwen2/Qwen3/Mixtral/Qwen3-MoE
    llama = convert_from_wren("path/to/wren", "path/to/llama", target="llama")

Conversions are exact (same logits) or refused with `UnsupportedConversionError` naming the feature.
"""

from .config_mapping import (
    CONVERTIBLE_ROPE_TYPES,
    SOURCE_MODEL_TYPES,
    TARGET_MODEL_TYPES,
    config_from_wren,
    config_to_wren,
    default_target,
)
from .convert import convert_from_wren, convert_to_wren
from .errors import UnsupportedConversionError

__all__ = [
    "CONVERTIBLE_ROPE_TYPES",
    "SOURCE_MODEL_TYPES",
    "TARGET_MODEL_TYPES",
    "UnsupportedConversionError",
    "config_from_wren",
    "config_to_wren",
    "convert_from_wren",
    "convert_to_wren",
    "default_target",
]
