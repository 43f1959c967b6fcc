"""SIGUSR1: stop at a step boundary with a checkpoint, and requeue the job under SLURM.

SLURM sends SIGUSR1 before the time limit when the job asks for it (`--signal=SIGUSR1@90`, see
tools/slurm_train.sbatch). Lightning's own handler would write a checkpoint inside the signal
handler, in the middle of whatever step is running; here the handler only raises a flag, the
ranks agree on it after the step, `LastCheckpoint` (flowvid.training.run) writes last.ckpt at
that boundary, the job is requeued and the run stops with `RunPaused`, skipping the validation
and previews a normal stop would run.

SLURM signals every process of the job step, data-loading workers included; those ignore
SIGUSR1 (flowvid.data.worker_signals), which would otherwise kill them mid-batch.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from multiprocessing import resource_tracker

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
EXIT_REQUEUED = 75  # EX_TEMPFAIL: stopped early on purpose, run again with --resume auto
STOP_SIGNAL = getattr(signal, "SIGUSR1", None)  # POSIX only; elsewhere nothing is installed


class RunPaused(Exception):
    """Stopped on SIGUSR1 after writing last.ckpt at a step boundary."""


class StopFlag:
    """Set by SIGUSR1 in this process; `any_rank` tells whether any rank got it."""

    def __init__(self):
        self.raised, self.installed = False, False
        self._previous = None

    def install(self) -> None:
        if STOP_SIGNAL is None or threading.current_thread() is not threading.main_thread() or self.installed:
            return
        self._previous, self.installed = signal.signal(STOP_SIGNAL, signal.SIG_IGN), True
        # multiprocessing's resource tracker (shared memory of the loader workers) is a process of its
        # own that SLURM signals too: started now, it inherits the ignored signal (that survives exec).
        # One started earlier in this process keeps the default action.
        try:
            resource_tracker.ensure_running()
        except OSError as e:
            log.warning("multiprocessing's resource tracker did not start (%s)", e)
        signal.signal(STOP_SIGNAL, self._handler)

    def restore(self) -> None:
        if self.installed:
            signal.signal(STOP_SIGNAL, self._previous)
            self.installed = False

    def _handler(self, signum, frame) -> None:
        self.raised = True

    def any_rank(self, device) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return self.raised  # one process: no tensor, so no wait for the device
        flag = torch.tensor([float(self.raised)], device=device)
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
