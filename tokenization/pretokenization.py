"""Reading a corpus for BPE training: files in blocks, special tokens cut out, pre-tokens counted once.

Both training backends read text through `iter_text_segments`, so they see exactly the same pieces:

* Inputs are files or directories (walked recursively in sorted order, hidden entries skipped), read as
  strict UTF-8; a leading byte-order mark is dropped. Newlines are kept as they are (no CRLF translation).
* Each file is cut into blocks of about `block_bytes` bytes, only right before a ``\\n`` that follows an
  ASCII letter or digit. `WREN_PRETOKENIZE_PATTERN` never lets a match run from a letter or digit into
  whitespace (only punctuation takes the line breaks after it) and has no look-behind, so pre-tokenizing
  the blocks one by one gives exactly the pre-tokens of the whole file; memory stays bounded by the block
  size, not the file size (a file with no such line end stays one block).
* Special tokens are matched first (leftmost, longest, as `tokenizers` matches added tokens) and
  removed: text on either side is pre-tokenized separately and no merge can ever span or build them.

`count_pretokens` then counts each distinct pre-token (as its byte-level string) over the corpus, in
worker processes when there are several blocks; only the counts are kept, never the token lists.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import regex
from tqdm.auto import tqdm

from .tokenization_wren import WREN_PRETOKENIZE_PATTERN, bytes_to_unicode

DEFAULT_BLOCK_BYTES = 1 << 20
# A block may end only right before "\n" that follows an ASCII letter or digit (see the module docstring).
_SAFE_CUT = re.compile(rb"[A-Za-z0-9]\n")
_BOM = "\ufeff"
# str.translate table: a latin-1 decoded byte string -> GPT-2 byte-level characters.
_BYTE_LEVEL_TABLE = str.maketrans({chr(byte): char for byte, char in bytes_to_unicode().items()})

_PRETOKENIZER = regex.compile(WREN_PRETOKENIZE_PATTERN)


def to_byte_level(text: str) -> str:
    """The byte-level string of `text`: one GPT-2 alphabet character per UTF-8 byte."""
    return text.encode("utf-8").decode("latin-1").translate(_BYTE_LEVEL_TABLE)


def pretokenize(text: str) -> list[str]:
    """Split `text` with `WREN_PRETOKENIZE_PATTERN` (Python `regex`); the pieces concatenate back to `text`."""
    return _PRETOKENIZER.findall(text)


def validate_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    """Special tokens in order, duplicates dropped; empty strings and whitespace are rejected."""
    seen: dict[str, None] = {}
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        if any(char.isspace() for char in token):
            raise ValueError(f"special token {token!r} contains whitespace; special tokens must be one visible word")
        seen.setdefault(token, None)
    return list(seen)


class SpecialTokenSplitter:
    """Cuts text on special tokens (leftmost match, longest token first) and drops the tokens."""

    def __init__(self, special_tokens: Sequence[str] = ()):
        tokens = sorted(set(special_tokens), key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, tokens))) if tokens else None

    def split(self, text: str) -> list[str]:
        pieces = self._pattern.split(text) if self._pattern is not None else [text]
        return [piece for piece in pieces if piece]


def resolve_input_files(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (recursively, sorted, hidden entries skipped) into a list of files."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                files.extend(Path(root) / name for name in sorted(names) if not name.startswith("."))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ValueError(f"input is neither a file nor a directory: {path}")
        else:
            raise FileNotFoundError(f"input not found: {path}")
    for file in files:
        if not os.access(file, os.R_OK):
            raise PermissionError(f"input is not readable: {file}")
    return files


def plan_blocks(files: Sequence[Path], block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[tuple[str, int, int]]:
    """Byte ranges `(path, start, end)` covering every file, cut at safe points about `block_bytes` apart."""
    blocks = []
    for file in files:
        size = file.stat().st_size
        start = 0
        with open(file, "rb") as handle:
            while size - start > block_bytes:
                cut = _find_cut(handle, start + block_bytes, size)
                if cut is None:
                    break
                blocks.append((str(file), start, cut))
                start = cut
        if size > start:
            blocks.append((str(file), start, size))
    return blocks


def _find_cut(handle, position: int, size: int, window: int = 1 << 16) -> int | None:
    """First safe cut at or after `position` (the offset of a "\\n" that follows an ASCII letter or digit)."""
    while position < size:
        handle.seek(position - 1)
        data = handle.read(window + 1)
        match = _SAFE_CUT.search(data)
        if match is not None:
            return position - 1 + match.start() + 1
        position += window
    return None


def decode_utf8(data: bytes, path: str | os.PathLike, start: int = 0) -> str:
    """`data`, the bytes of `path` from offset `start`, as text; a byte-order mark at the file's start is dropped.

    Not UTF-8: a ValueError naming the file and the offset of the first bad byte.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not UTF-8 text (invalid byte at offset {start + error.start}); "
            "wrenlm reads UTF-8 text files only"
        ) from None
    if start == 0 and text.startswith(_BOM):
        text = text[1:]
    return text


