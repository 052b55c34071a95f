"""`wren train-tokenizer`: train a byte-level BPE on text files and save a `WrenTokenizer` folder.

    wren train-tokenizer --input corpus/ notes.txt --vocab-size 8192 --out runs/tokenizer
    wren train-tokenizer --input corpus/ --vocab-size 8192 --special-tokens "<|tool|>" --backend python --out tok

The folder loads with `AutoTokenizer.from_pretrained(out)` after `import wrenlm` (or with
`trust_remote_code=True` without wrenlm).
"""

from __future__ import annotations

import argparse
import time

from ..output_dir import add_force_argument, check_output_dir, staged_output_dir
from .tokenization_wren import DEFAULT_SPECIAL_TOKENS
from .train import BACKENDS, DEFAULT_MIN_FREQUENCY, train_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="FILE_OR_DIR",
        help="UTF-8 text files, or directories read recursively (hidden entries skipped)",
    )
    parser.add_argument("--vocab-size", type=int, required=True, help="total vocabulary size, specials included")
    parser.add_argument(
        "--special-tokens",
        nargs="*",
        default=[],
        metavar="TOKEN",
        help=f"extra special tokens, reserved after the defaults {' '.join(DEFAULT_SPECIAL_TOKENS)}",
    )
    parser.add_argument("--out", required=True, help="output folder for the tokenizer (created if needed)")
    add_force_argument(parser, "--out")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="tokenizers",
        help="tokenizers: the Rust trainer (default); python: Wren's trainer (same result)",
    )
    parser.add_argument(
        "--min-frequency",
        type=int,
        default=DEFAULT_MIN_FREQUENCY,
        help="never merge a pair seen fewer times than this (default: %(default)s)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="python backend: processes counting pre-tokens (default: automatic)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    check_output_dir(args.out, "train-tokenizer", force=args.force)
    tokenizer = train_tokenizer(
        args.input,
        args.vocab_size,
        special_tokens=args.special_tokens,
        backend=args.backend,
        min_frequency=args.min_frequency,
        show_progress=not args.no_progress,
        num_workers=args.num_workers,
    )
    with staged_output_dir(args.out, "train-tokenizer") as staging:  # a kill mid-write leaves no half tokenizer
        tokenizer.save_pretrained(staging)
    seconds = time.perf_counter() - start
    print(
        f"trained a {len(tokenizer)}-token vocabulary ({args.backend} backend) in {seconds:.1f} s; saved to {args.out}"
    )
    if len(tokenizer) < args.vocab_size:
        print(f"note: the corpus supports only {len(tokenizer)} tokens at min_frequency={args.min_frequency}")
    return 0
