"""`wren finetune`: LoRA fine-tuning on chat data (messages JSONL or a built-in task).

wren finetune                                              # the wren pretrain model on builtin:arithmetic
wren finetune --model runs/wren-nano-shakespeare --data chat.jsonl --output-dir runs/my-lora --merge
wren finetune --data builtin:reverse --max-steps 300 --lora-r 8
accelerate launch --multi_gpu --num_processes 2 -m wrenlm.training.finetune_cli --data chat.jsonl
"""

import argparse
import sys

from ..output_dir import add_force_argument
from .config import add_config_arguments, config_from_args
from .finetune import FinetuneConfig
from .tasks import BUILTIN_PREFIX, TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    tasks = ", ".join(f"{BUILTIN_PREFIX}{name} ({task.description})" for name, task in TASKS.items())
    parser.epilog = (
        '--data is a JSONL file of {"messages": [{"role": ..., "content": ...}, ...]} lines (roles system, user, '
        f"assistant) or a built-in task: {tasks}. Settings come from the defaults, then --config FILE, then flags, "
        "then --set KEY=VALUE. Multi-process: run this module with `accelerate launch`."
    )
    parser.add_argument(
        "--model",
        dest="base_model",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help=f"base model folder (default: {FinetuneConfig.base_model!r}, what `wren pretrain` writes)",
    )
    # Samples during training are greedy answers to held-out prompts, so the loop's sampling settings do not apply.
    unused = ("sample_prompts", "sample_max_new_tokens", "sample_temperature", "sample_top_k")
    add_force_argument(parser, "--output-dir", resumable=True)
    add_config_arguments(parser, FinetuneConfig, skip=("base_model", *unused))


def run(args: argparse.Namespace) -> int:
    from ..cpu_threads import apply_cpu_threads
    from .finetune import run_finetuning

    config = config_from_args(args, FinetuneConfig)
    apply_cpu_threads(config.cpu_threads)
    run_finetuning(config, force=args.force)
    return 0


def main(argv: list[str] | None = None) -> int:
    from wrenlm.cli import main as wren_main

    return wren_main(["finetune", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
