"""Checkpoints written atomically, and found again for `--resume auto`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the target.

    A run killed while saving leaves the previous checkpoint intact, never a half-written one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def resolve_resume(run_dir: str | Path, resume: str | None) -> Path | None:
    """None (start fresh), 'auto' (the run's last.ckpt if there is one) or a checkpoint path."""
    if resume is None:
        return None
    if resume == "auto":
        return newest_checkpoint(run_dir)
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (expected a .ckpt file or --resume auto)")
    from flowvid.training.export import open_checkpoint

    open_checkpoint(path)  # a file that is not a flowvid checkpoint fails here, before anything is written
    return path


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's most recently written checkpoint: a kill between writing stepN.ckpt and
    last.ckpt leaves stepN the newest. Temporary files (.name.tmp-PID) never count."""
    found = [p for p in checkpoint_dir(run_dir).glob("*.ckpt") if not p.name.startswith(".")
             and p.name != "nonfinite.ckpt"]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
