"""Imported by the forkserver that starts data-loading workers (never by the training process):
SIGUSR1, SIGTERM and SIGINT (Ctrl-C) are ignored from then on, there and in every worker it forks.

SLURM's warning before a time limit (`--signal=SIGUSR1@90`) reaches every process of the job
step. The training process handles it (flowvid.training.requeue); a worker or the forkserver
would be killed by it, and the run would die mid-batch instead of stopping at the step boundary.
"""
import signal

if hasattr(signal, "SIGUSR1"):  # POSIX
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
# Ctrl-C reaches every process of the command: the training process stops after the step
# (flowvid.training.requeue) and needs its workers until then
signal.signal(signal.SIGINT, signal.SIG_IGN)
# SIGTERM too: scancel signals every process of the job step, and the training process stops after the step
signal.signal(signal.SIGTERM, signal.SIG_IGN)
