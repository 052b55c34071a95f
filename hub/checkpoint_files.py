"""Checks that a checkpoint folder's safetensors files are all there and readable, naming the bad file.

Without it a truncated or overwritten shard fails deep inside safetensors ("header too large") without saying
which file is broken. Only headers are read, so the check is cheap. `from_pretrained` of a Wren model runs it
on a local folder when wrenlm is installed (model_hooks.py); `wren push` and `wren pull` run it too.
"""

import json
import struct
from pathlib import Path

SAFE_INDEX_SUFFIX = ".safetensors.index.json"
# A header larger than this is not a safetensors header (the format's own limit is 100 MB).
_MAX_HEADER_BYTES = 100_000_000


class CheckpointFileError(ValueError):
    """A weight file of a checkpoint folder is missing or unreadable; the message names it."""


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype/shape/data_offsets), checked against the size."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"Missing weight file: {path}")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointFileError(f"Corrupt safetensors file {path}: only {size} bytes")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > min(_MAX_HEADER_BYTES, size - 8):
            raise CheckpointFileError(f"Corrupt safetensors file {path}: header length {header_size} is impossible")
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointFileError(f"Corrupt safetensors file {path}: unreadable header ({error})") from None
    if not isinstance(header, dict):
        raise CheckpointFileError(f"Corrupt safetensors file {path}: the header is not a JSON object")
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    data_size = max((info["data_offsets"][1] for info in tensors.values()), default=0)
    if 8 + header_size + data_size != size:
        raise CheckpointFileError(
            f"Corrupt safetensors file {path}: the header describes {8 + header_size + data_size} bytes, "
            f"the file has {size} (truncated or overwritten?)"
        )
    return tensors


def check_checkpoint_files(folder: str | Path) -> list[str]:
    """Check every safetensors file and index of `folder`; returns the weight file names (sorted).

    Each index's shards must exist, be readable, and hold the tensors the index assigns to them.
    Raises `CheckpointFileError` naming the first missing or corrupt file.
    """
    folder = Path(folder)
    names = {path.name for path in folder.glob("*.safetensors")}
    checked = set()
    for index_path in sorted(folder.glob("*" + SAFE_INDEX_SUFFIX)):
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CheckpointFileError(f"Corrupt weight index {index_path}: {error!r}") from None
        shards: dict[str, list[str]] = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(shard, []).append(tensor)
        for shard, tensors in sorted(shards.items()):
            header = safetensors_header(folder / shard)
            absent = [name for name in tensors if name not in header]
            if absent:
                raise CheckpointFileError(
                    f"Weight file {folder / shard} lacks {len(absent)} tensor(s) that {index_path.name} puts there, "
                    f"e.g. {absent[0]}"
                )
            checked.add(shard)
    for name in sorted(names - checked):
        safetensors_header(folder / name)
    return sorted(names | checked)
