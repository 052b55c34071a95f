"""Pushing a saved model or adapter folder to the Hub (`wren push`)."""

import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError

from .checks import ADAPTER_CONFIG, FolderCheck, check_folder
from .model_card import CARD_FILE, write_model_card
from .upload import ensure_repo, pushable_files, require_token, upload_checkpoint_folder

ADAPTER_TAGS = ("wren", "wrenlm", "lora", "peft")


@dataclass
class PushResult:
    check: FolderCheck
    repo_id: str
    commit_url: str
    commit_oid: str
    files: list[str]


def _adapter_card(folder: Path, base_model: str, license: str | None) -> str:
    """The adapter's README.md (PEFT writes one) with Hub metadata that points at the base model on the Hub."""
    path = folder / CARD_FILE
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n---\n\n# {folder.resolve().name}\n")
    data = card.data.to_dict()
    data.update(base_model=base_model, base_model_relation="adapter", pipeline_tag="text-generation")
    data.setdefault("library_name", "peft")
    data["tags"] = list(dict.fromkeys([*(data.get("tags") or []), *ADAPTER_TAGS]))
    if license:
        data["license"] = license
    card.data = ModelCardData(**data)
    return str(card)


def _adapter_replacements(check: FolderCheck, base_model: str | None, license: str | None) -> dict[str, bytes]:
    recorded = check.config["base_model_name_or_path"]
    if base_model is None:
        if Path(recorded).exists():
            raise ValueError(
                f"The adapter's base model is the local folder {recorded!r}, which nobody can load from the Hub: "
                "push the base model too and pass its repo id with --base-model (base_model=...)."
            )
        base_model = recorded
    replacements = {CARD_FILE: _adapter_card(check.folder, base_model, license).encode()}
    if base_model != recorded:
        # Only the uploaded copy points at the Hub repo; the local folder keeps working offline.
        config = {**check.config, "base_model_name_or_path": base_model}
        replacements[ADAPTER_CONFIG] = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return replacements


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    base_model: str | None = None,
    license: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Check `folder`, then upload its repository files to `repo_id` in one commit (creating the repo if needed).

    A model folder's wrenlm model card is refreshed first (named after the repo; `base_model` / `license` are
    recorded in it); a README.md that wrenlm did not write is uploaded as it is. An adapter's uploaded
    adapter_config.json and card point at `base_model`, the Hub repo of its base model. Nothing is uploaded
    when the folder is broken or no token is available.
    """
    check = check_folder(folder)
    token = require_token(token)
    replacements = _adapter_replacements(check, base_model, license) if check.kind == "adapter" else {}
    try:
        repo_id = ensure_repo(repo_id, token=token, private=private)
        if check.kind == "model":
            metadata = {"base_model": base_model, "license": license}
            write_model_card(check.folder, check.config, name=repo_id, metadata=metadata)
        files = sorted({*pushable_files(check.folder), *replacements})
        commit = upload_checkpoint_folder(
            check.folder,
            repo_id,
            token=token,
            files=files,
            replacements=replacements,
            revision=revision,
            commit_message=commit_message or f"Upload {check.kind} with wren push",
        )
    except HfHubHTTPError as error:
        if error.response is not None and error.response.status_code in (401, 403):
            raise PermissionError(f"The Hub refused to let this token write to {repo_id}: {error}") from None
        raise
    return PushResult(check, repo_id, commit.commit_url, commit.oid, files)
