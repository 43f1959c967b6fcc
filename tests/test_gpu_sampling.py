"""The sampling tools on a CUDA device (run with `make test-gpu` on a GPU machine)."""
import pytest
import torch

from flowvid.pipelines import extend, generate, interpolate

from test_pipelines import images, tiny_model

pytestmark = pytest.mark.gpu


def test_tasks_run_on_the_gpu_and_keep_given_frames():
    model, cfg = tiny_model()
    model = model.cuda()
    samples = generate(model, cfg, num=3, steps=6, seed=1, max_frames=24)
    assert all(1 <= len(c) <= 24 and c.dtype == torch.uint8 for c in samples.clips)
    frames = images(4)
    v = interpolate(model, cfg, frames, 10.0, factor=3, steps=4)
    assert len(v.frames) == 10 and torch.equal(v.frames[::3], torch.from_numpy(frames))
    e = extend(model, cfg, frames, 10.0, num_frames=5, steps=4)
    assert len(e.frames) == 9 and torch.equal(e.frames[:4], torch.from_numpy(frames))
