"""Checkpoints written atomically, and found again for `--resume auto`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from flowvid.errors import UsageError
from flowvid.io import write_errors
from flowvid.training.export import check_weights_fit, open_checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the same folder, fsync, then rename over the target.

    A run killed while saving leaves the previous checkpoint intact, never a half-written one.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with write_errors(path, "the previous checkpoint is intact: free space, then --resume auto"):
                with open(tmp, "wb") as fh:
                    torch.save(checkpoint, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def resolve_resume(run_dir: str | Path, resume: str | None, cfg: Any, sharded: bool = False) -> Path | None:
    """None (start fresh), 'auto' (the run's newest checkpoint if there is one) or a checkpoint path.
    A file that is not a flowvid checkpoint, one of another network than `cfg` describes, or
    one FSDP cannot resume (`sharded`), fails here, before anything is written; so does starting
    fresh in a run folder that holds checkpoints, which would overwrite its last.ckpt and logs."""
    if resume is None:
        existing = newest_checkpoint(run_dir)
        if existing is not None:
            raise UsageError(f"{run_dir} holds a run already (newest checkpoint: {existing.name}); continue it with "
                             "--resume auto, or start a new run in another --run-dir")
        return None
    path = newest_checkpoint(run_dir) if resume == "auto" else Path(resume)
    if path is None:
        return None
    if not path.is_file():
        raise UsageError(f"checkpoint not found: {path} (expected a .ckpt file or --resume auto)")
    ckpt = open_checkpoint(path)
    check_same_model(path, ckpt, cfg)
    if sharded:
        check_fsdp_can_resume(path, ckpt)
    return path


def check_same_model(path: Path, ckpt: dict, cfg: Any) -> None:
    """The checkpoint's weights must fit the configured network (names and shapes); settings that
    leave the weights alone (attention backend, gradient checkpointing) may change on resume."""
    saved = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    check_weights_fit(path, saved, cfg, "resume with the checkpoint's model settings or start a new run folder")


def check_fsdp_can_resume(path: Path, ckpt: dict) -> None:
    """Lightning's FSDP loader reads optimizer states numbered by module position, as flowvid writes
    them; checkpoints from before that (numbered in optimizer order: the concatenated groups count
    0, 1, 2, ...) would pair moments with the wrong parameters under FSDP."""
    from flowvid.config import ConfigError

    for state in ckpt.get("optimizer_states") or []:
        if not state.get("state"):  # Lightning's FSDP loader fails on it (no step was taken before the save)
            raise ConfigError(f"{path} holds no optimizer state yet; resume it with ddp (or one device), or start "
                              "a new run folder")
        numbers = [i for group in state.get("param_groups", []) for i in group["params"]]
        if len(state.get("param_groups", [])) > 1 and numbers == list(range(len(numbers))):
            raise ConfigError(f"{path} numbers its optimizer state in the old order, which FSDP cannot resume; "
                              "resume it with ddp (or one device), or start a new run folder")


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The run's most recently written checkpoint: a kill between writing stepN.ckpt and
    last.ckpt leaves stepN the newest. Temporary files (.name.tmp-PID) never count."""
    found = [p for p in checkpoint_dir(run_dir).glob("*.ckpt") if not p.name.startswith(".")
             and p.name != "nonfinite.ckpt"]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
