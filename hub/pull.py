"""Downloading a model or adapter repository from the Hub into a folder (`wren pull`)."""

import contextlib
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError

from ..output_dir import check_output_dir, mark_output_dir, read_marker
from ..paths import OUTPUT_MARKER_FILE
from .checks import FolderCheck, check_folder


def pull(
    repo_id: str, out_dir: str | Path | None = None, *, revision: str | None = None, token=None, force: bool = False
) -> FolderCheck:
    """Download `repo_id` into `out_dir` (default: a folder named after the repo) and check what arrived.

    `out_dir` must be new, empty or an earlier pull of the same repository (an interrupted download continues),
    unless `force`."""
    out_dir = Path(out_dir or repo_id.rstrip("/").split("/")[-1])
    check_output_dir(out_dir, "pull", force=force, resumable=True, identity={"repo": repo_id})
    # Ask the Hub first: snapshot_download falls back to whatever the local folder holds when the Hub cannot be
    # reached, which would report a network failure as a broken folder. (Offline by choice, HF_HUB_OFFLINE=1, it
    # checks what an earlier pull left in the folder.)
    try:
        HfApi(token=token).repo_info(repo_id, revision=revision)
    except OfflineModeIsEnabled:
        pass
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise _not_found(repo_id, revision, error) from None
    existed, marked = out_dir.exists(), read_marker(out_dir) is not None
    mark_output_dir(out_dir, "pull", repo=repo_id)  # an interrupted download is continued by the next pull
    try:
        snapshot_download(repo_id, local_dir=out_dir, revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:  # e.g. a gated repo without access
        if not marked:  # nothing was downloaded: take back what this call wrote
            (out_dir / OUTPUT_MARKER_FILE).unlink(missing_ok=True)
            if not existed:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
        raise _not_found(repo_id, revision, error) from None
    return check_folder(out_dir)


def _not_found(repo_id: str, revision: str | None, error: Exception) -> FileNotFoundError:
    if isinstance(error, RevisionNotFoundError):
        return FileNotFoundError(f"Repository {repo_id} has no revision {revision!r}")
    return FileNotFoundError(
        f"No repository {repo_id} on the Hub (if it is private or gated, log in or pass a token with access)"
    )
