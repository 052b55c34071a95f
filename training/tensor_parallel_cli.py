"""Tensor-parallel pretraining with `wren pretrain`'s settings, on the processes torchrun starts.

torchrun --nproc_per_node 2 -m wrenlm.training.tensor_parallel_cli --tokenizer runs/wren-nano-shakespeare \\
    --max-steps 200 --output-dir runs/tp                  # every `wren pretrain` flag, --config and --set work

See `wrenlm.training.tensor_parallel` for what it does and does not do.
"""

import argparse
import sys

from ..output_dir import add_force_argument
from .config import PretrainConfig, add_config_arguments, config_from_args

PROG = "torchrun --nproc_per_node N -m wrenlm.training.tensor_parallel_cli"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tensor-parallel pretraining with `wren pretrain`'s settings (see docs/distributed.md).",
    )
    add_force_argument(parser, "--output-dir")
    add_config_arguments(parser, PretrainConfig)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args, PretrainConfig)
        from ..cpu_threads import apply_cpu_threads
        from .tensor_parallel import run_tensor_parallel_pretraining

        apply_cpu_threads(config.cpu_threads)
        run_tensor_parallel_pretraining(config, force=args.force)
    except (ValueError, FileNotFoundError) as error:  # bad settings, data or output folder: one line
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
