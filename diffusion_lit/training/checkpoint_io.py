"""Checkpoint files that are either complete or absent."""

import contextlib
import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from diffusion_lit.errors import UserError


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written (read-only folder, full disk)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file next to its target, flushes it to disk and
    renames it over the target, so a kill, a crash or a full disk during a save leaves the
    previous file (``last.ckpt`` included) whole.

    Hand-written because Lightning's own save stages the file in the system temp folder and
    moves it across file systems, which is a copy, not an atomic rename.
    """

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as err:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"Cannot write checkpoint {path}: {err.strerror or err}. Free some disk space or "
                "set paths.output_dir to a writable folder, then resume with ckpt_path=last; "
                "the checkpoints already saved are untouched."
            ) from err
