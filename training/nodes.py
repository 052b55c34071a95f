"""Which process writes which file when a run spans several machines (nodes), with or without a shared filesystem.

    layout = NodeLayout.detect(accelerator, output_dir)   # every process, once per run (a few collectives)
    layout.shared          # True: output_dir is one folder for all nodes (or there is one node)
    layout.is_writer       # this process writes its node's copy of the run's files
    with layout.writer_first(): ...                       # e.g. build a cache the node then reads
    layout.copy_to_nodes(folder, names)                   # the main process' files into every node's folder

The probe: the main process writes a file with a random token into `output_dir`; every process then says
whether it reads that token. If all do, the folder is shared: the main process writes the run's files and
the other processes read them. If not, every node keeps its own copy: each node's local main process writes
the checkpoint folders, the tokenizer and caches its node reads, and checkpoints are resumed from the newest
step every node has. `check_sharded_checkpoints` stops engines whose checkpoints need one folder seen by all
ranks (torch.distributed.checkpoint, DeepSpeed) at start with a clear message instead of failing at the
first resume.
"""

import os
import secrets
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch


class StorageLayoutError(ValueError):
    """The run's output folder cannot serve the chosen engine across these nodes (a user error)."""


def _all_gather_object(accelerator, value) -> list:
    if accelerator.num_processes == 1:
        return [value]
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, value)
    return gathered


@dataclass
class NodeLayout:
    accelerator: object
    shared: bool
    num_nodes: int

    @classmethod
    def detect(cls, accelerator, output_dir) -> "NodeLayout":
        if accelerator.num_processes == 1:
            return cls(accelerator, shared=True, num_nodes=1)
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        token = [secrets.token_hex(8) if accelerator.is_main_process else None]
        torch.distributed.broadcast_object_list(token, src=0)
        probe = folder / f".wren-node-probe-{token[0]}"
        if accelerator.is_main_process:
            probe.write_text(token[0])
        accelerator.wait_for_everyone()
        try:
            sees = probe.read_text() == token[0]
        except OSError:
            sees = False
        answers = _all_gather_object(accelerator, (sees, accelerator.local_process_index == 0))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            probe.unlink(missing_ok=True)
        num_nodes = max(1, sum(1 for _, local_main in answers if local_main))
        return cls(accelerator, shared=all(seen for seen, _ in answers), num_nodes=num_nodes)

    @property
    def is_writer(self) -> bool:
        return self.accelerator.is_main_process if self.shared else self.accelerator.is_local_main_process

    @contextmanager
    def writer_first(self):
        """The writer(s) run the block first, the other processes after them (e.g. to read a cache they built)."""
        if self.shared:
            with self.accelerator.main_process_first():
                yield
        else:
            with self.accelerator.local_main_process_first():
                yield

    def copy_to_nodes(self, folder, names: list[str]) -> None:
        """Send the main process' `folder/name` files to the other nodes' writers (no-op on a shared folder).
        Every process must call it."""
        if self.shared:
            return
        folder = Path(folder)
        payload = [None]
        if self.accelerator.is_main_process:
            payload = [{name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}]
        torch.distributed.broadcast_object_list(payload, src=0)
        if self.is_writer and not self.accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in payload[0].items():
                tmp = folder / f".{name}.tmp"
                tmp.write_bytes(data)
                os.replace(tmp, folder / name)
        self.accelerator.wait_for_everyone()

    def common_step(self, steps: list[int]) -> int | None:
        """The newest of `steps` (this node's complete checkpoints) that every node has; every process calls it."""
        everyone = _all_gather_object(self.accelerator, sorted(steps))
        common = set(everyone[0]).intersection(*map(set, everyone[1:]))
        return max(common) if common else None


def check_sharded_checkpoints(layout: NodeLayout, engine: str, output_dir) -> None:
    """Sharded engines write one checkpoint from all ranks together; across nodes that folder must be shared."""
    from .engine_check import ENGINE_LABELS, SHARDED_ENGINES

    if layout.shared or engine not in SHARDED_ENGINES:
        return
    raise StorageLayoutError(
        f"{ENGINE_LABELS[engine]} writes each checkpoint from all ranks into one folder (torch.distributed.checkpoint "
        f"/ DeepSpeed), but the output folder {str(output_dir)!r} is not shared between the {layout.num_nodes} nodes "
        "(the other nodes did not see a file the main process wrote there). Put --output-dir on a filesystem every "
        "node mounts at the same path, or train across nodes with DDP (plain `--multi_gpu`), which keeps a copy "
        "per node."
    )


__all__ = ["NodeLayout", "StorageLayoutError", "check_sharded_checkpoints"]
