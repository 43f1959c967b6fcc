"""Stop at a step boundary on SIGUSR1 with a checkpoint, and requeue the job under SLURM.

SLURM sends SIGUSR1 before the time limit when the job asks for it (`--signal=SIGUSR1@90`, see
tools/slurm_train.sbatch). Lightning's own handler would write a checkpoint inside the signal
handler, in the middle of whatever step is running; here the handler only raises a flag, the
ranks agree on it after the step, last.ckpt is written at that boundary (so a resume continues
exactly as an uninterrupted run would), the job is requeued and the run stops.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
EXIT_REQUEUED = 75  # EX_TEMPFAIL: stopped early on purpose, run again with --resume auto


class StopOnSignal(L.Callback):
    def __init__(self, path: Path, signum: int = signal.SIGUSR1):
        self.path, self.signum = path, signum
        self.raised, self.stopped_at = False, None
        self._previous = None

    def on_fit_start(self, trainer, module) -> None:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(self.signum, self._handler)

    def on_fit_end(self, trainer, module) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _handler(self, signum, frame) -> None:
        self.raised = True

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not self._any_rank_raised(module.device):
            return
        trainer.save_checkpoint(self.path, weights_only=False)
        self.stopped_at = trainer.global_step
        trainer.should_stop = True
        log.warning("%s: checkpoint at step %d (%s), stopping", signal.Signals(self.signum).name,
                    trainer.global_step, self.path)
        if trainer.is_global_zero:
            requeue_slurm_job()

    def _any_rank_raised(self, device) -> bool:
        flag = torch.tensor([float(self.raised)], device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def requeue_slurm_job() -> None:
    """`scontrol requeue` this job (array task included) when running under SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job:
        return
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("could not requeue SLURM job %s: %s", job, e)
        return
    if done.returncode:
        log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())
    else:
        log.info("requeued SLURM job %s", job)
