"""Wren configuration: `WrenConfig` and named presets."""

from .configuration_wren import SUPPORTED_ROPE_TYPES, WrenConfig
from .presets import PRESETS, preset_config

__all__ = ["PRESETS", "SUPPORTED_ROPE_TYPES", "WrenConfig", "preset_config"]
