"""Deterministic synthetic video families generated on the fly (no files): bouncing balls, pan/zoom textures.

Clip i is a pure function of (the family's settings, seed, i): all its randomness comes from
np.random.SeedSequence([seed, i]), so every process, order and worker sees the same clip.

Coordinates are normalised: (x, y) in [0, 1]^2, x to the right (columns), y down (rows), 0 and 1
at the image edges, so pixel (row r, column c) of a W-wide image has its centre at
((c + 0.5) / W, (r + 0.5) / W). This matches grid_sample with align_corners=False.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils.data import Dataset

from flowvid.errors import UsageError

MOTIONS = ("pan", "zoom_in", "zoom_out", "pan_zoom")  # PanZoomTextures label = index here


@dataclass
class SyntheticClip:
    """One synthetic clip, its class label and the family's ground truth."""

    frames: Tensor  # (F, 3, H, W) float32 in [-1, 1]
    label: int  # in [0, num_classes); meaning documented per family
    fps: float
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class BallPaths:
    """Ball centres and instantaneous velocities over a clip (normalised coordinates)."""

    positions: np.ndarray  # (F, n, 2) centres (x, y)
    velocities: np.ndarray  # (F, n, 2) instantaneous velocity per frame; each wall reflection flips a sign


# ---------------------------------------------------------------- validation


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value, minimum: int) -> int:
    """An int >= minimum, else a ValueError naming the argument."""
    if not _is_int(value) or value < minimum:
        raise UsageError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(name: str, value) -> float:
    """A finite number > 0, else a ValueError naming the argument."""
    if not _is_real(value) or value <= 0:
        raise UsageError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _pair(name: str, value, expected: str) -> tuple:
    """(lo, hi) from a single number or a two-element sequence."""
    if _is_real(value):
        return value, value
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be {expected}, got {value!r}") from None
    return lo, hi


def _int_range(name: str, value, minimum: int) -> tuple[int, int]:
    """An inclusive (lo, hi) int range with minimum <= lo <= hi; a single int n means (n, n)."""
    expected = f"an int or an inclusive (lo, hi) pair of ints with {minimum} <= lo <= hi"
    lo, hi = _pair(name, value, expected)
    if not (_is_int(lo) and _is_int(hi) and minimum <= lo <= hi):
        raise UsageError(f"{name} must be {expected}, got {value!r}")
    return int(lo), int(hi)


def _float_range(name: str, value, bounds: str, ok: Callable[[float, float], bool]) -> tuple[float, float]:
    """A (lo, hi) float range with lo <= hi and ok(lo, hi); a single number x means (x, x)."""
    expected = f"a number or a (lo, hi) pair with {bounds}"
    lo, hi = _pair(name, value, expected)
    if not (_is_real(lo) and _is_real(hi) and lo <= hi and ok(lo, hi)):
        raise UsageError(f"{name} must be {expected}, got {value!r}")
    return float(lo), float(hi)


# ---------------------------------------------------------------- shared base


class SyntheticVideo(Dataset):
    """Map-style dataset of len(ds) clips; ds[i] is drawn from SeedSequence([seed, i]) only."""

    num_classes: int

    def __init__(self, num_clips: int, size: int, frames, fps: float, seed: int, frame_choices=()):
        self.num_clips = _check_int("num_clips", num_clips, 1)
        self.size = _check_int("size", size, 8)
        self.frames = _int_range("frames", frames, 1)
        # lengths drawn from this set instead of the range (a toy of a few distinct lengths)
        self.frame_choices = tuple(_check_int("frame_choices", n, 1) for n in frame_choices)
        self.fps = _check_positive("fps", fps)
        self.seed = _check_int("seed", seed, 0)

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index) -> SyntheticClip:
        rng = self._rng(index)
        return self._make_clip(rng, self._draw_length(rng))

    def num_frames(self, index) -> int:
        """Length of clip `index` without rendering it (e.g. for length-bucketed samplers)."""
        return self._draw_length(self._rng(index))

    def describe(self) -> str:
        """One line: the family, its settings and what the label means."""
        raise NotImplementedError

    def _make_clip(self, rng: np.random.Generator, num_frames: int) -> SyntheticClip:
        """The clip drawn from rng (whose first draw was the length)."""
        raise NotImplementedError

    def _rng(self, index) -> np.random.Generator:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        if not -self.num_clips <= i < self.num_clips:
            n = self.num_clips
            raise IndexError(f"index {i} out of range for {n} clips (expected -{n} <= index < {n})")
        return np.random.default_rng(np.random.SeedSequence([self.seed, i % self.num_clips]))

    def _draw_length(self, rng: np.random.Generator) -> int:
        # Always the first draw of a clip's stream, so num_frames(i) == len(ds[i].frames).
        if self.frame_choices:
            return int(self.frame_choices[rng.integers(len(self.frame_choices))])
        return int(rng.integers(self.frames[0], self.frames[1], endpoint=True))

    def _describe_common(self) -> str:
        lo, hi = self.frames
        lengths = "/".join(map(str, self.frame_choices)) if self.frame_choices else f"{lo}-{hi}"
        return f"{self.num_clips} clips, {self.size}x{self.size}, {lengths} frames @ {self.fps:g} fps, seed {self.seed}"


