"""Pretrained autoencoders from a local diffusers folder (the `diffusers` extra), behind the same
interface as flowvid's own (`LatentSpace`): nothing is downloaded.

- `AutoencoderKL` (image autoencoders): applied frame by frame; latents per frame.
- `AutoencoderKLLTXVideo` and `AutoencoderKLWan` (video autoencoders): a clip of 1 + T (n - 1)
  frames encodes to n latent frames (T, the temporal factor: 8 for LTX-Video, 4 for Wan).
  Their decoders see many latent frames at once, so a long clip is decoded in overlapping temporal
  tiles blended in pixel space (`tiled_frames`): memory stays bounded, and the overlap covers the
  decoder's measured temporal reach (`temporal_reach`) so that each kept frame is what a full
  decode gives.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import Tensor

from flowvid.autoencoders.model import LatentSpace
from flowvid.errors import UsageError

IMAGE_CLASSES = ("AutoencoderKL",)
VIDEO_CLASSES = ("AutoencoderKLLTXVideo", "AutoencoderKLWan")
PROBE_REACH = 32  # latent frames on each side of the probed one (temporal_reach)
REACH_TOLERANCE = 1e-3  # an effect below this fraction of the largest one counts as none
BLEND = 1  # latent frames over which two tiles are blended (T output frames each)


def is_diffusers_folder(path: str | Path) -> bool:
    """A folder holding a diffusers model (config.json), not a flowvid export (config.yaml)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file() and not (p / "config.yaml").is_file()


def load_diffusers_autoencoder(path: str | Path, device: str | torch.device = "cpu") -> "PretrainedAutoencoder":
    """The autoencoder saved in a local diffusers folder (`save_pretrained`), eval mode."""
    path = Path(path)
    try:
        name = json.loads((path / "config.json").read_text()).get("_class_name", "")
    except (OSError, ValueError) as e:
        raise UsageError(f"{path / 'config.json'}: not a readable diffusers config ({e})") from None
    if name not in IMAGE_CLASSES + VIDEO_CLASSES:
        raise UsageError(f"{path} holds a diffusers {name or 'model of unknown class'}; flowvid takes "
                         f"{', '.join(IMAGE_CLASSES + VIDEO_CLASSES)}")
    try:
        import diffusers
    except ImportError:
        raise UsageError(f"{path} is a diffusers {name}: install the extra, pip install 'flowvid[diffusers]'") from None
    model = getattr(diffusers, name).from_pretrained(str(path), local_files_only=True, low_cpu_mem_usage=False)
    return PretrainedAutoencoder(model.to(device).eval(), name)


@dataclass(frozen=True)
class Reach:
    """How far, in latent frames, a decoded frame depends on the latents before and after its own."""
    back: int
    ahead: int


class PretrainedAutoencoder(LatentSpace):
    """A diffusers autoencoder as a LatentSpace. Latents are normalised as its pipelines do:
    AutoencoderKL (z - shift_factor) * scaling_factor; LTX-Video (z - latents_mean) * scaling_factor
    / latents_std; Wan (z - latents_mean) / latents_std."""

    def __init__(self, model, class_name: str):
        c = model.config
        channels = c.z_dim if class_name == "AutoencoderKLWan" else c.latent_channels
        super().__init__(channels)
        self.model, self.class_name = model, class_name
        self.video = class_name in VIDEO_CLASSES
        if class_name == "AutoencoderKL":
            self.downsample = 2 ** (len(c.block_out_channels) - 1)
            self.latent_mean.fill_(c.shift_factor or 0.0)
            self.latent_std.fill_(1.0 / c.scaling_factor)
        elif class_name == "AutoencoderKLLTXVideo":
            self.downsample, self.temporal_factor = model.spatial_compression_ratio, model.temporal_compression_ratio
            self.latent_mean.copy_(model.latents_mean)
            self.latent_std.copy_(model.latents_std / c.scaling_factor)
        else:
            self.downsample, self.temporal_factor = model.spatial_compression_ratio, c.scale_factor_temporal
            if len(c.latents_mean) != channels or len(c.latents_std) != channels:
                raise UsageError(f"the {class_name} config has {len(c.latents_mean)} latents_mean and "
                                 f"{len(c.latents_std)} latents_std values for z_dim {channels} channels")
            self.latent_mean.copy_(torch.tensor(c.latents_mean))
            self.latent_std.copy_(torch.tensor(c.latents_std))
        self._reach: Reach | None = None
        self.to(model.device)  # the statistics where the network is

    @torch.no_grad()
    def encode_means(self, x: Tensor, chunk: int = 16) -> Tensor:
        """Posterior means (n, c, h, w) of frames x (F, 3, H, W): per frame, `chunk` at a time (image
        autoencoders); the whole clip at once, F = 1 + T (n - 1) (video autoencoders)."""
        device, f = self.latent_mean.device, self.downsample
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"frames must be (F, 3, H, W) with H and W multiples of {f}, got {tuple(x.shape)}")
        if not self.video:
            return torch.cat([self.model.encode(x[i:i + chunk].to(device)).latent_dist.mean.to(x.device)
                              for i in range(0, x.shape[0], chunk)])
        if (x.shape[0] - 1) % self.temporal_factor:
            raise ValueError(f"a {self.class_name} encodes 1 + {self.temporal_factor} k frames, got {x.shape[0]}")
        mean = self.model.encode(x.to(device).transpose(0, 1)[None]).latent_dist.mean
        return mean[0].transpose(0, 1).to(x.device)

    @torch.no_grad()
    def decode_chunks(self, z: Tensor, chunk: int, scale: float = 1.0) -> Iterator[Tensor]:
        """One clip's frames in [-1, 1]: image autoencoders `chunk` latent frames at a time; video
        autoencoders in tiles of `chunk` latent frames plus the decoder's reach (tiled_frames)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 frames, got {chunk}")
        self._scale(scale)
        if not self.video:
            for i in range(0, z.shape[0], chunk):
                yield self.model.decode(z[i:i + chunk].to(self.latent_mean.device)).sample
            return
        yield from tiled_frames(self._decode_clip, z, chunk, self.reach(), self.temporal_factor)

    def reach(self) -> Reach:
        """The decoder's temporal reach, measured once (temporal_reach)."""
        if self._reach is None:
            self._reach = temporal_reach(self._decode_clip, self.latent_channels, self.temporal_factor,
                                         self.latent_mean.device)
        return self._reach

    def _decode_clip(self, z: Tensor) -> Tensor:
        """Latents (n, c, h, w) -> frames (1 + T (n - 1), 3, H, W), one call to the decoder."""
        z = z.to(self.latent_mean.device).transpose(0, 1)[None]
        kwargs = {}
        if getattr(self.model.config, "timestep_conditioning", False):  # LTX-Video 0.9.1+: a clean decode
            kwargs["temb"] = torch.zeros(1, device=z.device)
        return self.model.decode(z, **kwargs).sample[0].transpose(0, 1)


