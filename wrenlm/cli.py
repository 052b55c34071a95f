"""The `wren` command line: one entry point, one module per subcommand.

Each subcommand module provides `add_arguments(parser)` and `run(args) -> int | None`; modules are
imported only when their command runs, so `wren --help` stays fast.
"""

import argparse
import importlib
import os
import sys
from typing import NamedTuple

from huggingface_hub.errors import StrictDataclassError


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train-tokenizer": Command("wrenlm.tokenization.cli", "train a byte-level BPE tokenizer on text files"),
    "pretrain": Command("wrenlm.training.pretrain_cli", "pretrain a Wren model with Accelerate"),
    "finetune": Command("wrenlm.training.finetune_cli", "LoRA fine-tune a Wren model on chat data"),
    "eval": Command("wrenlm.training.eval_cli", "evaluate a model (perplexity, bits/char, exact match)"),
    "convert": Command("wrenlm.conversion.cli", "convert Llama/Mistral/Qwen/Mixtral checkpoints to and from Wren"),
    "import": Command("wrenlm.conversion.import_cli", "import a known pretrained model (e.g. smollm2) offline"),
    "export": Command("wrenlm.conversion.export_cli", "export a Wren model for other runtimes (gguf: llama.cpp)"),
    "chat": Command("wrenlm.demo.cli", "open the Gradio chat demo"),
    "push": Command("wrenlm.hub.cli_push", "push a model or adapter folder to the Hugging Face Hub"),
    "pull": Command("wrenlm.hub.cli_pull", "download a model from the Hugging Face Hub"),
}


def _print_overview() -> None:
    print("usage: wren <command> [options]\n\ncommands:")
    width = max(len(name) for name in COMMANDS)
    for name, command in COMMANDS.items():
        print(f"  {name:<{width}}  {command.summary}")
    print("\nRun `wren <command> --help` for a command's options.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"wren: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name].module)
    parser = argparse.ArgumentParser(prog=f"wren {name}", description=COMMANDS[name].summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, StrictDataclassError) as error:
        # User errors get one clear line; WREN_DEBUG=1 shows the traceback.
        if os.environ.get("WREN_DEBUG"):
            raise
        print(f"wren {name}: error: {error}".strip(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