# ---------------------------------------------------------------- rendering helpers


def _pixel_centres(size: int) -> Tensor:
    """(size,) normalised coordinates of pixel centres: (j + 0.5) / size."""
    return (torch.arange(size, dtype=torch.float32) + 0.5) / size


def disc_coverage(centres: Tensor, radii: Tensor, size: int) -> Tensor:
    """Anti-aliased disc coverage (..., size, size) from the signed distance, in pixels.

    alpha = clamp(r - |p - c| + 0.5, 0, 1), with r and |p - c| measured in pixels.
    """
    xs = _pixel_centres(size)
    dx = xs - centres[..., 0, None]  # (..., W)
    dy = xs - centres[..., 1, None]  # (..., H)
    dist = torch.sqrt(dx[..., None, :] ** 2 + dy[..., :, None] ** 2) * size  # (..., H, W)
    return (radii[..., None, None] * size - dist + 0.5).clamp_(0, 1)


def _paint(canvas: Tensor, colours: Tensor, alphas: Tensor) -> Tensor:
    """Composite layers in order over canvas: x <- lerp(x, colour_k, alpha_k); later layers on top.

    canvas (..., 3, H, W); colours (n, 3); alphas (..., n, H, W). lerp is exact at alpha = 1.
    """
    for k in range(colours.shape[0]):
        canvas = torch.lerp(canvas, colours[k].view(3, 1, 1), alphas[..., k : k + 1, :, :])
    return canvas.clamp(-1, 1)


# ---------------------------------------------------------------- bouncing balls


def ball_paths(start: np.ndarray, velocity: np.ndarray, radii: np.ndarray, num_frames: int) -> BallPaths:
    """Straight lines folded into [r, 1 - r] by elastic wall reflections (a triangle wave, exact).

    q = p0 + v t;  L = 1 - 2r;  u = (q - r) mod 2L;  p = r + L - |u - L|;  v_t = v * (+1 if u < L else -1).
    """
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]  # (F, 1, 1)
    r = radii[None, :, None]  # (1, n, 1)
    span = 1.0 - 2.0 * r
    u = np.mod(start[None] + velocity[None] * t - r, 2.0 * span)  # (F, n, 2)
    positions = r + span - np.abs(u - span)
    velocities = velocity[None] * np.where(u < span, 1.0, -1.0)  # a sign flip: |v| is kept exactly
    return BallPaths(positions=positions, velocities=velocities)


def _distinct_colours(rng: np.random.Generator, background: np.ndarray, n: int, margin: float = 0.6) -> np.ndarray:
    """(n, 3) uniform RGB colours in [-1, 1], one random channel >= margin from the background's."""
    colours = rng.uniform(-1.0, 1.0, (n, 3))
    channel = rng.integers(0, 3, n)
    b = background[channel]
    below = np.clip(b - margin + 1.0, 0.0, None)  # length of [-1, b - margin]
    above = np.clip(1.0 - b - margin, 0.0, None)  # length of [b + margin, 1]; below + above >= 2 - 2 margin
    u = rng.uniform(0.0, 1.0, n) * (below + above)
    colours[np.arange(n), channel] = np.where(u < below, -1.0 + u, b + margin + (u - below))
    return colours


