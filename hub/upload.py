"""Uploading a saved checkpoint folder in one commit through huggingface_hub.

Used by `WrenPreTrainedModel.push_to_hub` (through model_hooks.py) and `wren push`.
"""

from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, get_token, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

NO_TOKEN_MESSAGE = (
    "No Hugging Face token: log in with `hf auth login`, set the HF_TOKEN environment variable, "
    "or pass a token (token=... / --token) with write access."
)


def require_token(token: str | bool | None) -> str:
    """The token to push with (given, else the logged-in one); a clear error before any upload when there is none."""
    if token is False:
        raise ValueError(NO_TOKEN_MESSAGE)
    resolved = token if isinstance(token, str) else get_token()
    if not resolved:
        raise ValueError(NO_TOKEN_MESSAGE)
    return resolved


def pushable_files(folder: str | Path) -> list[str]:
    """The repository files of a checkpoint folder: its top-level, non-hidden files.

    Sub-folders (training checkpoints, logs, download caches) are not part of a model repository.
    """
    return sorted(p.name for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith("."))


def fetch_remote_file(repo_id: str, filename: str, folder: str | Path, *, token: str, revision=None) -> bool:
    """Copy `filename` from the Hub repo into `folder` when the repo (and the file) exist; True when copied."""
    try:
        cached = hf_hub_download(repo_id, filename, revision=revision, token=token)
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
        return False
    (Path(folder) / filename).write_bytes(Path(cached).read_bytes())
    return True


def ensure_repo(repo_id: str, *, token: str, private: bool | None = None) -> str:
    """Create the model repo unless it exists; returns its full id (a bare name gets the token owner's namespace)."""
    return HfApi(token=token).create_repo(repo_id, private=private, exist_ok=True).repo_id


def upload_checkpoint_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str,
    files: list[str] | None = None,
    replacements: dict[str, bytes] | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str = "Upload model",
    commit_description: str | None = None,
):
    """Commit `files` (default: `pushable_files`) to an existing repo; returns the `CommitInfo`.

    `replacements` maps a file name to the bytes to upload instead of the folder's copy (or in addition to it).
    """
    folder, replacements = Path(folder), dict(replacements or {})
    names = sorted(set(files if files is not None else pushable_files(folder)) | set(replacements))
    api = HfApi(token=token)
    if revision not in (None, "main") and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=replacements.get(name, str(folder / name)))
        for name in names
    ]
    return api.create_commit(
        repo_id,
        operations,
        commit_message=commit_message,
        commit_description=commit_description,
        revision=revision,
        create_pr=create_pr,
    )
