"""How data-loading workers start. Kept free of heavy imports: a worker imports this module to
run its init function, and every module it imports is imported again in every worker."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

# What the forkserver imports once, before it forks any worker: each epoch's loader starts new
# workers, and a module the forkserver has not imported is imported again in every one of them.
# Lightning among them: a worker runs the main script's imports again (a script that trains with
# VideoDataModule imports Lightning) and ignore_stop_signal may use Lightning's worker seeding;
# imported per worker, it cost over a second each epoch. flowvid.data.worker_signals makes the
# forkserver and its workers ignore SIGUSR1 and Ctrl-C.
FORKSERVER_PRELOAD = ["flowvid.data.worker_signals", "torch", "lightning", "lightning.fabric.utilities.seed",
                      "flowvid.data.clips", "flowvid.data.datasets", "flowvid.data.synthetic", "flowvid.data.workers"]


def worker_context():
    """Workers start from a forkserver: a clean process forks them quickly, and they never inherit
    decoder threads of the parent (decord is not fork-safe; a worker forked from a process that
    has decoded with it can deadlock). spawn where forkserver is missing. The forkserver and the
    workers ignore SIGUSR1 and Ctrl-C (flowvid.data.worker_signals, ignore_stop_signal)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def ignore_stop_signal(worker_id: int) -> None:
    """worker_init_fn: SIGUSR1, SIGTERM and Ctrl-C are the training process's to act on (spawned workers
    start without the forkserver's setting). Lightning's worker seeding, which a worker_init_fn of ours replaces,
    runs too when seed_everything(workers=True) asked for it."""
    if hasattr(signal, "SIGUSR1"):  # POSIX
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the training process stops after the step
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # scancel signals every process of the job step
    if os.environ.get("PL_SEED_WORKERS") == "1":
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)