class BouncingBalls(SyntheticVideo):
    """Balls in straight lines with elastic reflections off the four walls, over a per-clip background.

    Balls do not collide with each other: they pass through one another, later balls drawn on top.
    radius is a fraction of the frame side, speed a fraction of the frame side per frame.
    Label: number of balls - num_balls[0]; num_classes = num_balls[1] - num_balls[0] + 1.
    Extras (normalised coordinates): "positions" (F, n, 2) centres (x, y); "velocities" (F, n, 2)
    instantaneous velocity (= the per-frame displacement between bounces; its norm never changes);
    "radii" (n,); "colors" (n, 3) in [-1, 1]; "background" (3,).
    """

    def __init__(self, num_clips: int = 1000, size: int = 32, frames=(8, 16), num_balls=(1, 3),
                 radius=(0.08, 0.16), speed=(0.02, 0.08), fps: float = 8.0, seed: int = 0, frame_choices=()):
        super().__init__(num_clips, size, frames, fps, seed, frame_choices)
        self.num_balls = _int_range("num_balls", num_balls, 1)
        self.radius = _float_range("radius", radius, "0 < lo <= hi < 0.5 (fraction of the frame side)",
                                   lambda lo, hi: lo > 0 and hi < 0.5)
        self.speed = _float_range("speed", speed, "0 <= lo <= hi (frame sides per frame)", lambda lo, hi: lo >= 0)
        self.num_classes = self.num_balls[1] - self.num_balls[0] + 1

    def describe(self) -> str:
        (nlo, nhi), (rlo, rhi), (slo, shi) = self.num_balls, self.radius, self.speed
        return (f"BouncingBalls: {self._describe_common()}, {nlo}-{nhi} balls, radius {rlo:g}-{rhi:g}, "
                f"speed {slo:g}-{shi:g}/frame; label = balls - {nlo} ({self.num_classes} classes)")

    def _make_clip(self, rng: np.random.Generator, num_frames: int) -> SyntheticClip:
        n = int(rng.integers(self.num_balls[0], self.num_balls[1], endpoint=True))
        radii = rng.uniform(*self.radius, n)
        speed, angle = rng.uniform(*self.speed, n), rng.uniform(0.0, 2.0 * math.pi, n)
        velocity = speed[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)  # (n, 2)
        start = radii[:, None] + rng.uniform(0.0, 1.0, (n, 2)) * (1.0 - 2.0 * radii[:, None])  # disc inside
        background = rng.uniform(-1.0, 1.0, 3)
        colours = _distinct_colours(rng, background, n)
        paths = ball_paths(start, velocity, radii, num_frames)
        extras = {name: torch.from_numpy(value).float() for name, value in [
            ("positions", paths.positions), ("velocities", paths.velocities), ("radii", radii),
            ("colors", colours), ("background", background)]}
        frames = self._render(extras)
        return SyntheticClip(frames=frames, label=n - self.num_balls[0], fps=self.fps, extras=extras)

    def _render(self, extras: dict[str, Tensor]) -> Tensor:
        """(F, 3, H, W) discs over the background, anti-aliased, later balls on top."""
        num_frames = extras["positions"].shape[0]
        alphas = disc_coverage(extras["positions"], extras["radii"], self.size)  # (F, n, H, W)
        canvas = extras["background"].view(1, 3, 1, 1).expand(num_frames, 3, self.size, self.size)
        return _paint(canvas, extras["colors"], alphas)


# ---------------------------------------------------------------- pan/zoom textures


def render_views(image: Tensor, camera: Tensor, size: int) -> Tensor:
    """(F, 3, size, size) bilinear crops of image (3, T, T) at camera (F, 3) = (centre x, centre y, scale).

    Output pixel centre u = (j + 0.5) / size - 0.5 maps to x = c_x + s u in big-image coordinates.
    """
    num_frames = camera.shape[0]
    u = _pixel_centres(size) - 0.5  # (size,) offset from the view centre, in view sides
    gx = camera[:, 0, None] + camera[:, 2, None] * u  # (F, W)
    gy = camera[:, 1, None] + camera[:, 2, None] * u  # (F, H)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # (F, H, W, 2)
    # One grid_sample call for all frames: stack the frames' grids along H.
    grid = (grid * 2.0 - 1.0).reshape(1, num_frames * size, size, 2)  # (1, F*H, W, 2)
    out = nnf.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(3, num_frames, size, size).transpose(0, 1).contiguous()  # (F, 3, H, W)


