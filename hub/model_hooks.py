"""What a Wren model's `from_pretrained`, `save_pretrained` and `push_to_hub` add where wrenlm is installed.

wrenlm.modeling imports this module and modeling_wren.py looks it up in `sys.modules`, so none of this code ships
with a saved model. Where a checkpoint runs as remote code in a process without wrenlm, transformers' own loading,
saving (which copies the flat code files of classes the Auto classes loaded) and pushing apply.
"""

import sys
import tempfile
from pathlib import Path

from .checkpoint_files import check_checkpoint_files
from .code_export import AUTO_MAP, export_code
from .model_card import CARD_FILE, write_model_card
from .upload import ensure_repo, fetch_remote_file, require_token, upload_checkpoint_folder


def check_before_load(pretrained_model_name_or_path, subfolder: str | None = None) -> None:
    """Name a missing or corrupt weight file of a local checkpoint folder (safetensors would fail without
    naming it)."""
    if pretrained_model_name_or_path is None:
        return
    folder = Path(pretrained_model_name_or_path, subfolder or "")
    if folder.is_dir():
        check_checkpoint_files(folder)


def model_code_file(model) -> Path:
    """The modeling_wren.py that defines the model's class: in the wrenlm package, or a flat remote-code copy."""
    for klass in type(model).__mro__:
        path = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if path and Path(path).name == "modeling_wren.py":
            return Path(path)
    raise TypeError(f"{type(model).__name__} is not a Wren model class (no base class from modeling_wren.py)")


def write_card(model, folder, *, name: str | None = None, tags=()) -> bool:
    """The Wren model card for `model` saved in `folder` (see model_card.write_model_card)."""
    return write_model_card(folder, model.config.to_dict(), name=name, tags=[*(model.model_tags or []), *tags])


def save_pretrained(model, save, save_directory, *args, **kwargs) -> None:
    """`save` (transformers' save_pretrained, same arguments) plus what makes the folder a complete Hub repo.

    The Wren code files are written next to the weights as flat remote code, config.json's `auto_map` names them,
    and a model card (README.md) describes the model. `push_to_hub=True` uploads the folder like `push_to_hub`
    does (`repo_id` defaults to the folder name).
    """
    push_to_hub = kwargs.pop("push_to_hub", False)
    push_options = {key: kwargs.pop(key, None) for key in ("repo_id", "commit_message", "private")}
    push_options = {key: value for key, value in push_options.items() if value is not None}
    is_main_process = args[0] if args else kwargs.get("is_main_process", True)
    adapter_only = getattr(model, "_hf_peft_config_loaded", False)
    if not adapter_only:
        model.config.auto_map = {**(getattr(model.config, "auto_map", None) or {}), **AUTO_MAP}
    save(save_directory, *args, **kwargs)
    if adapter_only or not model.should_save_on_this_rank(is_main_process):
        return
    export_code(model_code_file(model), save_directory)
    if not push_to_hub:
        write_card(model, save_directory)
        return
    token = require_token(kwargs.get("token"))
    repo_id = push_options.pop("repo_id", Path(save_directory).resolve().name)
    repo_id = ensure_repo(repo_id, token=token, private=push_options.pop("private", None))
    write_card(model, save_directory, name=repo_id)
    upload_checkpoint_folder(save_directory, repo_id, token=token, **push_options)


def push_to_hub(
    model,
    repo_id: str,
    *,
    commit_message: str | None = None,
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    max_shard_size: int | str = "50GB",
    tags: list[str] | None = None,
):
    """transformers' push_to_hub (same arguments), uploading what save_pretrained writes in one commit.

    transformers' own version would replace the model card with a generic one; a README.md already in the Hub
    repo that wrenlm did not write is kept, as transformers does. Fails before any upload without a token.
    """
    token = require_token(token)
    repo_id = ensure_repo(repo_id, token=token, private=private)
    with tempfile.TemporaryDirectory() as folder:
        fetch_remote_file(repo_id, CARD_FILE, folder, token=token, revision=revision)
        model.save_pretrained(folder, max_shard_size=max_shard_size)
        write_card(model, folder, name=repo_id, tags=tags or ())
        return upload_checkpoint_folder(
            folder,
            repo_id,
            token=token,
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or "Upload model",
            commit_description=commit_description,
        )
