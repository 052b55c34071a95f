"""The output-folder guard of every `wren` command that writes a folder or a file.

A command writes into a folder only when it is missing or empty, when it holds this command's own
earlier output that the command continues (`wren pretrain` / `wren finetune` resuming, `wren pull`
of the same repository), or when the user passes `--force`. Even then it replaces only the files it
writes itself: nothing it did not write is deleted or changed. A folder says which command wrote it
in a hidden marker file (`OUTPUT_MARKER_FILE`; pushes skip hidden files).

    own = check_output_dir(out, "pretrain", force=args.force, resumable=True)   # before any long work
    mark_output_dir(out, "pretrain")                                              # just before the first write
    with staged_output_dir(out, "convert") as staging:                            # all or nothing
        tokenizer.save_pretrained(staging)
    check_output_file(results_path, force=args.force)
    write_text_atomic(results_path, text)

Standard library only.
"""

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from .paths import OUTPUT_MARKER_FILE


class OutputFolderError(ValueError):
    """An output folder or file the command may not write to (reported in one line by the CLI)."""


def read_marker(folder: str | os.PathLike) -> dict | None:
    """What a folder's marker says about the command that wrote it, or None (no marker, or not one of ours)."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def _listing(folder: Path, limit: int = 3) -> str:
    names = sorted(entry.name for entry in folder.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output_dir(
    folder: str | os.PathLike,
    command: str,
    *,
    force: bool = False,
    resumable: bool = False,
    identity: dict | None = None,
    legacy_files: tuple[str, ...] = (),
) -> bool:
    """Raise `OutputFolderError` unless `wren COMMAND` may write into `folder`; reads only, writes nothing.

    Returns True when `folder` holds this command's own output that it continues: `resumable` commands
    whose marker matches (`identity`: marker fields that must match too, e.g. the repository of a pull),
    or, for folders written before markers existed, that hold one of `legacy_files`.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(f"Output folder {folder} exists and is not a folder.")
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    marker = read_marker(folder)
    if resumable:
        if marker is not None and marker["command"] == command:
            if all(marker.get(key) == value for key, value in (identity or {}).items()):
                return True
        elif marker is None and any((folder / name).is_file() for name in legacy_files):
            return True
    if force:
        return False
    if marker is None:
        what = f"is not empty ({_listing(folder)}) and was not written by `wren {command}`"
    else:
        details = "".join(f", {key} {marker.get(key)}" for key in (identity or {}) if marker["command"] == command)
        what = f"is not empty (an earlier `wren {marker['command']}` output{details})"
    raise OutputFolderError(
        f"Output folder {folder} {what}; choose another folder, or pass --force to write into it "
        "(only the files wren writes are replaced)."
    )


def mark_output_dir(folder: str | os.PathLike, command: str, **fields) -> Path:
    """Create `folder` if needed and record that `wren COMMAND` writes there (call it right before the first write)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / OUTPUT_MARKER_FILE, json.dumps({"command": command, **fields}, indent=2) + "\n")
    return folder


_STAGING_SUFFIX = re.compile(r"\.tmp-[0-9a-f]{8}$")


def _staging_dirs(folder: Path) -> list[Path]:
    """Staging folders of `folder` that an interrupted run left (only wrenlm's own naming)."""
    prefix = f".{folder.name}"
    if not folder.parent.is_dir():
        return []
    return [
        path
        for path in folder.parent.iterdir()
        if path.is_dir() and path.name.startswith(prefix) and _STAGING_SUFFIX.fullmatch(path.name[len(prefix) :])
    ]


@contextlib.contextmanager
def staged_output_dir(folder: str | os.PathLike, command: str) -> Iterator[Path]:
    """Write a folder's files into a hidden sibling, then move them into `folder` only when all are written.

    A missing or empty `folder` is replaced in one rename, so it never holds half an output. A non-empty one
    (the caller checked `--force`) gets the new files in place of their namesakes; files that an earlier run of
    the same command wrote and this one does not are removed; every other file stays. Flat folders only.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _staging_dirs(folder):  # a run killed while writing
        shutil.rmtree(leftover, ignore_errors=True)
    staging = folder.parent / f".{folder.name}.tmp-{secrets.token_hex(4)}"
    staging.mkdir()  # unlike mkdtemp, keeps the umask's permissions for the final folder
    try:
        yield staging
        _publish(staging, folder, command)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path, command: str) -> None:
    written = sorted(entry.name for entry in staging.iterdir())
    previous = read_marker(folder) if folder.is_dir() else None
    mark_output_dir(staging, command, files=written)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    if not folder.exists():
        os.replace(staging, folder)
        return
    for name in written:
        os.replace(staging / name, folder / name)
    if previous is not None and previous["command"] == command:
        for name in set(previous.get("files") or []) - set(written):
            if (folder / name).is_file():
                (folder / name).unlink()
    os.replace(staging / OUTPUT_MARKER_FILE, folder / OUTPUT_MARKER_FILE)


def add_force_argument(parser, option: str, *, resumable: bool = False, is_file: bool = False) -> None:
    """The `--force` flag of a command whose output goes to `option`."""
    if is_file:
        text = f"replace an existing {option} file"
    else:
        text = f"write into a non-empty {option} folder that this command did not write (only the files it writes "
        text += "are replaced; nothing else is changed or deleted)"
        if resumable:
            text += "; an earlier run of this command there is continued without it"
    parser.add_argument("--force", action="store_true", help=text)


def check_output_file(path: str | os.PathLike, *, force: bool = False) -> None:
    """Raise `OutputFolderError` when `path` is a folder, or an existing file and `force` is off."""
    path = Path(path)
    if path.is_dir():
        raise OutputFolderError(f"Output file {path} is a folder.")
    if path.exists() and not force:
        raise OutputFolderError(
            f"Output file {path} already exists; choose another name, or pass --force to replace it."
        )


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `path` through a hidden temporary sibling and one rename: a kill leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


__all__ = [
    "OutputFolderError",
    "add_force_argument",
    "check_output_dir",
    "check_output_file",
    "mark_output_dir",
    "read_marker",
    "staged_output_dir",
    "write_text_atomic",
]
