"""Helpers for tests/packaging (`wren_testing.packaging`): build the distributions once, install the wheel in a
fresh venv.

`build_distributions`: an sdist and two wheels built from a copy of the tracked files only (untracked junk in the
checkout cannot leak in): one wheel from the tree, one from the sdist (what pip does with an sdist).
`install_wheel`: a fresh virtual environment with that wheel installed, not editable. Its dependencies are this
test environment's pinned ones, reached through a .pth file that lists their site-packages folders: a .pth line
only adds a folder to sys.path, so the .pth files inside those folders (the editable wrenlm finder among them)
never run, and the fresh environment's own site-packages comes first.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_checked(command: list, **kwargs) -> str:
    result = subprocess.run([str(part) for part in command], check=False, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result.stdout


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (e.g. an unpacked sdist): the packaging check builds from the tracked files")
    listed = run_checked(["git", "-C", REPO, "ls-files", "-z"]).split("\0")
    return sorted(name for name in listed if name and (REPO / name).is_file())  # not files deleted since


def build_distributions(folder: Path) -> dict:
    tracked = tracked_files()
    tree = folder / "tree"
    for name in tracked:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tree / name)
    # A second copy: a build leaves build/ and *.egg-info behind, which must not feed the other build.
    shutil.copytree(tree, folder / "tree-for-wheel")
    # --no-isolation: offline, with the pinned setuptools of the test extras; `build` still checks that they
    # satisfy [build-system] requires.
    build = [sys.executable, "-m", "build", "--no-isolation"]
    run_checked([*build, "--wheel", "--outdir", folder / "from-tree", folder / "tree-for-wheel"])
    run_checked([*build, "--outdir", folder / "from-sdist", tree])  # the sdist, then a wheel built from it
    (sdist,) = (folder / "from-sdist").glob("*.tar.gz")
    (wheel,) = (folder / "from-sdist").glob("*.whl")
    (wheel_from_tree,) = (folder / "from-tree").glob("*.whl")
    return {"sdist": str(sdist), "wheel": str(wheel), "wheel_from_tree": str(wheel_from_tree), "tracked": tracked}


def install_wheel(folder: Path, wheel: str) -> dict:
    venv = folder / "venv"
    run_checked([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    # pip runs in the fresh environment before the .pth below exists, so it sees no other wrenlm to replace.
    run_checked([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel])
    site_packages = Path(run_checked([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    dependency_paths = [
        entry for entry in sys.path if Path(entry).name in ("site-packages", "dist-packages") and Path(entry).is_dir()
    ]
    assert sysconfig.get_path("purelib") in dependency_paths
    (site_packages / "wrenlm_test_dependencies.pth").write_text("\n".join(dependency_paths) + "\n")
    return {"venv": str(venv), "python": str(python), "site_packages": str(site_packages)}