def _gratings(rng: np.random.Generator, xs: Tensor, count: int = 3) -> Tensor:
    """(3, T, T) sum of coloured sinusoidal gratings: sum_k a_k cos(2 pi f_k (x cos th_k + y sin th_k) + phi_k)."""
    theta = torch.from_numpy(rng.uniform(0.0, 2.0 * math.pi, count)).float()
    freq = torch.from_numpy(rng.uniform(3.0, 12.0, count)).float()  # cycles per big image: ~1-3 per view
    phase = torch.from_numpy(rng.uniform(0.0, 2.0 * math.pi, count)).float()
    amp = torch.from_numpy(rng.uniform(-0.3, 0.3, (count, 3))).float()
    proj = xs.view(1, 1, -1) * theta.cos().view(-1, 1, 1) + xs.view(1, -1, 1) * theta.sin().view(-1, 1, 1)  # (k, T, T)
    waves = torch.cos(2.0 * math.pi * freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))
    # A Python sum, not einsum: a fixed summation order whatever the thread count (same clip in any worker).
    return sum(amp[k].view(3, 1, 1) * waves[k] for k in range(count))


def _smooth_noise(rng: np.random.Generator, side: int, cells: int = 6) -> Tensor:
    """(3, T, T) a random (3, cells, cells) grid upsampled bicubically (smooth, low-frequency structure)."""
    grid = torch.from_numpy(rng.standard_normal((1, 3, cells, cells))).float()
    return 0.35 * nnf.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)[0]


def _paint_shapes(rng: np.random.Generator, base: Tensor) -> Tensor:
    """base (3, T, T) with opaque coloured rectangles and discs on top (something to track)."""
    side = base.shape[-1]
    n = int(rng.integers(8, 17))  # enough that most views contain a shape
    centres = torch.from_numpy(rng.uniform(0.0, 1.0, (n, 2))).float()
    half = torch.from_numpy(rng.uniform(0.02, 0.08, (n, 2))).float()  # half-sides; discs use half[:, 0]
    is_disc = torch.from_numpy(rng.random(n) < 0.5)
    colours = torch.from_numpy(rng.uniform(-1.0, 1.0, (n, 3))).float()
    discs = disc_coverage(centres, half[:, 0], side)  # (n, T, T)
    # Box coverage is the product of two 1-D signed-distance ramps, as for discs.
    xs = _pixel_centres(side)
    ramp = ((half[:, None, :] - (xs[None, :, None] - centres[:, None, :]).abs()) * side + 0.5).clamp(0, 1)  # (n, T, 2)
    boxes = ramp[:, None, :, 0] * ramp[:, :, None, 1]  # (n, T, T)
    return _paint(base, colours, torch.where(is_disc.view(-1, 1, 1), discs, boxes))


def _texture(rng: np.random.Generator, side: int) -> Tensor:
    """(3, T, T) in [-1, 1]: a mean colour + smooth noise + gratings, then opaque shapes on top."""
    mean = torch.from_numpy(rng.uniform(-0.4, 0.4, (3, 1, 1))).float()
    base = mean + _smooth_noise(rng, side) + _gratings(rng, _pixel_centres(side))
    return _paint_shapes(rng, base)


def _zoom_scales(rng: np.random.Generator, direction: int, num_frames: int, zoom_rate: tuple[float, float],
                 scale_range: tuple[float, float]) -> np.ndarray:
    """(F,) view scales s_t = s_0 z^(direction t), z capped and s_0 drawn so all s_t lie in scale_range.

    direction -1 zooms in (the view shrinks), +1 zooms out, 0 keeps s_t = s_0.
    """
    lo, hi = scale_range
    z = rng.uniform(*zoom_rate)
    if num_frames > 1:
        z = min(z, (hi / lo) ** (1.0 / (num_frames - 1)))  # long clips zoom slower to stay in range
    span = z ** (num_frames - 1) if direction else 1.0
    start_lo, start_hi = (lo * span, hi) if direction < 0 else (lo, hi / span)
    start = math.exp(rng.uniform(math.log(start_lo), math.log(max(start_lo, start_hi))))  # log-uniform
    return start * z ** (direction * np.arange(num_frames, dtype=np.float64))


def _pan_centres(rng: np.random.Generator, speed: float, scales: np.ndarray) -> np.ndarray:
    """(F, 2) centres c_t = c_0 + v t, slowed if needed and started so each view stays inside [0, 1]^2."""
    num_frames, view = scales.shape[0], float(scales.max())
    angle = rng.uniform(0.0, 2.0 * math.pi)
    velocity = speed * np.array([math.cos(angle), math.sin(angle)])
    room = 1.0 - view  # centres of the largest view live in [view / 2, 1 - view / 2]
    travel = np.abs(velocity).max() * (num_frames - 1)
    if travel > room:
        velocity = velocity * (room / travel)
    travel_xy = velocity * (num_frames - 1)
    low = view / 2 + np.maximum(0.0, -travel_xy)
    start = rng.uniform(low, np.maximum(low, 1.0 - view / 2 - np.maximum(0.0, travel_xy)))  # max: float rounding
    centres = start + velocity * np.arange(num_frames, dtype=np.float64)[:, None]
    half = scales[:, None] / 2
    return np.clip(centres, half, 1.0 - half)  # trims float rounding only; the start already fits


