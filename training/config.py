"""Training configuration: dataclasses, YAML/TOML files, and command-line overrides.

Precedence (lowest to highest): dataclass defaults < config file (`--config run.yaml`) < CLI flags
(`--max-steps 100`) < `--set key=value` pairs. Model fields go under `model` in a file or as
`--set model.hidden_size=128`; they override the preset's values.
"""

import argparse
import dataclasses
import difflib
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .defaults import DEFAULT_OUTPUT_DIR, DEFAULT_PRESET

# "auto": Muon where whole weight matrices live on each process (one process, DDP), AdamW where an engine shards or
# flattens them (FSDP, DeepSpeed ZeRO, tensor parallelism); the run log names the one used.
OPTIMIZERS = ("auto", "adamw", "muon")
LR_SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")


@dataclass
class TrainingConfig:
    """Everything the shared Accelerate loop (`Trainer`) needs; pretraining and fine-tuning extend it."""

    output_dir: str = DEFAULT_OUTPUT_DIR
    seed: int = 1234

    # optimisation (one optimizer step = per_device_batch_size * gradient_accumulation_steps * processes sequences)
    max_steps: int = 1000
    per_device_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-3  # peak LR of AdamW (all parameters, or those Muon does not take)
    min_lr_ratio: float = 0.1
    lr_schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay); see training/optim.py
    warmup_fraction: float = 0.05  # linear warmup over this fraction of max_steps ...
    warmup_steps: int | None = None  # ... unless this many steps are given
    decay_fraction: float = 0.2  # wsd: the last fraction of the run decays to min_lr_ratio
    decay_shape: str = "linear"  # wsd: linear | 1-sqrt | cosine
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    # adamw: AdamW everywhere; muon: torch.optim.Muon for the hidden weight matrices, AdamW for the rest;
    # auto: muon, or adamw under an engine that shards the matrices (see OPTIMIZERS)
    optimizer: str = "adamw"
    muon_learning_rate: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    # torch.compile each decoder block and the chunked loss (training steps only; see training/compile.py).
    # Pays off on GPUs and long runs; costs a warm-up of tens of seconds at the first step.
    compile: bool = False

    # evaluation, samples, logging
    eval_every: int = 250
    eval_batch_size: int = 16
    eval_blocks: int = 0  # periodic evals use the first N validation blocks (0: all); the final eval uses all
    sample_prompts: list[str] = field(default_factory=lambda: ["\n"])
    sample_max_new_tokens: int = 60
    sample_temperature: float = 0.8
    sample_top_k: int = 40
    log_every: int = 10
    report_to: str = "auto"
    progress_bar: bool = True

    # checkpoints
    save_every: int = 250
    keep_last: int = 2
    resume: str = "auto"

    dataloader_num_workers: int = 0
    # CPU threads for PyTorch (0: the `wren` commands decide, see cpu_threads.py: every usable core when OpenMP
    # threads sleep while waiting; fewer when they may spin and the load average shows other busy processes).
    cpu_threads: int = 0

    def validate(self) -> None:
        positive = ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "eval_batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in (
            "eval_every",
            "eval_blocks",
            "log_every",
            "save_every",
            "keep_last",
            "cpu_threads",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0, got {self.warmup_steps}.")
        for name in ("learning_rate", "muon_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be positive, got {getattr(self, name)}.")
        for name in ("warmup_fraction", "decay_fraction", "muon_momentum"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.muon_weight_decay < 0:
            raise ValueError(f"`muon_weight_decay` must be >= 0, got {self.muon_weight_decay}.")
        for name, allowed in (
            ("optimizer", OPTIMIZERS),
            ("lr_schedule", LR_SCHEDULES),
            ("decay_shape", DECAY_SHAPES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"`min_lr_ratio` must be in [0, 1], got {self.min_lr_ratio}.")
        if self.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ValueError(f"`mixed_precision` must be auto, no, fp16 or bf16, got {self.mixed_precision!r}.")
        if self.resume not in ("auto", "never") and not Path(self.resume).exists():
            raise FileNotFoundError(f"`resume` checkpoint {self.resume!r} does not exist (or use auto / never).")


@dataclass
class PretrainConfig(TrainingConfig):
    """`wren pretrain`: data, tokenizer and model on top of the loop settings.

    The defaults are the main job (wren-nano on Shakespeare in about 7 minutes of training on 2 CPU cores),
    the winner of the recipe search at that budget (docs/recipe-search.md, `python -m bench.recipe_search`):
    Muon for the hidden matrices, a warmup-stable-decay schedule, a 2,048-token vocabulary and a model small
    enough (0.59M parameters) to see many tokens. `max_steps` is that budget on 2 idle cores: 1,200 steps of
    the previous default (wren-tiny, AdamW) took 7.3 minutes; 3,200 steps of wren-nano took 7.0 (measured,
    docs/pretraining.md).
    """

    max_steps: int = 3200
    per_device_batch_size: int = 8
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.05
    lr_schedule: str = "wsd"
    decay_fraction: float = 0.3
    optimizer: str = "auto"
    eval_every: int = 1000
    eval_blocks: int = 32
    save_every: int = 1000
    sample_prompts: list[str] = field(default_factory=lambda: ["ROMEO.\n", "\n"])

    data: list[str] = field(default_factory=list)
    text_field: str = "text"
    hf_config: str | None = None
    hf_split: str = "train"
    val_fraction: float = 0.02
    split_mode: str = "auto"
    seq_len: int = 256

    tokenizer: str | None = None
    vocab_size: int = 2048
    tokenizer_min_frequency: int = 2

    preset: str = DEFAULT_PRESET
    model: dict = field(default_factory=dict)

    # A full-validation-set evaluation at the end (periodic evals may use `eval_max_batches`).
    final_eval: bool = True

    def validate(self) -> None:
        super().validate()
        if self.seq_len < 2:
            raise ValueError(f"`seq_len` must be >= 2, got {self.seq_len}.")
        if self.vocab_size < 300:
            raise ValueError(f"`vocab_size` must be >= 300 (256 bytes + specials + merges), got {self.vocab_size}.")
        from wrenlm.configuration.presets import PRESETS

        if self.preset not in PRESETS:
            raise ValueError(
                f"Unknown preset {self.preset!r}{did_you_mean(self.preset, PRESETS)} "
                f"(presets: {', '.join(sorted(PRESETS))})."
            )
        check_model_settings(self.model, source="the model settings")


# ----------------------------------------------------------------------------------------------
# Files and overrides
def read_config_file(path: str | os.PathLike) -> dict:
    """A YAML (.yaml/.yml) or TOML (.toml) mapping; JSON is valid YAML."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(text)
        else:
            values = yaml.safe_load(text) or {}
    except UnicodeDecodeError as error:
        raise ValueError(f"Config file {path} is not UTF-8 text (byte offset {error.start}).") from None
    except (yaml.YAMLError, ValueError) as error:  # tomllib.TOMLDecodeError is a ValueError
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        kind = "TOML" if path.suffix.lower() == ".toml" else "YAML"
        raise ValueError(f"Config file {path} is not valid {kind}{at}: {problem}.") from None
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path} must hold a mapping of settings, got {type(values).__name__}.")
    return values


def did_you_mean(name: str, choices, prefix: str = "", suffix: str = "") -> str:
    """`"; did you mean 'x'?"` for the closest of `choices` (difflib), or "" when none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1)
    return f"; did you mean '{prefix}{match[0]}{suffix}'?" if match else ""


def model_setting_names() -> set[str]:
    """Keys a `model:` mapping may hold: `WrenConfig` fields plus the legacy names transformers still converts."""
    from wrenlm.configuration import WrenConfig

    legacy = {"rope_theta", "rope_scaling", "torch_dtype", "attn_implementation", "experts_implementation"}
    return {f.name for f in dataclasses.fields(WrenConfig)} | legacy


def check_model_settings(values: dict, source: str) -> None:
    """A typo'd model key would otherwise be stored in config.json and silently ignored by the model."""
    known = model_setting_names()
    for key in values:
        if key not in known:
            hint = did_you_mean(str(key), known, prefix="model.")
            raise ValueError(f"Unknown setting 'model.{key}' in {source}{hint} (WrenConfig has no such field).")


def _field_types(config_cls) -> dict[str, typing.Any]:
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


def _coerce(name: str, value, annotation):
    """Check/convert one value against a field annotation (ints/floats/bools/str/list/dict/None)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(name, value, non_none[0])
    if origin is list or annotation is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"`{name}` must be a list, got {value!r}.")
        inner = args[0] if args else str
        return [_coerce(name, v, inner) for v in value]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ValueError(f"`{name}` must be a mapping, got {value!r}.")
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"`{name}` must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ValueError(f"`{name}` must be an integer, got {value!r}.")
        return int(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"`{name}` must be a number, got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ValueError(f"`{name}` must be a string, got {value!r}.")
        return str(value)
    return value


def apply_overrides(config, values: dict, source: str = "overrides"):
    """Return a copy of `config` with `values` applied; unknown keys are errors naming `source`."""
    types = _field_types(type(config))
    updates = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in types:
            head, dot, tail = name.partition(".")  # `--set mdel.x=1`: suggest `model.x`
            hint = did_you_mean(head, types, suffix=dot + tail) or f"; known settings: {', '.join(sorted(types))}"
            if isinstance(value, dict) and value:  # `--set model.x=1` where there is no `model` mapping
                key = f"{key}.{next(iter(value))}"
            raise ValueError(f"Unknown setting {key!r} in {source}{hint}")
        if name == "model" and isinstance(value, dict):
            check_model_settings(value, source)
            merged = dict(updates.get("model", getattr(config, "model", {})))
            merged.update(value)
            updates["model"] = merged
            continue
        updates[name] = _coerce(name, value, types[name])
    return dataclasses.replace(config, **updates)


def parse_set_pairs(pairs: list[str]) -> dict:
    """`["max_steps=10", "model.hidden_size=128"]` -> `{"max_steps": 10, "model": {"hidden_size": 128}}`.

    Values are parsed as YAML scalars/lists (so `3e-4`, `true`, `[a, b]` work).
    """
    values: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}.")
        key, raw = pair.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw.strip() else ""
        if isinstance(value, str) and _is_float(raw):
            value = float(raw)
        if key.startswith("model."):
            values.setdefault("model", {})[key[len("model.") :]] = value
        else:
            values[key] = value
    return values


def _is_float(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, skip: tuple[str, ...] = ()) -> None:
    """One `--flag-name` per dataclass field (default: not given), plus --config and --set."""
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML file of settings (CLI flags override it)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override any setting, e.g. --set warmup_steps=20 --set model.num_hidden_layers=2",
    )
    for f in dataclasses.fields(config_cls):
        if f.name in skip or f.name == "model":
            continue
        annotation = _field_types(config_cls)[f.name]
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        help_text = f"(default: {default!r})"
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(annotation) is list:
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=help_text)
        else:
            base = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
            kind = base[0] if base[0] in (int, float) else str
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=help_text)


def config_from_args(args: argparse.Namespace, config_cls):
    """Defaults < --config file < flags < --set, validated."""
    config = config_cls()
    if getattr(args, "config", None):
        config = apply_overrides(config, read_config_file(args.config), source=str(args.config))
    names = {f.name for f in dataclasses.fields(config_cls)}
    flags = {name: value for name, value in vars(args).items() if name in names}
    config = apply_overrides(config, flags, source="command-line flags")
    config = apply_overrides(config, parse_set_pairs(getattr(args, "set", []) or []), source="--set")
    config.validate()
    return config


def config_to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


__all__ = [
    "PretrainConfig",
    "TrainingConfig",
    "add_config_arguments",
    "apply_overrides",
    "check_model_settings",
    "config_from_args",
    "config_to_dict",
    "did_you_mean",
    "parse_set_pairs",
    "read_config_file",
]
