"""`wren convert`: HF checkpoint -> Wren, or Wren -> HF; the direction follows the source's model_type."""

import argparse
from pathlib import Path

from ..output_dir import add_force_argument, check_output_dir, staged_output_dir
from .config_mapping import SOURCE_MODEL_TYPES, TARGET_MODEL_TYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help=f"checkpoint folder or Hub id: a Hugging Face {'/'.join(SOURCE_MODEL_TYPES)} model "
        "(converted to Wren) or a Wren model (converted back)",
    )
    source.add_argument(
        "--gguf",
        metavar="FILE",
        help="a GGUF file (llama.cpp) of one of those families, dequantized by transformers and converted to Wren "
        "(needs `pip install 'wrenlm[gguf]'`)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the converted checkpoint to")
    add_force_argument(parser, "--out")
    parser.add_argument(
        "--to",
        choices=("wren",) + TARGET_MODEL_TYPES,
        default=None,
        help="target architecture: Wren for Hugging Face sources; for a Wren source the HF family "
        "(default: the one that expresses the model exactly)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weight dtype of the converted model (default: keep the source's)",
    )
    parser.add_argument(
        "--max-shard-size", default="2GB", help="largest safetensors shard, e.g. 500MB or 5GB (default: 2GB)"
    )


def _convert_gguf(args: argparse.Namespace, out: Path):
    from .gguf import convert_gguf_to_wren

    if args.to not in (None, "wren"):
        raise ValueError(f"A GGUF file converts to Wren; --to {args.to} only applies to a Wren --from checkpoint.")
    model = convert_gguf_to_wren(args.gguf, out, dtype=args.dtype, max_shard_size=args.max_shard_size)
    return model, f"Converted GGUF {args.gguf} -> Wren ({model.num_parameters():,} parameters, {model.dtype})"


def _convert(args: argparse.Namespace, out: Path):
    from . import convert_from_wren, convert_to_wren
    from .checkpoint_io import source_model_type

    model_type = source_model_type(args.source)
    if model_type == "wren":
        if args.to == "wren":
            raise ValueError(f"{args.source} is already a Wren checkpoint; pick an HF family with --to.")
        model = convert_from_wren(
            args.source, out, target=args.to, dtype=args.dtype, max_shard_size=args.max_shard_size
        )
        return model, f"Converted Wren -> {model.config.model_type} ({type(model).__name__})"
    if args.to not in (None, "wren"):
        raise ValueError(
            f"{args.source} is a {model_type} checkpoint, which converts to Wren; --to {args.to} only applies "
            "when converting a Wren checkpoint back."
        )
    model = convert_to_wren(args.source, out, dtype=args.dtype, max_shard_size=args.max_shard_size)
    layout = f"MoE, {model.config.num_experts} experts" if model.config.is_moe else "dense"
    return model, f"Converted {model_type} -> Wren ({layout}, {model.num_parameters():,} parameters)"


def run(args: argparse.Namespace) -> int:
    from ..hub.model_card import CARD_FILE, is_generated_card
    from ..hub.model_hooks import write_card

    check_output_dir(args.out, "convert", force=args.force)  # before any weights are read
    # Written into a hidden sibling first, so a failed or killed conversion leaves no half checkpoint in --out.
    with staged_output_dir(args.out, "convert") as staging:
        model, message = (_convert_gguf if args.gguf else _convert)(args, staging)
        if is_generated_card(staging / CARD_FILE):  # named after the folder it was written in: the staging one
            write_card(model, staging, name=Path(args.out).name)
    print(f"{message} into {args.out}")
    return 0
