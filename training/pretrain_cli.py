"""`wren pretrain`: train a tokenizer and a Wren model (default: wren-nano on Shakespeare).

wren pretrain                                   # the main job, a few minutes on 2 CPU cores
wren pretrain --data my_texts/ --max-steps 2000 --output-dir runs/mine
wren pretrain --config run.yaml --set model.num_hidden_layers=6
accelerate launch --multi_gpu --num_processes 2 -m wrenlm.training.pretrain_cli --output-dir runs/ddp
"""

import argparse
import sys
from pathlib import Path

from ..output_dir import add_force_argument
from .config import PretrainConfig, add_config_arguments, config_from_args

ACCELERATE_CONFIG_DIR = Path(__file__).resolve().parent / "accelerate_configs"


def accelerate_config_path(name: str) -> Path:
    """Path of a shipped accelerate config (`ddp`, `fsdp`, `deepspeed_zero2`, `deepspeed_zero3`, `multi_cpu`)."""
    path = ACCELERATE_CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        available = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIG_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"No accelerate config {name!r}; shipped configs: {available}.")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = (
        "Settings come from the defaults, then --config FILE (YAML/TOML), then flags, then --set KEY=VALUE. "
        "Model fields override the preset: --set model.hidden_size=384. Multi-process: run this module with "
        "`accelerate launch` (see --accelerate-configs)."
    )
    parser.add_argument(
        "--accelerate-configs",
        action="store_true",
        help="print the paths of the shipped accelerate configs (DDP, FSDP, DeepSpeed ZeRO-2/3, multi-CPU) and exit",
    )
    add_force_argument(parser, "--output-dir", resumable=True)
    add_config_arguments(parser, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "accelerate_configs", False):
        for path in sorted(ACCELERATE_CONFIG_DIR.glob("*.yaml")):
            print(f"{path.stem:16s} {path}")
        return 0
    config = config_from_args(args, PretrainConfig)

    from ..cpu_threads import apply_cpu_threads
    from .corpus import CorpusUnavailableError
    from .pretrain import run_pretraining

    apply_cpu_threads(config.cpu_threads)

    try:
        run_pretraining(config, force=args.force)
    except CorpusUnavailableError as error:
        print(f"wren pretrain: error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from wrenlm.cli import main as wren_main

    return wren_main(["pretrain", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