def read_block(block: tuple[str, int, int]) -> str:
    path, start, end = block
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(end - start)
    return decode_utf8(data, path, start)


def check_utf8_files(files: Iterable[str | os.PathLike]) -> None:
    """Decode every file block by block (bounded memory), so bad bytes fail before any long work starts."""
    for block in plan_blocks([Path(file) for file in files]):
        read_block(block)


def iter_text_segments(blocks: Iterable[tuple[str, int, int]], special_tokens: Sequence[str] = ()) -> Iterator[str]:
    """The corpus as the pieces both backends pre-tokenize: blocks with special tokens cut out."""
    splitter = SpecialTokenSplitter(special_tokens)
    for block in blocks:
        yield from splitter.split(read_block(block))


def _count_blocks(job: tuple[list[tuple[str, int, int]], tuple[str, ...]], counts: Counter | None = None) -> Counter:
    blocks, special_tokens = job
    counts = Counter() if counts is None else counts
    for segment in iter_text_segments(blocks, special_tokens):
        counts.update(pretokenize(segment))
    return counts


def _group_blocks(blocks: Sequence[tuple[str, int, int]], groups: int) -> list[list[tuple[str, int, int]]]:
    """Consecutive blocks in about `groups` groups of similar size (one `Counter` to merge per group)."""
    target = sum(end - start for _, start, end in blocks) / groups
    grouped: list[list[tuple[str, int, int]]] = [[]]
    size = 0
    for block in blocks:
        if grouped[-1] and size >= target:
            grouped.append([])
            size = 0
        grouped[-1].append(block)
        size += block[2] - block[1]
    return grouped


# Below this much text, starting worker processes and merging their counts costs more than it saves.
PARALLEL_MIN_BYTES = 16 << 20


def default_num_workers(num_blocks: int, total_bytes: int) -> int:
    if total_bytes < PARALLEL_MIN_BYTES:
        return 1
    return max(1, min(os.cpu_count() or 1, num_blocks, 8))


def count_pretokens(
    blocks: Sequence[tuple[str, int, int]],
    special_tokens: Sequence[str] = (),
    num_workers: int | None = None,
    show_progress: bool = True,
) -> dict[str, int]:
    """Count every distinct pre-token of the corpus; keys are byte-level strings (see `to_byte_level`).

    Blocks are counted in `num_workers` processes (default: one per CPU, at most 8, for corpora of at least
    `PARALLEL_MIN_BYTES`; one process below that); each worker returns one `Counter` per group of blocks
    (4 groups per worker) and the parent merges them, so memory is bounded by the distinct pre-tokens plus
    a block per worker.
    """
    total_bytes = sum(end - start for _, start, end in blocks)
    workers = default_num_workers(len(blocks), total_bytes) if num_workers is None else max(1, num_workers)
    specials = tuple(special_tokens)
    totals: Counter = Counter()
    with tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="Counting pre-tokens", disable=not show_progress
    ) as progress:
        if workers == 1 or len(blocks) <= 1:
            for block in blocks:
                _count_blocks(([block], specials), totals)
                progress.update(block[2] - block[1])
        else:
            jobs = [(group, specials) for group in _group_blocks(blocks, 4 * workers)]
            # fork keeps the parent's imports (no re-import of torch/transformers per worker) where available.
            fork = "fork" in multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if fork else None)
            with context.Pool(workers) as pool:  # leaving the block terminates the workers, also on errors
                for (group, _), counts in zip(jobs, pool.imap(_count_blocks, jobs)):
                    totals.update(counts)
                    progress.update(sum(end - start for _, start, end in group))
    return {to_byte_level(token): count for token, count in totals.items()}