class PanZoomTextures(SyntheticVideo):
    """A camera panning and/or zooming over a procedural texture texture_scale times larger than the frame.

    Texture: smooth noise + random-orientation gratings + coloured rectangles and discs.
    Label: index in MOTIONS: 0 pan, 1 zoom in, 2 zoom out, 3 pan + zoom (in or out, at random).
    Extras: "camera" (F, 3) = view centre x, centre y (normalised big-image coordinates) and
    scale = view side / big-image side; the view [c - s/2, c + s/2]^2 always lies in [0, 1]^2.
    Pan: the centre moves pan_speed big-image sides per frame in a straight line (slowed if the
    clip is too long to fit). Zoom: s_{t+1} = s_t / z (in) or s_t z (out), z from zoom_rate, with
    s in [0.5, 2] / texture_scale (z capped for long clips).
    """

    num_classes = len(MOTIONS)

    def __init__(self, num_clips: int = 1000, size: int = 32, frames=(8, 16), fps: float = 8.0, seed: int = 0,
                 texture_scale: int = 4, pan_speed=(0.005, 0.02), zoom_rate=(1.02, 1.06), frame_choices=()):
        super().__init__(num_clips, size, frames, fps, seed, frame_choices)
        self.texture_scale = _check_int("texture_scale", texture_scale, 3)
        self.pan_speed = _float_range("pan_speed", pan_speed, "0 < lo <= hi (big-image sides per frame)",
                                      lambda lo, hi: lo > 0)
        self.zoom_rate = _float_range("zoom_rate", zoom_rate, "1 < lo <= hi (scale factor per frame)",
                                      lambda lo, hi: lo > 1)
        # One output pixel spans between half a texel (zoomed in) and two texels (zoomed out).
        self.scale_range = (0.5 / self.texture_scale, 2.0 / self.texture_scale)

    def describe(self) -> str:
        return (f"PanZoomTextures: {self._describe_common()}, texture {self.texture_scale}x, "
                f"pan {self.pan_speed[0]:g}-{self.pan_speed[1]:g}/frame, zoom {self.zoom_rate[0]:g}-"
                f"{self.zoom_rate[1]:g}/frame; label = motion {list(MOTIONS)}")

    def _make_clip(self, rng: np.random.Generator, num_frames: int) -> SyntheticClip:
        motion = int(rng.integers(len(MOTIONS)))
        camera = torch.from_numpy(self._camera(rng, MOTIONS[motion], num_frames)).float()
        texture = _texture(rng, self.size * self.texture_scale)
        frames = render_views(texture, camera, self.size)
        return SyntheticClip(frames=frames, label=motion, fps=self.fps, extras={"camera": camera})

    def _camera(self, rng: np.random.Generator, motion: str, num_frames: int) -> np.ndarray:
        """(F, 3) camera path (centre x, centre y, scale) for one motion type."""
        direction = {"pan": 0, "zoom_in": -1, "zoom_out": 1}.get(motion)
        if direction is None:  # pan_zoom: either zoom direction
            direction = int(rng.choice([-1, 1]))
        scales = _zoom_scales(rng, direction, num_frames, self.zoom_rate, self.scale_range)
        speed = rng.uniform(*self.pan_speed) if motion in ("pan", "pan_zoom") else 0.0
        centres = _pan_centres(rng, speed, scales)
        return np.concatenate([centres, scales[:, None]], axis=1)


# ---------------------------------------------------------------- registry

SYNTHETIC: dict[str, type[SyntheticVideo]] = {"balls": BouncingBalls, "textures": PanZoomTextures}


def make_synthetic(kind: str, **kwargs) -> SyntheticVideo:
    """The synthetic family named kind ("balls" or "textures"), built with kwargs."""
    if kind not in SYNTHETIC:
        raise UsageError(f"unknown synthetic kind {kind!r}; expected one of {sorted(SYNTHETIC)}")
    return SYNTHETIC[kind](**kwargs)