def _block(frame: int, t: int) -> int:
    """The latent frame an output frame comes from: frame 0 from latent 0, then T frames a latent."""
    return 0 if frame == 0 else (frame - 1) // t + 1


def _first_frame(latent: int, t: int) -> int:
    """The first output frame of a latent frame."""
    return 0 if latent == 0 else t * (latent - 1) + 1


@torch.no_grad()
def temporal_reach(decode: Callable[[Tensor], Tensor], channels: int, t: int, device=None) -> Reach:
    """Perturb one latent frame in the middle of 2 PROBE_REACH + 1 random ones (1x1 in space: the
    temporal reach does not depend on the frame size) and see which decoded frames change by more
    than REACH_TOLERANCE of the largest change. Capped at PROBE_REACH each way."""
    g = torch.Generator().manual_seed(0)
    mid = PROBE_REACH
    z = torch.randn(2 * PROBE_REACH + 1, channels, 1, 1, generator=g).to(device)
    bumped = z.clone()
    bumped[mid] += 1.0
    outs = []
    for latents in (z, bumped):
        with torch.random.fork_rng(devices=[]):  # decoders that inject noise: the same noise both times
            torch.manual_seed(0)
            outs.append(decode(latents).float())
    change = (outs[0] - outs[1]).abs().flatten(1).amax(1)
    moved = [_block(f, t) for f in range(change.shape[0]) if change[f] > REACH_TOLERANCE * change.max()]
    # a frame k latents after the bumped one changed: frames depend on latents k back (and so ahead)
    return Reach(back=max(max(moved) - mid, 1), ahead=max(mid - min(moved), 0))


def tiled_frames(decode: Callable[[Tensor], Tensor], z: Tensor, chunk: int, reach: Reach, t: int,
                 blend: int = BLEND) -> Iterator[Tensor]:
    """A clip's frames from its latents z (n, c, h, w), decoded in overlapping tiles and streamed.

    The output is cut at latent frames c_k = k * chunk. Tile k decodes latents
    [c_k - blend - back, c_{k+1} + ahead) (clamped to the clip), so every frame it keeps has the
    decoder's whole reach inside the tile; across each cut the last `blend` latent frames before it,
    blend * T output frames, are a linear cross-fade from tile k - 1 to tile k. Memory holds one
    tile; decode: latents (m, c, h, w) -> frames (1 + T (m - 1), 3, H, W)."""
    n = z.shape[0]
    if chunk < blend:
        raise ValueError(f"chunk must be >= the blend ({blend} latent frames), got {chunk}")
    cuts = list(range(0, n, chunk)) + [n]
    held: Tensor | None = None  # the previous tile's frames over the blend before this cut
    for c0, c1 in zip(cuts, cuts[1:]):
        start = max(c0 - blend, 0)  # the latents this tile emits: [start, stop)
        stop = c1 if c1 == n else c1 - blend  # the blend before the next cut waits for the next tile
        a, b = max(start - reach.back, 0), min(c1 + reach.ahead, n)
        frames = decode(z[a:b])
        # tile frame i is output frame T a + i (its first latent decodes to one frame)
        lo, hi, end = (_first_frame(j, t) - t * a for j in (start, stop, c1))
        out = frames[lo:hi]
        if held is not None:
            k = held.shape[0]
            w = (torch.arange(1, k + 1, device=out.device, dtype=out.dtype) / (k + 1)).view(-1, 1, 1, 1)
            out = torch.cat([held * (1 - w) + out[:k] * w, out[k:]])
        held = frames[hi:end] if c1 < n else None
        yield out
