"""Downloading a model or adapter repository from the Hub into a folder (`wren pull`)."""

from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from .checks import FolderCheck, check_folder


def pull(repo_id: str, out_dir: str | Path | None = None, *, revision: str | None = None, token=None) -> FolderCheck:
    """Download `repo_id` into `out_dir` (default: a folder named after the repo) and check what arrived."""
    out_dir = Path(out_dir or repo_id.rstrip("/").split("/")[-1])
    try:
        snapshot_download(repo_id, local_dir=out_dir, revision=revision, token=token)
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"No repository {repo_id} on the Hub (if it is private, log in or pass a token with access)"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"Repository {repo_id} has no revision {revision!r}") from None
    return check_folder(out_dir)
