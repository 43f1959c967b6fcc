"""A training step reads the device once, for its finite check: every other read (.item(), bool or
int of a tensor, indexing by a mask, nonzero, repeat_interleave by tensor counts) would make the
host wait for the GPU in the middle of the step. Meta tensors hold no data, so such an op on them
raises: the step's work up to that read runs here on meta tensors, its layout on the host.

A copy from ordinary host memory to a GPU waits for the device too; such copies must go through
flowvid.devices.to_device (page-locked, asynchronous). On meta they do not raise, so they are
watched: any host-to-device copy elsewhere fails the test."""
from __future__ import annotations

import math
import traceback
from types import SimpleNamespace

import pytest
import torch
from torch.distributed.utils import _to_kwargs
from torch.utils._python_dispatch import TorchDispatchMode

from flowvid.data.clips import Clip, collate_clips
from flowvid.data.module import VideoDataModule
from flowvid.training.module import FlowceptionModule, StepLog
from train_helpers import tiny

META = torch.device("meta")
COPIES = ("aten._to_copy", "aten.copy_")


def caller() -> str:
    """The innermost frame outside torch and this file: the code that made the copy."""
    frames = [f for f in traceback.extract_stack() if "/torch/" not in f.filename and not f.filename.endswith(__file__)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


class HostToDevice(TorchDispatchMode):
    """Records copies of host tensors to the meta device, and ops mixing host tensors into meta
    ones (0-dim host tensors pass as scalars there, no copy), except what flowvid.devices.to_device
    does."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        copy = str(func).startswith(COPIES)
        host = [a for a in args if isinstance(a, torch.Tensor) and a.device.type == "cpu" and (copy or a.dim() > 0)]
        outs = out if isinstance(out, (list, tuple)) else [out]
        to_meta = any(isinstance(o, torch.Tensor) and o.device == META for o in outs)
        if host and to_meta and not any(f.filename.endswith("flowvid/devices.py") for f in traceback.extract_stack()):
            self.seen.append(f"{func}: {caller()}")
        return out


@pytest.fixture
def watched(monkeypatch):
    """Also catches torch.tensor, torch.as_tensor and Tensor.new_tensor with a device, whose copies
    the dispatcher does not show."""
    mode = HostToDevice()
    tensor, as_tensor, new_tensor = torch.tensor, torch.as_tensor, torch.Tensor.new_tensor

    def note(name, device):
        if device is not None and torch.device(device).type != "cpu":
            mode.seen.append(f"{name}(..., device={device}): {caller()}")

    def tensor_(*args, device=None, **kwargs):
        note("torch.tensor", device)
        return tensor(*args, device=device, **kwargs)

    def as_tensor_(*args, device=None, **kwargs):
        note("torch.as_tensor", device)
        return as_tensor(*args, device=device, **kwargs)

    def new_tensor_(self, *args, device=None, **kwargs):
        note("Tensor.new_tensor", device)
        return new_tensor(self, *args, device=device, **kwargs)

    monkeypatch.setattr(torch, "tensor", tensor_)
    monkeypatch.setattr(torch, "as_tensor", as_tensor_)
    monkeypatch.setattr(torch.Tensor, "new_tensor", new_tensor_)
    with mode:
        yield mode


def host_batch(lengths, seed=0):
    """A batch as the loader hands it over: everything on the host."""
    g = torch.Generator().manual_seed(seed)
    return collate_clips([Clip(frames=torch.randn(n, 3, 16, 16, generator=g), label=i % 3, fps=8.0, seed=i)
                          for i, n in enumerate(lengths)])


@pytest.fixture
def module(monkeypatch):
    m = FlowceptionModule(tiny("model.num_classes=3", "train.label_dropout=0.5")).to(META)

    def as_ddp_does(network, args, kwargs):  # DDP and FSDP move every tensor argument to the device
        moved_args, moved_kwargs = _to_kwargs(args, kwargs, META, False)
        return moved_args[0], moved_kwargs[0]

    m.model.register_forward_pre_hook(as_ddp_does, with_kwargs=True)
    m.trainer = SimpleNamespace(strategy=SimpleNamespace(backward=lambda loss, opt: loss.backward()), global_step=0,
                                world_size=1, _logger_connector=SimpleNamespace(should_update_logs=False))

    def host_noise(batch, step, salt):  # meta has no generator: the noise's draws come from the host
        seeds = batch.seeds.tolist()
        return [torch.Generator().manual_seed(s) for s in seeds], [torch.Generator().manual_seed(s + 1) for s in seeds]

    monkeypatch.setattr(m, "generators", host_noise)
    return m


def test_reading_a_meta_tensor_raises():
    """What makes this file's tests able to fail."""
    x = torch.ones(3, device=META)
    for read in (lambda: x.sum().item(), lambda: bool(x.any()), lambda: x[x > 0], lambda: x.nonzero(),
                 lambda: torch.repeat_interleave(torch.arange(3, device=META), x.long())):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


@pytest.mark.parametrize("kind", ["insertion", "full_sequence", "autoregressive"])
def test_a_training_step_reads_nothing_before_its_finite_check(module, watched, kind):
    module.path.kind = kind
    micro = [host_batch([9, 16, 4], seed=1), host_batch([12, 7], seed=2)]  # two accumulated batches
    on_device = VideoDataModule(module.cfg).transfer_batch_to_device(micro, META, 0)  # as the trainer moves them
    assert all(b.frames.device == META and b.cu_seqlens.device.type == "cpu" for b in on_device)
    assert not module.empty_anywhere(on_device)
    stats = module.accumulate(on_device)  # path, labels, forward, losses, backward
    grads = [p.grad for p in module.model.parameters() if p.grad is not None]
    assert grads and all(g.device == META for g in grads)
    log = StepLog()
    log.add(stats, module.grad_max())
    log.add(stats, module.grad_max())
    assert log.steps == 2 and log.sums.device == META
    assert log.visible == 2 * sum(s.visible for s in stats) and log.frames == 2 * (9 + 16 + 4 + 12 + 7)
    finite = torch.stack([torch.isfinite(torch.stack([s.terms.total for s in stats])).all(),
                          torch.isfinite(module.grad_max())])  # what the step reads, built without a copy
    assert finite.device == META
    assert not watched.seen, watched.seen


def test_the_whole_step_reads_only_its_finite_flags(module, watched, monkeypatch):
    """training_step to its end (gradient clipping, optimizer, schedule, EMA, the log's sums) on
    meta tensors: its one read, of the finite flags, is answered here without reading."""
    from flowvid.training.optim import build_optimizer

    opt, sched = build_optimizer(module.model, module.cfg.optim, 100)
    asked = []

    def finite_everywhere(flags):
        asked.append(flags.device)
        return [True, True]

    monkeypatch.setattr(module, "optimizers", lambda: opt)
    monkeypatch.setattr(module, "lr_schedulers", lambda: sched)
    monkeypatch.setattr(module, "finite_everywhere", finite_everywhere)
    for step in range(2):
        module.trainer.global_step = step
        micro = [host_batch([9, 16, 4], seed=step), host_batch([12, 7], seed=10 + step)]
        module.training_step(VideoDataModule(module.cfg).transfer_batch_to_device(micro, META, 0), step)
    assert asked == [META, META] and module.step_log.steps == 2 and sched.last_epoch == 2
    assert all(e.device == META for e in module.ema.parameters())
    assert not watched.seen, watched.seen


def test_the_watch_sees_copies_from_ordinary_host_memory(watched):
    """What makes the copy watch able to fail (a host tensor mixed into a meta op raises by itself)."""
    torch.ones(3).to(META)
    torch.tensor(1.0).to(META)
    torch.tensor([1.0, 2.0], device=META)
    torch.as_tensor([1.0, 2.0], device=META)
    torch.ones(2).new_tensor([1.0], device=META)
    assert len(watched.seen) == 5, watched.seen


def test_the_step_log_means_are_those_of_its_steps():
    """The logged values: per-step means of the losses and gradient norm, per-frame means of the
    velocity error in each band of t over the interval's flowing frames."""
    from flowvid.flow import LossTerms
    from flowvid.training.module import MicroBatchStats

    def stats(total, t, flowing, error):
        terms = LossTerms(torch.tensor(total), torch.tensor(total / 2), torch.tensor(total / 4))
        return MicroBatchStats(terms, len(t), 2 * len(t), torch.tensor(t), torch.tensor(flowing), torch.tensor(error))

    log = StepLog()
    log.add([stats(1.0, [0.1, 0.5, 1.0], [True, True, False], [2.0, 4.0, float("inf")])], torch.tensor(3.0))
    log.add([stats(2.0, [0.15, 0.9], [True, True], [6.0, 1.0]), stats(0.5, [0.3], [False], [9.0])],
            torch.tensor(5.0))
    means = log.means()
    assert means["train/loss"] == pytest.approx((1.0 + 2.5) / 2)
    assert means["train/insertion"] == pytest.approx((0.25 + 0.625) / 2)
    assert means["train/grad_norm"] == pytest.approx(4.0)
    assert means["train/velocity_t0.0-0.2"] == pytest.approx((2.0 + 6.0) / 2)
    assert means["train/velocity_t0.4-0.6"] == pytest.approx(4.0)
    assert means["train/velocity_t0.8-1.0"] == pytest.approx(1.0)
    assert math.isnan(means["train/velocity_t0.2-0.4"])  # its only frame was not flowing
    assert means["train/visible_fraction"] == pytest.approx(0.5)
    assert math.isnan(means["train/tokens_per_s"])  # no step was timed
    # an interval of skipped steps only: nothing to average, NaN (left out, Lightning would repeat old values)
    assert all(math.isnan(v) for v in StepLog().means().values())


@pytest.fixture(params=[1, 2], ids=["per_frame", "temporal_factor_2"])
def autoencoder_module(request):
    from flowvid.autoencoders.training import AutoencoderModule
    from flowvid.config import load_config

    cfg = load_config("configs/autoencoder/tiny.yaml", [f"autoencoder.temporal_factor={request.param}",
                                                         "autoencoder.bottleneck=plain"])  # no draws: meta has none
    m = AutoencoderModule(cfg).to(META)
    m.trainer = SimpleNamespace(strategy=SimpleNamespace(backward=lambda loss, opt: loss.backward()), global_step=0,
                                world_size=1, _logger_connector=SimpleNamespace(should_update_logs=False))
    return m


def test_an_autoencoder_step_reads_nothing_before_its_finite_check(autoencoder_module, watched, monkeypatch):
    """kind: autoencoder, per-frame latents and a temporal factor (clips of 9, 16, 4, 12 and 7 frames,
    so that some are cut to 1 + 2 k): the layout (cuts, groups, decoded frames' positions) is worked
    out on the host and reaches the device through to_device."""
    m, factor = autoencoder_module, autoencoder_module.cfg.autoencoder.temporal_factor
    generator = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: generator())  # made, unused: plain bottleneck
    micro = [host_batch([9, 16, 4], seed=1), host_batch([12, 7], seed=2)]
    stats = m.accumulate(VideoDataModule(m.cfg).transfer_batch_to_device(micro, META, 0))
    grads = [p.grad for p in m.model.parameters() if p.grad is not None]
    assert grads and all(g.device == META for g in grads)
    assert sum(s.frames for s in stats) == (9 + 16 + 4 + 12 + 7 if factor == 1 else 9 + 15 + 3 + 11 + 7)
    assert not watched.seen, watched.seen
