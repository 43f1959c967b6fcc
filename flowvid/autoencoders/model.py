"""A video autoencoder: a per-frame encoder and a multi-scale decoder with causal temporal layers.

- Latents are per frame by default, (F, c, H / f, W / f): the insertion path inserts whole frames,
  and the tools that place given frames one by one need a latent frame per frame. With a temporal
  factor T > 1 (`autoencoder.temporal_factor`), a clip of 1 + T k frames encodes to 1 + k latent
  frames: frame 0 alone, then frames 1..T, T+1..2T, ... (as causal video autoencoders do); the
  encoder stacks each group's per-frame features along channels, the decoder unstacks them.
- The decoder works coarse to fine and outputs RGB at 1/4, 1/2 and full resolution, each scale
  adding a residual to the last one upsampled, so it can stop early: `decode(z, scale=0.25)`
  is a cheap preview.
- Its temporal layers are causal with a bounded look-back (temporal_kernel - 1 frames each):
  `decode_chunks(z, chunk)` decodes chunk by chunk, carrying the few frames each temporal layer
  needs from the last chunk, and equals a full decode; memory does not grow with the length.

Frames are packed like the flow model's: (M, C, H, W) with `pos` (M,), each frame's index within
its clip; a temporal layer never mixes frames of two clips.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvid.devices import to_device

SCALES = (0.25, 0.5, 1.0)  # the decoder's outputs, as fractions of the frame side


@dataclass
class Encoded:
    mean: Tensor  # (M, c, h, w)
    logvar: Tensor | None  # (M, c, h, w); None for a plain bottleneck

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """z = mean + exp(logvar / 2) eps (the mean itself for a plain bottleneck)."""
        if self.logvar is None:
            return self.mean
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + (0.5 * self.logvar).exp() * eps

    def kl(self) -> Tensor:
        """Mean over latent values of KL(N(mean, var) || N(0, 1)) = (mean^2 + var - 1 - logvar) / 2."""
        if self.logvar is None:
            return self.mean.new_zeros(())
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1 - self.logvar).mean()


def latent_groups(pos: Tensor, factor: int) -> Tensor:
    """(n, T) the frames each latent frame encodes, as indices into the packed frames: a clip's frame 0
    alone (T times), then frames 1..T, T+1..2T, ...; pos (M,) each frame's index within its clip, on
    the host (the layout is the host's to work out: reading device tensors would stall the device)."""
    starts = ((pos == 0) | ((pos - 1) % factor == 0)).nonzero().flatten()  # (n,)
    first = (pos[starts] == 0)[:, None]
    offsets = torch.arange(factor)
    groups = starts[:, None] + torch.where(first, 0, offsets)  # (n, T)
    covered = int(first.sum()) + factor * int((~first).sum())
    if (covered != pos.shape[0] or pos.shape[0] == 0 or groups.max() >= pos.shape[0]
            or not torch.equal(pos[groups], torch.where(first, 0, pos[starts][:, None] + offsets))):
        raise ValueError(f"with temporal_factor {factor} each clip must have 1 + {factor} k frames (frame 0, then "
                         f"groups of {factor}); got frames at clip positions {pos.tolist()}")
    return groups


def frame_positions(latent_pos: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """The frames latent frames decode to, on the host: (kept (m,) indices into the n * T slots of the
    latent frames, pos (m,) those frames' indices within their clip). Latent 0 keeps its first slot,
    frame 0; latent p its T slots, frames 1 + T (p - 1) + r."""
    slots = torch.arange(factor)
    pos = (1 + factor * (latent_pos[:, None] - 1) + slots).clamp_min(0).flatten()  # (n * T,)
    kept = ((latent_pos[:, None] > 0) | (slots == 0)).flatten().nonzero().flatten()
    return kept, pos[kept]


def num_latents(frames: int, factor: int) -> int:
    """Latent frames of a clip of 1 + T k frames: 1 + k."""
    return 1 + (frames - 1) // factor


def whole_group_frames(frames, factor: int):
    """The frames of a clip of `frames` (an int or a tensor of them) that encode: its first 1 + T k."""
    return 1 + (frames - 1) // factor * factor


def clip_positions(cu_seqlens: list[int]) -> Tensor:
    """(M,) each frame's index within its clip, from the clips' boundaries [0, n1, n1 + n2, ...]."""
    lengths = torch.tensor([b - a for a, b in zip(cu_seqlens, cu_seqlens[1:])])
    starts = torch.tensor(cu_seqlens[:-1]).repeat_interleave(lengths)
    return torch.arange(cu_seqlens[-1]) - starts


class ResBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, twice, with a residual; the second conv starts at zero."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(8, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class CausalTemporalMix(nn.Module):
    """y_i = x_i + W [x_i, x_{i-1}, ..., x_{i-k+1}] per pixel, frames before the clip's start taken as 0.

    Pointwise in space, causal in time, look-back k - 1 frames; W starts at zero (identity layer)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.norm = nn.GroupNorm(8, channels)
        self.mix = nn.Conv2d(channels * kernel, channels, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, x: Tensor, pos: Tensor, carry: dict | None = None) -> Tensor:
        """x (M, C, H, W), pos (M,); carry: a dict kept across chunks of one clip (chunked decoding)."""
        k, h = self.kernel, 0
        if carry is not None:
            prev = carry.get(self)
            if prev is not None:
                h = prev[0].shape[0]
                x, pos = torch.cat([prev[0], x]), torch.cat([prev[1], pos])
            carry[self] = (x[-(k - 1):], pos[-(k - 1):]) if k > 1 else (x[:0], pos[:0])
        a = F.silu(self.norm(x))
        shifted = [a] + [torch.where((pos >= j).view(-1, 1, 1, 1), a.roll(j, 0), 0.0) for j in range(1, k)]
        return (x + self.mix(torch.cat(shifted, 1)))[h:]  # (M, C, H, W), the carried frames dropped


class Encoder(nn.Module):
    """(M, 3, H, W) -> (n, 2c or c, H / f, W / f), f = 2^(levels): a per-frame body, then each latent
    frame's group of T frames (latent_groups) stacked along channels into the output convolution."""

    def __init__(self, cfg):
        super().__init__()
        ch = list(cfg.channels)
        self.factor = cfg.temporal_factor
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        layers = []
        for i in range(cfg.levels):
            layers += [ResBlock(ch[i], ch[i]) for _ in range(cfg.blocks)]
            layers.append(nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1))
        layers += [ResBlock(ch[-1], ch[-1]) for _ in range(cfg.blocks)]
        self.body = nn.Sequential(*layers)
        out = cfg.latent_channels * (2 if cfg.bottleneck.value == "kl" else 1)
        self.conv_out = nn.Sequential(nn.GroupNorm(8, ch[-1]), nn.SiLU(),
                                      nn.Conv2d(ch[-1] * self.factor, out, 3, padding=1))
        if cfg.bottleneck.value == "kl":  # log-variance starts at -6 (std 0.05): a unit-variance draw would
            # drown the small initial means, and the decoder would first learn from noise
            # (16x16 balls, 750 steps: 17.3 dB from log-variance 0, 19.1 dB from -6)
            nn.init.constant_(self.conv_out[2].bias[cfg.latent_channels:], -6.0)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x (M, 3, H, W), pos (M,) each frame's index within its clip (on the host)."""
        norm, act, conv = self.conv_out
        h = act(norm(self.body(self.conv_in(x))))  # (M, C, h, w)
        if self.factor > 1:
            groups = latent_groups(pos, self.factor)  # (n, T)
            h = h.index_select(0, to_device(groups.flatten(), h.device))  # (n*T, C, h, w)
            h = h.unflatten(0, groups.shape).flatten(1, 2)  # (n, T*C, h, w)
        return conv(h)


class DecoderStage(nn.Module):
    """One resolution of the decoder: residual blocks, each followed by a causal temporal mix."""

    def __init__(self, cin: int, cout: int, blocks: int, kernel: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout) for i in range(blocks))
        self.temporal = nn.ModuleList(CausalTemporalMix(cout, kernel) for _ in range(blocks))

    def forward(self, x: Tensor, pos: Tensor, carry: dict | None) -> Tensor:
        for block, mix in zip(self.blocks, self.temporal):
            x = mix(block(x), pos, carry)
        return x


