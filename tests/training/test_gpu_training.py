"""Training paths that need CUDA (run with `make test-gpu` on a GPU machine)."""
from contextlib import nullcontext

import pytest
import torch

from flowvid.training.run import train

from train_helpers import ckpt_params, tiny

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("strategy,backend,compiled,accumulate", [
    ("auto", "sdpa", False, 1), ("fsdp", "sdpa", False, 2), ("auto", "flex", False, 1), ("auto", "varlen", False, 1),
    ("auto", "sdpa", True, 2)])
def test_bf16_mixed_training_on_gpu_resumes(tmp_path, strategy, backend, compiled, accumulate):
    """bf16-mixed (the GPU default) through the trainer, then a resume from its checkpoint. Compiled
    blocks must not recompile per insertion batch (the limit is lowered and made an error)."""
    import torch._dynamo

    opts = ["trainer.accelerator=gpu", "trainer.devices=1", f"trainer.strategy={strategy}",
            f"model.attention.backend={backend}", "trainer.limit_val_batches=1", "trainer.val_check_interval=3",
            f"train.compile={str(compiled).lower()}", f"train.accumulate_grad_batches={accumulate}"]
    guard = torch._dynamo.config.patch(recompile_limit=4, fail_on_recompile_limit_hit=True) if compiled else nullcontext()
    with guard:
        r = train(tiny(*opts, "trainer.max_steps=6"), tmp_path)
    assert r.steps == 6 and r.skipped_steps == 0
    first = ckpt_params(r.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in first.values())
    assert any(k.startswith("ema.") for k in torch.load(r.last_checkpoint, map_location="cpu",
                                                         weights_only=True)["state_dict"])
    r = train(tiny(*opts, "trainer.max_steps=8"), tmp_path, "auto")
    assert r.steps == 8
    last = ckpt_params(r.last_checkpoint)
    assert first.keys() == last.keys() and any(not torch.equal(first[k], last[k]) for k in first)


def test_batches_for_a_cuda_trainer_are_pinned():
    """The loader pins each packed batch when the trainer's device is CUDA (faster, asynchronous copy)."""
    from types import SimpleNamespace

    from flowvid.data.module import VideoDataModule

    dm = VideoDataModule(tiny("data.num_workers=0"))
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)), world_size=1,
                                 global_rank=0, lightning_module=None, current_epoch=0)
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_clips > 0 and batch.frames.is_pinned()


def test_path_sampling_on_the_gpu_does_not_wait_for_it():
    """CPU generators for the draws, GPU ones for the noise (as the trainer does): sampling makes
    no host sync, returns from behind queued GPU work at once, and picks the frames a CPU run
    with the same draws picks."""
    import time
    import warnings

    from flowvid.flow import InsertionPath

    path = InsertionPath(kappa="linear", n_start=2)
    clips = [torch.randn(n, 4, 32, 32, device="cuda") for n in (16, 9, 4, 16, 12, 7, 3, 16)]

    def gens(device):
        return [torch.Generator(device=device).manual_seed(i) for i in range(len(clips))]

    path.sample_batch(clips, generator=gens("cpu"), noise_generator=gens("cuda"))  # warm-up
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda._sleep(int(2e9))  # about a second of queued GPU work
            t0 = time.perf_counter()
            s = path.sample_batch(clips, generator=gens("cpu"), noise_generator=gens("cuda"))
            host = time.perf_counter() - t0
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert not [w for w in caught if "synchroniz" in str(w.message)], [str(w.message) for w in caught]
    assert host < 0.3, f"sampling waited {host:.2f} s for queued GPU work"
    cpu = path.sample_batch([c.cpu() for c in clips], generator=gens("cpu"))
    for name in ("index", "k", "t", "flowing", "active", "tau", "cu_seqlens", "num_frames", "clip", "position"):
        layout = name in ("tau", "cu_seqlens", "num_frames", "clip", "position")  # stays on the host
        assert getattr(s, name).device.type == ("cpu" if layout else "cuda"), name
        assert torch.equal(getattr(s, name).cpu(), getattr(cpu, name)), name


@pytest.mark.parametrize("backend,compiled", [("sdpa", False), ("varlen", False), ("flex", False), ("sdpa", True)])
def test_a_training_step_waits_for_the_gpu_once(tmp_path, monkeypatch, backend, compiled):
    """Through the trainer, each step reads the device once (its finite check), and a step that
    writes a log line once more (the line's sums); any other read would stall the GPU while the
    host catches up. Counted by torch's sync debug mode from one step's start to the next (the
    callbacks, Lightning's logging and the next batch's transfer included), over the steps after
    warm-up that compiled nothing; logging every second step."""
    import warnings

    import lightning as L
    from torch._dynamo.utils import counters

    from flowvid.training import base as training_module  # the step machinery: its reads of the device

    finite_line = training_module.StepModule.finite_everywhere.__code__.co_firstlineno
    sums_line = training_module.LossLog.means.__code__.co_firstlineno

    class Count(L.Callback):
        def __init__(self):
            self.windows, self._caught, self._ctx, self._graphs = [], None, None, 0

        def on_train_batch_start(self, trainer, module, batch, idx):
            self.close()
            if trainer.global_step < 3:  # warm-up: compiled blocks, cuDNN and allocator first calls
                return
            torch.cuda.synchronize()
            self._graphs = counters["stats"]["unique_graphs"]
            self._ctx = warnings.catch_warnings(record=True)
            self._caught = self._ctx.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

        def close(self):
            if self._ctx is None:
                return
            torch.cuda.set_sync_debug_mode(0)
            self._ctx.__exit__(None, None, None)
            if counters["stats"]["unique_graphs"] == self._graphs:  # a step that compiled may read the device
                self.windows.append([(w.filename, w.lineno) for w in self._caught if "synchroniz" in str(w.message)])
            self._ctx = None

    def where(reads, first_line):  # reads made inside the function starting at first_line (base.py)
        return [r for r in reads if r[0] == training_module.__file__ and first_line < r[1] < first_line + 25]

    import flowvid.training.run as run_module

    count = Count()
    original = run_module.build_trainer

    def with_count(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.callbacks.insert(0, count)  # first: its window closes before the other callbacks' hooks
        return trainer

    opts = ["trainer.accelerator=gpu", "trainer.devices=1", f"model.attention.backend={backend}",
            f"train.compile={str(compiled).lower()}", "trainer.limit_val_batches=0", "trainer.max_steps=10",
            "trainer.log_every_n_steps=2", "train.checkpoint_every=100", "data.num_workers=0"]
    monkeypatch.setattr(run_module, "build_trainer", with_count)
    train(tiny(*opts), tmp_path)
    windows = count.windows  # the last step's window never closes: last.ckpt is written after it
    assert len(windows) >= 3, f"{6 - len(windows)} of the 6 counted steps compiled a graph"
    assert all(len(where(w, finite_line)) == 1 for w in windows), windows
    assert all(len(w) == 1 + len(where(w, sums_line)) and len(where(w, sums_line)) <= 1 for w in windows), windows
    assert any(where(w, sums_line) for w in windows), "no counted step wrote a log line"
