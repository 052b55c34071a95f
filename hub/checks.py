"""Checking that a folder is a loadable model or adapter repository (before `wren push`, after `wren pull`)."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import ADAPTER_CONFIG_FILE as ADAPTER_CONFIG
from ..paths import TOKENIZER_CONFIG_FILE as TOKENIZER_CONFIG
from .checkpoint_files import check_checkpoint_files
from .code_export import relative_imports
from .upload import pushable_files

MODEL_CONFIG = "config.json"


@dataclass
class FolderCheck:
    folder: Path
    kind: str  # "model" or "adapter"
    config: dict
    weight_files: list[str]
    code_files: list[str]
    files: list[str]  # what a push uploads
    skipped_folders: list[str]  # sub-folders a push leaves out (training checkpoints, logs, caches)
    warnings: list[str] = field(default_factory=list)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"Unreadable {path.name} in {path.parent}: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def _auto_map_modules(config: dict) -> set[str]:
    """Module files that an `auto_map` refers to ("module.Class", or a [slow, fast] pair for tokenizers)."""
    references = []
    for value in (config.get("auto_map") or {}).values():
        references.extend(value if isinstance(value, list) else [value])
    # "repo--module.Class" points at code in another repo; it is not expected here.
    return {f"{ref.split('.')[0]}.py" for ref in references if ref and "--" not in ref}


def _missing_code_files(folder: Path, needed: set[str]) -> list[str]:
    """The `needed` code files and their relative imports, transitively, that are not in `folder`."""
    missing, seen, pending = set(), set(), sorted(needed)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if not (folder / name).is_file():
            missing.add(name)
            continue
        pending.extend(target.name for _, target in relative_imports(folder / name))
    return sorted(missing)


def check_folder(folder: str | Path) -> FolderCheck:
    """Check a model folder (config.json + safetensors) or a PEFT adapter folder (adapter_config.json).

    Raises FileNotFoundError / ValueError naming the problem: no config, unreadable JSON, missing or corrupt
    weight files (index vs shards, safetensors headers), or custom code files that `auto_map` needs but that
    are absent. Missing optional parts (tokenizer, generation config) become warnings.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No such folder: {folder}")
    if (folder / ADAPTER_CONFIG).is_file():
        kind, config = "adapter", read_json(folder / ADAPTER_CONFIG)
    elif (folder / MODEL_CONFIG).is_file():
        kind, config = "model", read_json(folder / MODEL_CONFIG)
    else:
        raise FileNotFoundError(
            f"{folder} is neither a model folder ({MODEL_CONFIG}) nor an adapter folder ({ADAPTER_CONFIG})"
        )
    weight_files = check_checkpoint_files(folder)
    if not weight_files:
        expected = "adapter_model.safetensors" if kind == "adapter" else "model.safetensors or a sharded index"
        raise FileNotFoundError(f"No safetensors weights in {folder} (expected {expected})")

    warnings = []
    needed = _auto_map_modules(config)
    if kind == "model":
        if not config.get("model_type"):
            raise ValueError(f"{folder / MODEL_CONFIG} has no model_type")
        if (folder / TOKENIZER_CONFIG).is_file():
            needed |= _auto_map_modules(read_json(folder / TOKENIZER_CONFIG))
        else:
            warnings.append(f"no tokenizer in {folder}: the repository will hold the model only")
        if not (folder / "generation_config.json").is_file():
            warnings.append(f"no generation_config.json in {folder}: generate() will use transformers' defaults")
    elif not config.get("base_model_name_or_path"):
        raise ValueError(f"{folder / ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)")
    elif not config.get("task_type") and (config.get("auto_mapping") or {}).get("parent_library", "").startswith(
        "wrenlm"
    ):
        warnings.append(
            f"{ADAPTER_CONFIG} has no task_type, so AutoPeftModelForCausalLM will import wrenlm to load it; "
            'adapters trained with task_type="CAUSAL_LM" load anywhere through trust_remote_code'
        )
    missing = _missing_code_files(folder, needed)
    if missing:
        raise FileNotFoundError(f"{folder} lacks the code file(s) its auto_map needs: {', '.join(missing)}")
    return FolderCheck(
        folder=folder,
        kind=kind,
        config=config,
        weight_files=weight_files,
        code_files=sorted(p.name for p in folder.glob("*.py")),
        files=pushable_files(folder),
        skipped_folders=sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        warnings=warnings,
    )
