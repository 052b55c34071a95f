"""Training defaults; the paths (cache folder, default output folder) live in `wrenlm.paths` and are re-exported.

Kept free of heavy imports so `from wrenlm.training.defaults import DEFAULT_OUTPUT_DIR` is instant.
"""

from ..paths import CACHE_ENV_VAR, DEFAULT_OUTPUT_DIR, cache_dir

DEFAULT_PRESET = "wren-nano"  # the main job's model (see configuration/presets.py)

__all__ = ["CACHE_ENV_VAR", "DEFAULT_OUTPUT_DIR", "DEFAULT_PRESET", "cache_dir"]
