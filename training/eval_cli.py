"""`wren eval`: perplexity, bits per character and exact match through `evaluate` (offline metric modules).

wren eval                                                   # the wren pretrain model on its validation split
wren eval --model runs/wren-nano-shakespeare --data builtin:arithmetic --metric exact_match
wren eval --model runs/wren-nano-shakespeare --adapter runs/wren-lora --data builtin:arithmetic \
    --metric exact_match perplexity --out results.json
"""

import argparse
import json
import sys

from ..output_dir import add_force_argument, check_output_file
from ..paths import DEFAULT_OUTPUT_DIR
from .metrics import METRIC_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.epilog = (
        "--data: `default` (the default corpus' validation split, as `wren pretrain` cuts it), text files or folders, "
        "a messages JSONL file, or builtin:NAME (a built-in task's test split). On chat data perplexity and bits per "
        "character cover the assistant tokens; exact_match greedily answers each conversation's last turn."
    )
    parser.add_argument(
        "--model",
        metavar="DIR",
        help=f"model folder (or an adapter folder); default: the --adapter's base model, else {DEFAULT_OUTPUT_DIR}",
    )
    parser.add_argument("--adapter", metavar="DIR", help="LoRA adapter folder written by `wren finetune`")
    parser.add_argument("--data", default="default", help="default | FILE_OR_FOLDER | builtin:NAME")
    parser.add_argument(
        "--metric",
        nargs="+",
        default=["perplexity"],
        choices=METRIC_NAMES,
        metavar="NAME",
        help=f"one or more of: {', '.join(METRIC_NAMES)}",
    )
    parser.add_argument("--out", metavar="FILE", help="also write the results as JSON here")
    add_force_argument(parser, "--out", is_file=True)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256, help="block length for text data")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="exact match: longest generated answer")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N blocks/conversations (0: all)")
    parser.add_argument("--device", help="e.g. cpu, cuda, cuda:1 (None: cuda when available)")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="PyTorch CPU threads (0: the usable cores, fewer when others are busy)",
    )


def run(args: argparse.Namespace) -> int:
    if args.out:
        check_output_file(args.out, force=args.force)  # before the model is loaded and scored
    from ..cpu_threads import apply_cpu_threads
    from .evaluation import run_evaluation

    apply_cpu_threads(args.cpu_threads)
    results = run_evaluation(
        args.model or (None if args.adapter else DEFAULT_OUTPUT_DIR),
        data=args.data,
        metrics=args.metric,
        adapter=args.adapter,
        out=args.out,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit,
        device=args.device,
    )
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    from wrenlm.cli import main as wren_main

    return wren_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
