"""wrenlm.hub: Wren checkpoints as self-contained Hub repositories.

`model.save_pretrained(folder)` + `tokenizer.save_pretrained(folder)` already write a complete repository (flat
remote code, auto_map, model card); `model.push_to_hub(repo_id)` uploads one. The model class reaches that work
here (model_hooks.py), so a saved repository ships the model's code only. This package also holds the folder-level
tools behind `wren push` and `wren pull`:

    from wrenlm.hub import check_folder, push_folder, pull

    push_folder("runs/wren-nano-shakespeare", "me/wren-tiny")     # checks the folder first, needs a token
    pull("me/wren-tiny", "downloads/wren-tiny")                     # snapshot_download + check
"""

from ..lazy_exports import lazy_getattr

# Loaded on first use: `import wrenlm` needs only model_hooks (and what it imports), not push/pull/checks.
_LAZY = {
    "CheckpointFileError": "checkpoint_files",
    "check_checkpoint_files": "checkpoint_files",
    "FolderCheck": "checks",
    "check_folder": "checks",
    "write_model_card": "model_card",
    "pull": "pull",
    "PushResult": "push",
    "push_folder": "push",
}


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "CheckpointFileError",
    "FolderCheck",
    "PushResult",
    "check_checkpoint_files",
    "check_folder",
    "pull",
    "push_folder",
    "write_model_card",
]
