"""SIGUSR1 and Ctrl-C: stop at a step boundary with a checkpoint (and under SLURM, on SIGUSR1,
requeue the job).

SLURM sends SIGUSR1 before the time limit when the job asks for it (`--signal=SIGUSR1@90`, see
tools/slurm_train.sbatch). Lightning's own handler would write a checkpoint inside the signal
handler, in the middle of whatever step is running; here the handler only raises a flag, the
ranks agree on it after the step, `LastCheckpoint` (flowvid.training.run) writes last.ckpt at
that boundary, the job is requeued and the run stops with `RunPaused`, skipping the validation
and previews a normal stop would run.

SLURM signals every process of the job step, data-loading workers included; those ignore
SIGUSR1 (flowvid.data.worker_signals), which would otherwise kill them mid-batch.

Ctrl-C (SIGINT, which a terminal sends to every process of the command, workers included, and
those ignore it too) stops the same way, without a requeue; a second Ctrl-C stops at once, as
Lightning does (exit 1, nothing written). SIGTERM (scancel, `docker stop`, Kubernetes) stops the
same way too, without a requeue; Lightning's own SIGTERM handling, which ends the run with exit 0
and no checkpoint of the step, is taken over once training starts. Before the first step and
after the last, SIGTERM raises `Terminated` (nothing to save there).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
from multiprocessing import resource_tracker
from typing import Iterator

import torch
import torch.distributed as dist

from flowvid.devices import to_device

log = logging.getLogger(__name__)
EXIT_REQUEUED = 75  # EX_TEMPFAIL: stopped early on purpose, run again with --resume auto
EXIT_INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C
EXIT_TERMINATED = 143  # the shell's code for a command stopped by SIGTERM (128 + 15)
STOP_SIGNAL = getattr(signal, "SIGUSR1", None)  # POSIX only; elsewhere only Ctrl-C is handled
# what stopped a run, by precedence: a rank that got Ctrl-C makes every rank stop as interrupted
STOPS = (None, "SIGUSR1", "SIGTERM", "Ctrl-C")


class Terminated(BaseException):
    """SIGTERM outside the training steps (set-up, or after the last step): nothing to checkpoint.
    A BaseException, as KeyboardInterrupt is: library code that catches Exception (inspect, for one,
    turns it into a TypeError) must let it through."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises Terminated inside the block (StopFlag takes it over while steps run)."""
    def _raise(signum, frame):
        raise Terminated("SIGTERM")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunPaused(Exception):
    """Stopped on SIGUSR1, SIGTERM or Ctrl-C after writing last.ckpt at a step boundary."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause  # "SIGUSR1", "SIGTERM" or "Ctrl-C"


class StopFlag:
    """Set by SIGUSR1, SIGTERM or a first Ctrl-C in this process; `any_rank` tells what any rank got."""

    def __init__(self):
        self.raised: str | None = None
        self.installed = False
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self.installed:
            return
        self.installed = True
        if STOP_SIGNAL is not None:
            self._previous[STOP_SIGNAL] = signal.signal(STOP_SIGNAL, signal.SIG_IGN)
            # multiprocessing's resource tracker (shared memory of the loader workers) is a process of
            # its own that SLURM signals too: started now, it inherits the ignored signal (that survives
            # exec). One started earlier in this process keeps the default action.
            try:
                resource_tracker.ensure_running()
            except OSError as e:
                log.warning("multiprocessing's resource tracker did not start (%s)", e)
            signal.signal(STOP_SIGNAL, self._on_usr1)
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_ctrl_c)
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_term)

    def take_sigterm_back(self) -> None:
        """Lightning installs its SIGTERM handler after on_fit_start (it ends the fit at the next batch
        with exit 0 and no checkpoint of the step): put ours back once training starts."""
        if self.installed:
            signal.signal(signal.SIGTERM, self._on_term)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous, self.installed = {}, False

    def _on_usr1(self, signum, frame) -> None:
        self.raised = self.raised or "SIGUSR1"

    def _on_term(self, signum, frame) -> None:
        self.raised = max(self.raised, "SIGTERM", key=STOPS.index)
        log.warning("SIGTERM: stopping after this step, with a checkpoint")

    def _on_ctrl_c(self, signum, frame) -> None:
        self.raised = "Ctrl-C"
        signal.signal(signal.SIGINT, self._previous[signal.SIGINT])  # a second Ctrl-C stops at once
        log.warning("Ctrl-C: stopping after this step, with a checkpoint (Ctrl-C again stops at once, "
                    "without one)")

    def any_rank(self, device) -> str | None:
        """What stopped this rank or any other (None or one of STOPS); every rank must ask."""
        if not (dist.is_available() and dist.is_initialized()):
            return self.raised  # one process: no tensor, so no wait for the device
        flag = to_device(torch.tensor([float(STOPS.index(self.raised))]), device)  # page-locked: the read is the wait
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return STOPS[int(flag.item())]


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
