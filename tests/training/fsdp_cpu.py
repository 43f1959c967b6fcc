"""`flowvid train` with trainer.strategy=fsdp on CPU processes (gloo), for tests/training/test_system.py.
Two shims, nothing else changed: Lightning accepts FSDP only with a CUDA accelerator, checking the
strategy's exact class (a subclass passes), and it gathers full checkpoints with offload_to_cpu,
which on CPU aliases the gathered weights that FSDP then frees (a crash); here it gathers without."""
import sys

import lightning.pytorch.strategies
import lightning.pytorch.strategies.fsdp as lightning_fsdp
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.api import FullOptimStateDictConfig

from flowvid.cli import main


class CPUFSDPStrategy(lightning_fsdp.FSDPStrategy):
    pass


def full_state_dict_on_cpu(module, world_size, rank0_only=True):
    return FSDP.state_dict_type(module, StateDictType.FULL_STATE_DICT,
                                FullStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only),
                                FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=rank0_only))


def use_cpu_fsdp() -> None:
    lightning.pytorch.strategies.FSDPStrategy = CPUFSDPStrategy  # flowvid.training.run imports it when asked
    lightning_fsdp._get_full_state_dict_context = full_state_dict_on_cpu


if __name__ == "__main__":
    use_cpu_fsdp()
    sys.exit(main(sys.argv[1:]))
