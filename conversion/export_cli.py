"""`wren export gguf MODEL --out FILE`: a Wren checkpoint as one self-contained GGUF file for llama.cpp."""

import argparse

from .gguf_export import OUTPUT_TYPES

_FORMATS = ("gguf",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=_FORMATS, help="output format: gguf (llama.cpp, with the tokenizer)")
    parser.add_argument("model", metavar="MODEL", help="Wren checkpoint folder (or Hub id)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the .gguf file to write")
    parser.add_argument(
        "--type",
        dest="outtype",
        choices=("auto",) + OUTPUT_TYPES,
        default="auto",
        help="storage type of the weight matrices; norms, biases and MoE routers stay f32 (default auto: bf16 "
        "for a bfloat16 checkpoint, else f16)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    from .gguf_export import export_gguf

    result = export_gguf(args.model, args.out, outtype=args.outtype, overwrite=args.force)
    size = result.path.stat().st_size / 2**20
    print(
        f"Wrote {result.path} ({size:.1f} MiB): llama.cpp architecture {result.architecture}, {result.outtype}, "
        f"{result.tensor_count} tensors, tokenizer pre-tokenizer {result.pre_tokenizer!r}"
    )
    if result.f16_fallbacks:
        print(
            f"{len(result.f16_fallbacks)} tensor(s) kept as f16 (rows not a multiple of Q8_0's 32-value block), "
            f"e.g. {result.f16_fallbacks[0]}"
        )
    return 0
