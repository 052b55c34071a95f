"""Writing Wren's source next to a checkpoint as flat transformers remote code.

In the wrenlm package the code lives in several folders and the modeling files reach the config through the
parent package (`..configuration.configuration_wren`). transformers' own copying (`custom_object_save`, for classes
registered with `register_for_auto_class`) and its dynamic-module loader know only sibling imports (`from .x
import`) in one flat folder, so every file is written flat with its package imports turned into sibling imports.
Only what modeling_wren.py imports is written: the model and its config, none of wrenlm's tooling. A model that was
itself loaded as remote code runs from flat files already; they are copied unchanged (and where wrenlm is not
installed, transformers' own copying re-saves them, as the Auto classes register remote classes for it).
"""

import ast
from pathlib import Path

# Classes of config.json's `auto_map`: what AutoConfig / AutoModel / AutoModelForCausalLM load with
# trust_remote_code=True where wrenlm is not installed.
AUTO_MAP = {
    "AutoConfig": "configuration_wren.WrenConfig",
    "AutoModel": "modeling_wren.WrenModel",
    "AutoModelForCausalLM": "modeling_wren.WrenForCausalLM",
}


def relative_imports(path: Path) -> list[tuple[ast.ImportFrom, Path]]:
    """Each `from .x import` / `from ..pkg.x import` statement of `path` with the file it refers to."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            if not node.module:
                raise ValueError(
                    f"{path}: `from {'.' * node.level} import ...` cannot be exported flat; name the module"
                )
            base = path.parent
            for _ in range(node.level - 1):
                base = base.parent
            found.append((node, base.joinpath(*node.module.split(".")).with_suffix(".py")))
    return found


def code_files(entry: str | Path) -> list[Path]:
    """`entry` and every file it imports relatively, transitively, each once."""
    files, pending = [], [Path(entry)]
    while pending:
        path = pending.pop(0)
        if path in files:
            continue
        files.append(path)
        pending.extend(target for _, target in relative_imports(path))
    names = [path.name for path in files]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Cannot export flat: several code files are named {', '.join(duplicates)}")
    return files


def flat_source(path: Path) -> str:
    """The text of `path` with every relative import rewritten to a sibling import (`from .module import`)."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for node, target in relative_imports(path):
        line = lines[node.lineno - 1]
        written = "." * node.level + node.module
        if written not in line:
            raise ValueError(f"{path}:{node.lineno}: write the import `from {written} import` on one line")
        lines[node.lineno - 1] = line.replace(written, "." + target.stem, 1)
    return "".join(lines)


def export_code(entry: str | Path, save_directory: str | Path) -> list[str]:
    """Write `entry` and its relative imports flat into `save_directory`; returns the file names written."""
    written = []
    for path in code_files(entry):
        destination = Path(save_directory) / path.name
        source = flat_source(path)
        if not destination.exists() or destination.read_text(encoding="utf-8") != source:
            destination.write_text(source, encoding="utf-8")
        written.append(path.name)
    return written
