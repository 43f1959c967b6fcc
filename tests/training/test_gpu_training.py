"""Training paths that need CUDA (run with `make test-gpu` on a GPU machine)."""
import pytest
import torch

from flowvid.training.run import train

from train_helpers import ckpt_params, tiny

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("strategy", ["auto", "fsdp"])
def test_bf16_mixed_training_on_gpu(tmp_path, strategy):
    cfg = tiny("trainer.accelerator=gpu", "trainer.devices=1", f"trainer.strategy={strategy}",
               "trainer.max_steps=6", "trainer.limit_val_batches=1", "trainer.val_check_interval=3")
    r = train(cfg, tmp_path / strategy)
    assert r.steps == 6 and r.skipped_steps == 0
    params = ckpt_params(r.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in params.values())
