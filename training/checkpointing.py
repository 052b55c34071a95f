"""Training state on disk: atomic, rotating checkpoints built on `accelerator.save_state`, and the final model.

A checkpoint is written by every process into `checkpoints/.tmp-step-NNNNNNNN/` (Accelerate writes
model, optimizer, scheduler and each process' RNG states; we add `trainer_state.json`), then the
main process renames it to `checkpoints/step-NNNNNNNN/` in one `os.replace`. Across nodes without a
shared filesystem (`nodes.NodeLayout`) each node's local main process does the main process' part in
its own folder, and a run resumes from the newest step every node holds. A crash at any point
of the save leaves at most a `.tmp-*step-*` folder, which is never picked as "latest", so the newest
complete checkpoint is always intact. After a successful save only the `keep_last` newest checkpoints
are kept; pruning renames a checkpoint to `.tmp-pruned-step-*` before deleting it, so a crash there
never leaves a half-deleted `step-*` folder. Leftovers (wrenlm's temporary names, and step folders
without `trainer_state.json` that hold only Accelerate's state files, as older versions' pruning could
leave) are removed by the next save and when a run starts (`remove_leftovers`); nothing else under
`checkpoints/` is ever touched.

    manager = CheckpointManager(output_dir / CHECKPOINT_DIR, keep_last=2, layout=node_layout)
    manager.save(accelerator, step, checkpoint_record(loop_state, accelerator, global_batch_size, config))
    loop_state = restore_checkpoint(accelerator, manager.latest())    # the dict saved as "state"
"""

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"  # under the run's output folder
STATE_FILE = "trainer_state.json"


class _TiedWeightsNoise(logging.Filter):
    """Accelerate warns on every save that tied `lm_head.weight` is stored once; that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedWeightsNoise())
_NAME = re.compile(r"^step-(\d{8,})$")
_TMP_NAME = re.compile(r"^\.tmp-(?:old-|pruned-)?step-\d{8,}$")
# What `accelerator.save_state` writes into a checkpoint folder (model, optimizer, scheduler, sampler, RNG states).
_ACCELERATE_STATE_FILE = re.compile(
    r"^(?:model|pytorch_model|optimizer|scheduler|sampler|dl_state_dict|random_states|custom_checkpoint)"
    r"(?:_\d+)?\.(?:safetensors|bin|pkl)$"
)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def leftover_folders(root: str | os.PathLike) -> list[Path]:
    """Folders under `root` that an interrupted save or prune left behind, and only those wrenlm wrote."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.is_dir() or path.is_symlink():
            continue
        if _TMP_NAME.match(path.name):
            found.append(path)
        elif _NAME.match(path.name) and not (path / STATE_FILE).exists():
            entries = list(path.iterdir())
            if all(entry.is_file() and _ACCELERATE_STATE_FILE.match(entry.name) for entry in entries):
                found.append(path)
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def checkpoint_record(loop_state: dict, accelerator, global_batch_size: int, config: dict) -> dict:
    """What `trainer_state.json` holds: the loop position and the layout of the run that saved it."""
    return {
        "state": loop_state,
        "num_processes": accelerator.num_processes,
        "global_batch_size": global_batch_size,
        "config": config,
    }


def restore_checkpoint(accelerator, checkpoint: str | os.PathLike, engine_state=None) -> dict:
    """Load model/optimizer/scheduler/RNG states (every process) and return the saved loop position.

    `engine_state`: what Accelerate does not hold itself (the model and optimizer wren shards on CPU), with
    `load(directory)`."""
    checkpoint = Path(checkpoint)
    try:
        accelerator.load_state(str(checkpoint))
        if engine_state is not None:
            engine_state.load(checkpoint)
    except (RuntimeError, KeyError, ValueError) as error:
        raise ValueError(
            f"Cannot resume from {checkpoint}: it does not match this model/optimizer ({str(error)[:300]}). "
            "Start over with --resume never, or use another --output-dir."
        ) from error
    return read_trainer_state(checkpoint)["state"]


def gathered_state_dict(accelerator, model, trainable_only: bool = False) -> dict:
    """The full state dict of a prepared model; every process must call it. `trainable_only`: only parameters that
    require grad (a LoRA adapter); FSDP2 and DeepSpeed only.

    FSDP2 models (Accelerate's or wren's CPU route) are gathered by torch itself. Under DeepSpeed: the fp32 master
    weights gathered from the ZeRO partitions, held by the main process only (Accelerate's own gather returns the
    16-bit copies, ZeRO-3 only with `stage3_gather_16bit_weights_on_model_save`)."""
    from .deepspeed_engine import consolidated_state_dict, is_deepspeed
    from .fsdp import full_state_dict, is_fsdp2_model

    if is_fsdp2_model(model):
        return full_state_dict(model, trainable_only=trainable_only)
    if is_deepspeed(accelerator):
        return consolidated_state_dict(model, keep=accelerator.is_main_process, trainable_only=trainable_only)
    return accelerator.get_state_dict(model)


