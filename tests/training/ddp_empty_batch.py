"""`flowvid train` with some of rank 1's batches empty (as when every read in them failed), for
tests/training/test_system.py: the ranks must stay in step through them (DDP, or FSDP on CPU
through fsdp_cpu.py's shims when trainer.strategy=fsdp). EMPTY_BATCHES lists which of rank 1's
collated batches, counted from 1 over validation and training alike, are emptied (default: 2)."""
import os
import sys

from flowvid.cli import main
from flowvid.data import clips as clips_module
from flowvid.data import module as data_module

original = clips_module.collate_clips
calls = {"n": 0}
emptied = {int(n) for n in os.environ.get("EMPTY_BATCHES", "2").split(",")}


def failing(items):
    calls["n"] += 1
    empty = os.environ.get("RANK") == "1" and calls["n"] in emptied
    return original([None] * len(items) if empty else items)


data_module.collate_clips = failing
if "trainer.strategy=fsdp" in sys.argv:
    from fsdp_cpu import use_cpu_fsdp  # this script's folder is on the path

    use_cpu_fsdp()
sys.exit(main(sys.argv[1:]))