class Decoder(nn.Module):
    """(n, c, H / f, W / f) latent frames -> RGB frames at 1/4, 1/2 and full resolution, coarse to fine.

    Stage s works at 1/2^(levels - s) of the frame side; from 1/4 on each outputs
    rgb_s = upsample(rgb_{s-1}) + head_s(features_s)."""

    def __init__(self, cfg):
        super().__init__()
        ch = list(reversed(cfg.channels))  # coarsest first
        self.levels, self.factor = cfg.levels, cfg.temporal_factor
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0] * self.factor, 3, padding=1)
        self.stages = nn.ModuleList(DecoderStage(ch[max(i - 1, 0)] if i else ch[0], ch[i], cfg.blocks,
                                                 cfg.temporal_kernel) for i in range(cfg.levels + 1))
        self.up = nn.ModuleList(nn.Conv2d(ch[i], ch[i], 3, padding=1) for i in range(cfg.levels))
        # RGB heads at the last three stages (1/4, 1/2, full), reading the residual stream as it is: a
        # GroupNorm first would remove each group's mean, a frame's flat colour, for the head to rebuild
        # (plain bottleneck, 16x16 balls, 1,500 steps: 20.1 dB with it, 21.3 dB without)
        self.heads = nn.ModuleList(nn.Conv2d(ch[i], 3, 3, padding=1) for i in range(cfg.levels - 2, cfg.levels + 1))

    def forward(self, z: Tensor, pos: Tensor, scale: float = 1.0, carry: dict | None = None) -> list[Tensor]:
        """[rgb at 1/4, 1/2, 1] up to `scale` (one of SCALES), each (M, 3, H * s, W * s); z (n, c, h, w)
        latent frames at positions pos (n,) within their clips (on the host), M their frames
        (frame_positions)."""
        outs: list[Tensor] = []
        h = self.conv_in(z)
        if self.factor > 1:  # each latent frame's T frames, stacked along channels by the encoder
            kept, pos = frame_positions(pos, self.factor)
            h = h.unflatten(1, (self.factor, -1)).flatten(0, 1)  # (n*T, C, h, w)
            h = h.index_select(0, to_device(kept, h.device))  # (M, C, h, w)
        pos = to_device(pos, h.device)
        for i, stage in enumerate(self.stages):
            if i:
                h = self.up[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = stage(h, pos, carry)
            head = i - (self.levels - 2)
            if head >= 0:
                rgb = self.heads[head](h)
                if outs:
                    rgb = rgb + F.interpolate(outs[-1], scale_factor=2.0, mode="bilinear", align_corners=False)
                outs.append(rgb)
                if SCALES[head] >= scale:
                    break
        return outs


class LatentSpace(nn.Module):
    """What the flow model's tools need of an autoencoder, flowvid's own or a pretrained one:

    - `downsample` (spatial), `temporal_factor` (n latent frames decode to 1 + T (n - 1) frames),
      `latent_channels`, `scales` (the decoder's output scales, 1.0 the full frame);
    - `encode_means(x, chunk)`: frames (F, 3, H, W) in [-1, 1] -> posterior means (n, c, h, w);
    - `decode_chunks(z, chunk, scale)`: one clip's latents -> its frames, a bounded piece at a time;
    - `normalize` / `denormalize` with the per-channel `latent_mean` and `latent_std` buffers, so
      that the flow model sees unit-scale latents."""

    temporal_factor = 1
    scales: tuple[float, ...] = (1.0,)

    def __init__(self, latent_channels: int):
        super().__init__()
        self.latent_channels = latent_channels
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    def normalize(self, z: Tensor) -> Tensor:
        """(z - mean) / std per latent channel."""
        return (z - self.latent_mean.view(-1, 1, 1)) / self.latent_std.view(-1, 1, 1)

    def denormalize(self, z: Tensor) -> Tensor:
        return z * self.latent_std.view(-1, 1, 1) + self.latent_mean.view(-1, 1, 1)

    def reconstruct(self, x: Tensor, chunk: int = 16) -> Tensor:
        """One clip (F, 3, H, W) through the autoencoder from its posterior means, `chunk` latent frames
        at a time both ways."""
        return torch.cat([f.to(x.device) for f in self.decode_chunks(self.encode_means(x, chunk), chunk)])

    def _scale(self, scale: float) -> float:
        if scale not in self.scales:
            raise ValueError(f"scale must be one of {self.scales} (the decoder's outputs), got {scale}")
        return scale


class VideoAutoencoder(LatentSpace):
    """encode: frames (M, 3, H, W) in [-1, 1] -> Encoded; decode: latents -> frames, any scale, any chunk.

    The latents' per-channel mean and std over the training data are kept as buffers
    (`latent_mean`, `latent_std`, recorded during training)."""

    scales = SCALES

    def __init__(self, cfg):
        super().__init__(cfg.latent_channels)
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @property
    def downsample(self) -> int:
        return self.cfg.downsample

    @property
    def temporal_factor(self) -> int:
        return self.cfg.temporal_factor

    def encode(self, x: Tensor, pos: Tensor | None = None) -> Encoded:
        """x (M, 3, H, W) with H, W multiples of the downsampling factor -> n latent frames; pos (M,)
        each frame's index within its clip, on the host (None: one clip from frame 0). Per frame when T = 1."""
        self._check_frames(x)
        pos = torch.arange(x.shape[0]) if pos is None else pos
        h = self.encoder(x, pos)
        if self.cfg.bottleneck.value == "kl":
            mean, logvar = h.chunk(2, dim=1)
            return Encoded(mean, logvar.clamp(-30.0, 20.0))
        return Encoded(h, None)

    def decode(self, z: Tensor, cu_seqlens: list[int] | None = None, scale: float = 1.0,
               chunk: int = 0) -> Tensor:
        """Frames (M, 3, H * scale, W * scale) in about [-1, 1]; z (n, c, h, w) latent frames of packed
        clips, cu_seqlens their boundaries in latent frames (one clip without). chunk > 0 decodes one
        clip `chunk` latent frames at a time."""
        if chunk:
            return torch.cat(list(self.decode_chunks(z, chunk, scale)))
        cu = [0, z.shape[0]] if cu_seqlens is None else list(cu_seqlens)
        return self.decoder(z, clip_positions(cu), self._scale(scale))[-1]

    def decode_chunks(self, z: Tensor, chunk: int, scale: float = 1.0) -> Iterator[Tensor]:
        """One clip's frames, `chunk` latent frames at a time; equal to decode(z) cut into chunks. Each
        temporal layer carries its last temporal_kernel - 1 input frames into the next chunk."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 latent frames, got {chunk}")
        scale, carry = self._scale(scale), {}
        for start in range(0, z.shape[0], chunk):
            part = z[start:start + chunk]
            pos = torch.arange(start, start + part.shape[0])
            yield self.decoder(part, pos, scale, carry)[-1]

    def encode_means(self, x: Tensor, chunk: int = 16) -> Tensor:
        """Posterior means (n, c, h, w) of one clip's frames x (F, 3, H, W), F = 1 + T (n - 1), `chunk`
        latent frames at a time (each on the autoencoder's device; the result where x is): memory does
        not grow with the length."""
        device, t = self.latent_mean.device, self.temporal_factor
        if (x.shape[0] - 1) % t:
            raise ValueError(f"with temporal_factor {t} a clip must have 1 + {t} k frames, got {x.shape[0]}")
        n = num_latents(x.shape[0], t)
        bounds = [0] + [1 + t * (i - 1) for i in range(chunk, n, chunk)] + [x.shape[0]]  # frames of chunk i
        return torch.cat([self.encode(x[a:b].to(device), torch.arange(a, b)).mean.to(x.device)
                          for a, b in zip(bounds, bounds[1:])])

    def forward(self, x: Tensor, cu_seqlens: list[int], generator: torch.Generator | None = None,
                sample: bool = True):
        """Training: (Encoded, [rgb at 1/4, 1/2, 1]) of packed frames x (M, 3, H, W), each clip 1 + T k
        frames, decoded from a draw of the posterior (or its mean: sample=False)."""
        enc = self.encode(x, clip_positions(cu_seqlens))
        z = enc.sample(generator) if sample else enc.mean
        latent_cu = [0] + [num_latents(b - a, self.temporal_factor) for a, b in zip(cu_seqlens, cu_seqlens[1:])]
        return enc, self.decoder(z, clip_positions(list(itertools.accumulate(latent_cu))))

    def _check_frames(self, x: Tensor) -> None:
        f, c = self.cfg.downsample, self.cfg.in_channels
        if x.dim() != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise ValueError(f"frames must be (M, {c}, H, W) with H and W multiples of {f}, got {tuple(x.shape)}")
