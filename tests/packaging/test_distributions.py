"""The sdist is the tracked source tree; the wheel is the package with every file it reads at run time, and the same
whether built from the tree or from the sdist; the metadata a package index shows is complete."""

import email.parser
import fnmatch
import hashlib
import sys
import tarfile
import tomllib
import zipfile
from pathlib import PurePosixPath

from packaging.requirements import Requirement

from wren_testing.packaging import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
DIST_INFO = f"wrenlm-{VERSION}.dist-info"

# Tracked files the sdist leaves out: git and CI plumbing.
NOT_IN_SDIST = [".gitignore", ".ci/*"]
# Tracked files inside package folders that the package never reads: the README's screenshots (in the sdist).
NOT_IN_WHEEL = ["demo/assets/*"]
# Files setuptools writes into every sdist.
SDIST_GENERATED = ["PKG-INFO", "setup.cfg", "wrenlm.egg-info/*"]
EXTRAS = ["demo", "gguf", "deepspeed", "track", "liger", "all", "test"]


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _sdist_files(path: str) -> set[str]:
    with tarfile.open(path) as archive:
        names = {member.name for member in archive.getmembers() if member.isfile()}
    prefix = f"wrenlm-{VERSION}/"
    assert all(name.startswith(prefix) for name in names)
    return {name.removeprefix(prefix) for name in names}


def _wheel_contents(path: str) -> dict[str, str]:
    with zipfile.ZipFile(path) as archive:
        return {name: hashlib.sha256(archive.read(name)).hexdigest() for name in archive.namelist()}


def _installed_path(source: str) -> str | None:
    """Where the tracked file `source` lands in the wheel per pyproject's package-dir (None: outside every package)."""
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    folder = str(PurePosixPath(source).parent)
    owners = [
        (package, root) for package, root in package_dir.items() if folder == root or folder.startswith(root + "/")
    ]
    if not owners:
        return None
    package, root = max(owners, key=lambda owner: len(owner[1]))
    return package.replace(".", "/") + source.removeprefix(root)


def test_sdist_is_the_tracked_tree(distributions):
    in_sdist = {name for name in _sdist_files(distributions["sdist"]) if not _matches(name, SDIST_GENERATED)}
    expected = {name for name in distributions["tracked"] if not _matches(name, NOT_IN_SDIST)}
    assert sorted(expected - in_sdist) == [], "tracked files missing from the sdist (MANIFEST.in)"
    assert sorted(in_sdist - expected) == [], "untracked or excluded files in the sdist"


def test_wheel_holds_every_package_file_and_nothing_else(distributions):
    in_wheel = {name for name in _wheel_contents(distributions["wheel"]) if not name.startswith(DIST_INFO + "/")}
    expected = {
        _installed_path(name)
        for name in distributions["tracked"]
        if _installed_path(name) and not _matches(name, NOT_IN_WHEEL)
    }
    # A tracked file in a package folder that is not in the wheel: add it to package-data (pyproject) if the
    # package reads it, else to NOT_IN_WHEEL.
    assert sorted(expected - in_wheel) == [], "package files missing from the wheel"
    assert sorted(in_wheel - expected) == [], "files in the wheel that are not tracked package files"
    assert {name.split("/")[0] for name in in_wheel} == {"wrenlm"}  # no tests/, bench/ or stray top-level module


def test_wheel_from_sdist_is_the_wheel_from_the_tree(distributions):
    from_sdist = _wheel_contents(distributions["wheel"])
    from_tree = _wheel_contents(distributions["wheel_from_tree"])
    assert sorted(from_sdist) == sorted(from_tree)
    assert [name for name in from_sdist if from_sdist[name] != from_tree[name]] == []


def test_metadata_an_index_shows(distributions):
    with zipfile.ZipFile(distributions["wheel"]) as archive:
        metadata = email.parser.Parser().parsestr(archive.read(f"{DIST_INFO}/METADATA").decode())
        assert f"{DIST_INFO}/licenses/LICENSE" in archive.namelist()
    assert metadata["Name"] == "wrenlm" and metadata["Version"] == VERSION
    assert metadata["Summary"] == PYPROJECT["project"]["description"]
    assert metadata["License-Expression"] == "Apache-2.0" and metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == (REPO / "README.md").read_text().strip()
    # The Python the suite runs on is declared, and the oldest one declared is the floor of Requires-Python.
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    versions = [c.rsplit(" :: ", 1)[1] for c in metadata.get_all("Classifier") if c.startswith("Programming Language")]
    tested = sorted((v for v in versions if v.count(".") == 1), key=lambda v: tuple(map(int, v.split("."))))
    assert running in tested and metadata["Requires-Python"] == f">={tested[0]}"
    assert set(metadata.get_all("Provides-Extra")) == set(EXTRAS)
    by_extra = {}  # extra -> the projects (with their extras) it brings
    for line in metadata.get_all("Requires-Dist"):
        requirement = Requirement(line)
        extra = next((e for e in EXTRAS if requirement.marker and requirement.marker.evaluate({"extra": e})), None)
        by_extra.setdefault(extra, set()).add((requirement.name, frozenset(requirement.extras)))
    assert by_extra["demo"] == {
        ("gradio", frozenset()),
        ("markdown-it-py", frozenset()),
        ("pygments", frozenset()),
    } and by_extra["gguf"] == {("gguf", frozenset())}
    assert by_extra["deepspeed"] == {("deepspeed", frozenset())} and by_extra["track"] == {
        ("tensorboard", frozenset())
    }
    assert by_extra["liger"] == {("liger-kernel", frozenset())}  # CUDA only, so not in "all"
    assert by_extra["all"] == {("wrenlm", frozenset({"demo", "gguf", "deepspeed", "track"}))}
    assert {"torch", "transformers", "accelerate"} <= {name for name, _ in by_extra[None]}
