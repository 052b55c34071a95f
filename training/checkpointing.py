"""Training state on disk: atomic, rotating checkpoints built on `accelerator.save_state`, and the final model.

A checkpoint is written by every process into `checkpoints/.tmp-step-NNNNNNNN/` (Accelerate writes
model, optimizer, scheduler and each process' RNG states; we add `trainer_state.json`), then the
main process renames it to `checkpoints/step-NNNNNNNN/` in one `os.replace`. A crash at any point
of the save leaves at most a `.tmp-*` folder, which is never picked as "latest" and is removed by
the next save, so the newest complete checkpoint is always intact. After a successful save only
the `keep_last` newest checkpoints are kept.

    manager = CheckpointManager(output_dir / CHECKPOINT_DIR, keep_last=2)
    manager.save(accelerator, step, checkpoint_record(loop_state, accelerator, global_batch_size, config))
    loop_state = restore_checkpoint(accelerator, manager.latest())    # the dict saved as "state"
"""

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


def restore_checkpoint(accelerator, checkpoint: str | os.PathLike) -> dict:
    """Load model/optimizer/scheduler/RNG states (every process) and return the saved loop position."""
    checkpoint = Path(checkpoint)
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, KeyError, ValueError) as error:
        raise ValueError(
            f"Cannot resume from {checkpoint}: it does not match this model/optimizer ({str(error)[:300]}). "
            "Start over with --resume never, or use another --output-dir."
        ) from error
    return read_trainer_state(checkpoint)["state"]


def gathered_state_dict(accelerator, model) -> dict:
    """The full state dict of a prepared model; every process must call it. Under DeepSpeed the fp32 master
    weights gathered from the ZeRO partitions, held by the main process only (Accelerate's own gather returns
    the 16-bit copies, ZeRO-3 only with `stage3_gather_16bit_weights_on_model_save`)."""
    from .deepspeed_engine import consolidated_state_dict, is_deepspeed

    if is_deepspeed(accelerator):
        return consolidated_state_dict(model, keep=accelerator.is_main_process)
    return accelerator.get_state_dict(model)


def save_pretrained_model(accelerator, model, output_dir, tokenizer=None, generation_config=None) -> None:
    """`save_pretrained` of a prepared model (its full state gathered under FSDP/DeepSpeed) + tokenizer.

    Every process must call it."""
    accelerator.wait_for_everyone()
    state_dict = gathered_state_dict(accelerator, model)
    model = accelerator.unwrap_model(model)
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
    """Save/rotate/find checkpoints of one run. All processes call `save`; only the main one renames."""

    def __init__(self, root: str | os.PathLike, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = keep_last

    def save(self, accelerator, step: int, trainer_state: dict) -> Path:
        final = self.root / checkpoint_name(step)
        tmp = self.root / f".tmp-{checkpoint_name(step)}"
        if accelerator.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir()
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        if accelerator.is_main_process:
            with open(tmp / STATE_FILE, "w") as handle:
                json.dump(trainer_state, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
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
        for path in removed:
            shutil.rmtree(path, ignore_errors=True)
        return removed

    def latest(self) -> Path | None:
        return latest_checkpoint(self.root)


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
    "gathered_state_dict",
    "latest_checkpoint",
    "list_checkpoints",
    "read_trainer_state",
    "restore_checkpoint",
    "save_pretrained_model",
]