def drop_tied_copies(model, state_dict: dict) -> dict:
    """Store a tied weight once: gathered copies no longer share storage, so `save_pretrained` cannot tell."""
    for tied, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if tied in state_dict and source in state_dict:
            del state_dict[tied]
    return state_dict


def save_pretrained_model(accelerator, model, output_dir, tokenizer=None, generation_config=None) -> None:
    """`save_pretrained` of a prepared model (its full state gathered under FSDP/DeepSpeed) + tokenizer.

    Every process must call it."""
    accelerator.wait_for_everyone()
    prepared, model = model, accelerator.unwrap_model(model)
    state_dict = drop_tied_copies(model, gathered_state_dict(accelerator, prepared))
    if generation_config is not None:
        model.generation_config = generation_config
    if accelerator.is_main_process:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(
        output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save, state_dict=state_dict
    )
    if tokenizer is not None and accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()


class CheckpointManager:
    """Save/rotate/find checkpoints of one run. All processes call `save`; only the writer renames.

    `layout` (`nodes.NodeLayout`): who writes on several nodes (default: the main process); `engine_state`: model
    and optimizer state Accelerate does not save itself, with `save(directory)` / `load(directory)`."""

    def __init__(self, root: str | os.PathLike, keep_last: int = 2, layout=None, engine_state=None):
        self.root = Path(root)
        self.keep_last = keep_last
        self.layout = layout
        self.engine_state = engine_state

    def _is_writer(self, accelerator) -> bool:
        return self.layout.is_writer if self.layout is not None else accelerator.is_main_process

    def save(self, accelerator, step: int, trainer_state: dict) -> Path:
        final = self.root / checkpoint_name(step)
        tmp = self.root / f".tmp-{checkpoint_name(step)}"
        writer = self._is_writer(accelerator)
        if writer:
            self.root.mkdir(parents=True, exist_ok=True)
            self.remove_leftovers()
            tmp.mkdir()
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        if self.engine_state is not None:
            self.engine_state.save(tmp)
        if writer:
            with open(tmp / STATE_FILE, "w") as handle:
                json.dump(trainer_state, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
        accelerator.wait_for_everyone()
        if writer:
            if final.exists():  # re-saving the same step (e.g. after resuming at it): swap in the new one
                old = self.root / f".tmp-old-{checkpoint_name(step)}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            _fsync_dir(self.root)
            self.prune()
        accelerator.wait_for_everyone()
        return final

    def prune(self) -> list[Path]:
        """Delete all but the `keep_last` newest checkpoints (0 keeps everything)."""
        if self.keep_last <= 0:
            return []
        removed = list_checkpoints(self.root)[: -self.keep_last]
        self._delete(removed)
        return removed

    def remove_leftovers(self) -> list[Path]:
        """Delete what an interrupted save or prune left (see `leftover_folders`); main process only."""
        leftovers = leftover_folders(self.root)
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
        return leftovers

    def remove_all(self) -> list[Path]:
        """Delete every checkpoint and leftover this manager's naming produced (`resume: never`); other files stay.

        Main process only. The `checkpoints/` folder itself goes too when nothing else is in it."""
        removed = list_checkpoints(self.root)
        self._delete(removed)
        removed += self.remove_leftovers()
        with contextlib.suppress(OSError):  # not empty: it holds files wrenlm did not write
            self.root.rmdir()
        return removed

    def _delete(self, checkpoints: list[Path]) -> None:
        # Renamed out of the `step-*` namespace first: a crash mid-delete leaves only a `.tmp-pruned-*` folder.
        doomed = []
        for path in checkpoints:
            target = path.with_name(f".tmp-pruned-{path.name}")
            os.replace(path, target)
            doomed.append(target)
        if doomed:
            _fsync_dir(self.root)
        for path in doomed:
            shutil.rmtree(path, ignore_errors=True)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.root)

    def latest_common(self) -> Path | None:
        """The newest checkpoint every node holds (this node's newest without a layout); every process calls it."""
        if self.layout is None:
            return self.latest()
        steps = {int(_NAME.match(path.name).group(1)): path for path in list_checkpoints(self.root)}
        step = self.layout.common_step(list(steps))
        return steps[step] if step is not None else None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = [
    "CHECKPOINT_DIR",
    "STATE_FILE",
    "CheckpointManager",
    "checkpoint_name",
    "checkpoint_record",
    "drop_tied_copies",
    "gathered_state_dict",
    "latest_checkpoint",
    "leftover_folders",
    "list_checkpoints",
    "read_trainer_state",
    "restore_checkpoint",
    "save_pretrained_model",
]
