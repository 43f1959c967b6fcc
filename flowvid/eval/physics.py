"""Physics of bouncing balls: ball tracks recovered from uint8 frames, scored against elastic straight-line motion.

The model of a frame is flowvid.data.synthetic.BouncingBalls': a uniform background bg and discs of
colour c_k composited in order, pixel = lerp(pixel, c_k, alpha_k), alpha_k the anti-aliased coverage.
Colours here are in uint8 levels (0..255, float): level = (x + 1) 127.5 for x in [-1, 1], as to_uint8.
Positions are normalised like the generator's: (x, y) in [0, 1], x = columns, the centre of
column j at (j + 0.5) / W, so one pixel is 1 / W of the frame side.

Limits of the tracker (what it cannot see, by construction):
- occlusion: a ball partly hidden behind a later-drawn one loses coverage and its centroid moves
  towards its visible part; it is "not found" in frames where its area is off by > AREA_TOLERANCE
  from its typical area (the median over frames where it touches no other ball);
- colour: balls are told apart by colour alone. Each pixel goes to the ball whose bg -> c segment
  explains it best, so similar colours stay apart, but two balls of the same colour (within a few
  levels) are one: per frame each ball keeps its largest connected region, so when apart the
  bigger one wins (a wrong track when it is the other ball), and when merged the area check drops
  the frame;
- estimated colours (no truth given): a colour is a ball's only if it is found in >= 1/3 of the
  frames (a ball hidden or absent in most frames is not tracked); a ball whose colour is, within
  MIX_LEVELS, a mix of the background and two other balls' colours is taken for their overlap's
  rim and dropped; a ball within FOREGROUND_LEVELS of the background in every channel is not seen.
  The generator keeps every ball >= 0.6 (76 levels) from the background in one channel;
- a "ball" of a generated clip is whatever region matches a colour: blobs that change size by
  > AREA_TOLERANCE count as not found, not as moving badly.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ALPHA_MIN = 0.1  # coverage below this is noise (an 8-bit background off by a few levels), not ball
SEGMENT_LEVELS = 12.0  # a pixel belongs to ball k only within max(this, SEGMENT_FRACTION |c_k - bg|) of bg -> c_k
SEGMENT_FRACTION = 0.2
FOREGROUND_LEVELS = 24.0  # colour estimation: a pixel is foreground when some channel is this far from bg
MIN_BALL_FRACTION = 0.004  # colour estimation: a ball needs this fraction of the frame's pixels (and >= 3)
MIX_LEVELS = 6.0  # colour estimation: within this of a triangle (bg, c_i, c_j), a colour is a mix of two balls
MAX_BALLS = 16
GROUP_LEVELS = 12.0  # colour estimation: one ball's colour seen in different frames, within this per channel
MIN_FRAME_FRACTION = 1 / 3  # colour estimation: a ball's colour must be found in this fraction of the frames
MAX_CANDIDATES = 1024  # colour estimation: pixels examined at most (bounds the time on a noisy clip)
AREA_TOLERANCE = 0.1  # found: coverage area within 10% of the ball's typical (median untouched) area
MIN_AREA_PIXELS = 2.0


@dataclass
class Tracks:
    """Ball centres recovered from a clip, with what they were recovered from."""

    positions: np.ndarray  # (F, n, 2) coverage centroids (x, y), normalised; NaN where a ball has no coverage
    radii: np.ndarray  # (n,) normalised, from each ball's median coverage area
    found: np.ndarray  # (F, n) bool: coverage area near the ball's typical area
    areas: np.ndarray  # (F, n) coverage area, pixels
    touching: np.ndarray  # (F, n) bool: the ball's region borders another ball (or a mix of two)
    colors: np.ndarray  # (n, 3) ball colours, uint8 levels
    background: np.ndarray  # (3,) uint8 levels
    size: int  # frame side, pixels
    estimated: bool  # colours estimated from the clip (estimate_colors) rather than given


@dataclass
class PhysicsScore:
    """One clip's deviation from elastic straight-line motion, and how much of it could be tracked."""

    error: float  # mean |p_{t+1} - fold(2 p_t - p_{t-1})|, frame sides; NaN when no ball was found 3 frames running
    error_px: float  # the same in pixels
    found: float  # fraction of (ball, frame) pairs found; 0 when no ball
    triplets: int  # (ball, t) with p_{t-1}, p_t, p_{t+1} all found: the terms of the mean
    balls: int
    frames: int


@dataclass
class PhysicsSummary:
    """Physics scores over a set of clips."""

    error: float  # mean over scored clips of each clip's error, frame sides; NaN when none was scored
    error_px: float  # mean over scored clips of error_px
    found: float  # mean over all clips of the found fraction
    clips: int
    untracked: int  # clips with no ball found in three consecutive frames (no error), counted in found only
    colours: str  # "known", "estimated" or "mixed"


# ----------------------------------------------------------------------------- inputs


def to_levels(x) -> np.ndarray:
    """[-1, 1] values -> uint8 levels before rounding, as pipelines.tasks.to_uint8: l = (clip(x, -1, 1) + 1) 127.5."""
    return (np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) + 1.0) * 127.5


def _clip_levels(frames) -> np.ndarray:
    """uint8 (F, H, W, 3) square frames as float64 levels, else a ValueError saying what was given."""
    a = np.asarray(frames)
    if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) RGB, got {a.dtype} {a.shape}")
    if a.shape[1] != a.shape[2] or a.shape[0] == 0:
        raise ValueError(f"the physics score needs square frames (bouncing balls) and >= 1 frame, got {a.shape}")
    return a.astype(np.float64)


def estimate_background(frames) -> np.ndarray:
    """(3,) levels: per-channel median of every pixel of a clip (F, H, W, 3): bg_c = median_{f, y, x} I[f, y, x, c].

    The median, not the mode: both are exact on real clips (the uniform background is over half of
    every frame, balls cover at most ~25%), but a generated clip's background carries a few levels
    of noise, where the mode of 8-bit values jumps between near-equal counts and the median does not.
    """
    return np.median(np.asarray(frames, dtype=np.float64).reshape(-1, 3), axis=0)  # (F*H*W, 3) -> (3,)


def _segment_fit(pix: np.ndarray, background: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage and distance to the bg -> c segment: alpha = clip(<p - bg, e> / |e|^2, 0, 1), res = |p - bg - alpha e|.

    pix (..., 3) levels, colors (n, 3) -> alpha, res (..., n), with e = c - bg.
    """
    d = pix - background  # (..., 3)
    e = colors - background  # (n, 3)
    alpha = np.clip(d @ e.T / np.maximum((e**2).sum(-1), 1e-9), 0.0, 1.0)  # (..., n)
    res = np.linalg.norm(d[..., None, :] - alpha[..., None] * e, axis=-1)  # (..., n, 3) -> (..., n)
    return alpha, res


def _segment_tolerance(background: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(n,) how far from the bg -> c_k segment a pixel may lie and still count as ball k."""
    return np.maximum(SEGMENT_LEVELS, SEGMENT_FRACTION * np.linalg.norm(colors - background, axis=-1))


def _in_triangles(pix: np.ndarray, background: np.ndarray, found: list[np.ndarray]) -> np.ndarray:
    """(P,) whether each pixel is a mix of bg and two found colours: p - bg = s e_i + t e_j, s, t >= 0, s + t <= 1.

    Within MIX_LEVELS of some triangle (bg, c_i, c_j): where a ball's rim overlaps another's.
    """
    if len(found) < 2:
        return np.zeros(len(pix), dtype=bool)
    e = np.asarray(found, dtype=np.float64) - background  # (n, 3)
    i, j = np.triu_indices(len(found), 1)
    basis = np.stack([e[i], e[j]], axis=-1)  # (K, 3, 2): every pair at once (one stacked pinv, not K)
    d = pix - background  # (P, 3)
    st = np.einsum("kac,pc->pka", np.linalg.pinv(basis), d)  # (P, K, 2) least-squares (s, t)
    res = np.linalg.norm(d[:, None, :] - np.einsum("kca,pka->pkc", basis, st), axis=-1)  # (P, K)
    slack = 0.05
    return ((res <= MIX_LEVELS) & (st.min(-1) >= -slack) & (st.sum(-1) <= 1 + slack)).any(axis=1)


def _mode_colour(pix: np.ndarray) -> np.ndarray:
    """The most frequent exact colour among pix (P, 3); the first of them on ties."""
    values, counts = np.unique(pix, axis=0, return_counts=True)
    return values[counts.argmax()]


def frame_colors(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(n, 3) ball colours in one frame (H, W, 3) of levels: repeatedly the foreground pixel farthest from bg.

    Any mix of bg and discs lies in their colours' convex hull, so the pixel maximising |p - bg| is a
    pure ball colour c (every disc of radius >= 1.21 px covers some pixel fully). Foreground:
    max_c |p - bg| > FOREGROUND_LEVELS. Accept c if >= max(3, MIN_BALL_FRACTION H W) foreground pixels
    lie within SEGMENT_LEVELS of the bg -> c segment (its disc and rim), then drop those; drop c alone
    if it lacks that support (noise), or, with the pixels near it, if it lies in a triangle
    (bg, c_i, c_j) of two colours found before (an overlap's rim). c is then the commonest exact
    colour among its support's pixels with alpha >= 0.9 (the disc's interior, not a rim next to it).
    """
    frame = np.asarray(frame, dtype=np.float64)
    pix = frame.reshape(-1, 3)  # (H*W, 3)
    pix = pix[np.abs(pix - background).max(-1) > FOREGROUND_LEVELS]  # (P, 3)
    min_pixels = max(3, math.ceil(MIN_BALL_FRACTION * frame.shape[0] * frame.shape[1]))
    colors: list[np.ndarray] = []
    for _ in range(MAX_CANDIDATES):
        if len(pix) < min_pixels or len(colors) == MAX_BALLS:
            break
        far = np.linalg.norm(pix - background, axis=-1).argmax()
        colour = pix[far]
        if _in_triangles(colour[None], background, colors)[0]:
            pix = pix[~_in_triangles(pix, background, colors)]
            continue
        alpha, res = _segment_fit(pix, background, colour[None])
        support = res[:, 0] <= SEGMENT_LEVELS  # strict: a similar colour off the segment is another ball
        if support.sum() >= min_pixels:
            colors.append(_mode_colour(pix[support & (alpha[:, 0] >= 0.9)]))  # a rim of a mix: the disc's own
            pix = pix[~support]
        else:
            pix = np.delete(pix, far, axis=0)
    return _drop_mixtures(np.array(colors, dtype=np.float64).reshape(-1, 3), background)


def _drop_mixtures(colors: np.ndarray, background: np.ndarray) -> np.ndarray:
    """The colours without those in a triangle (bg, c_i, c_j) of two others, the last found dropped first.

    A rim where ball j overlaps ball i can be farther from bg than c_j, so it may be picked before c_j.
    """
    keep = list(range(len(colors)))
    for k in reversed(range(len(colors))):
        others = [colors[i] for i in keep if i != k]
        if _in_triangles(colors[k][None], background, others)[0]:
            keep.remove(k)
    return colors[keep]


def estimate_colors(frames, background=None) -> np.ndarray:
    """(n, 3) ball colours of a clip (levels): the colours frame_colors finds in >= 1/3 of the frames.

    Per frame colours are grouped across frames (within GROUP_LEVELS per channel of the colour seen
    in most frames, greedily); a group's colour is the commonest exact value among its members. A
    vote over frames rather than the first frame alone: a ball hidden behind another in one frame,
    or the mixed rim of two overlapping balls, does not decide the clip's colours.
    """
    levels = np.asarray(frames, dtype=np.float64)  # (F, H, W, 3)
    bg = estimate_background(levels) if background is None else np.asarray(background, dtype=np.float64)
    found = [frame_colors(frame, bg) for frame in levels]
    cands = np.concatenate(found + [np.zeros((0, 3))])  # (K, 3) every frame's colours
    frame_of = np.concatenate([np.full(len(c), i) for i, c in enumerate(found)] + [np.zeros(0, int)])  # (K,)
    near = np.abs(cands[:, None] - cands[None]).max(-1) <= GROUP_LEVELS  # (K, K)
    need = max(1, math.ceil(len(levels) * MIN_FRAME_FRACTION))
    colors, free = [], np.ones(len(cands), dtype=bool)
    while free.any():
        votes = [len(np.unique(frame_of[near[k] & free])) if free[k] else -1 for k in range(len(cands))]
        k = int(np.argmax(votes))
        if votes[k] < need:
            break
        members = near[k] & free
        colors.append(_mode_colour(cands[members]))
        free &= ~members
    return np.array(colors, dtype=np.float64).reshape(-1, 3)


# ----------------------------------------------------------------------------- coverage


def _max3x3(a: np.ndarray) -> np.ndarray:
    """(..., H, W) maximum over each pixel's 3x3 neighbourhood (zero padding)."""
    h, w = a.shape[-2:]
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])  # (..., H+2, W+2)
    return np.max([p[..., i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def _largest_component(alpha: np.ndarray) -> np.ndarray:
    """alpha (M, H, W) kept only on its 8-connected region of alpha > 0 with the largest sum of alpha."""
    m, h, w = alpha.shape
    mask = alpha > 0
    labels = np.arange(1, h * w + 1).reshape(1, h, w) * mask  # (M, H, W), 0 outside every region
    for _ in range(h * w):  # max-label propagation: each region ends up labelled by its largest pixel index
        grown = _max3x3(labels) * mask
        if np.array_equal(grown, labels):
            break
        labels = grown
    flat = labels.reshape(m, h * w)  # (M, H*W)
    mass = np.zeros((m, h * w + 1))
    np.add.at(mass, (np.arange(m)[:, None], flat), alpha.reshape(m, h * w))
    best = mass[:, 1:].argmax(1) + 1 if m else np.zeros(0, int)  # (M,)
    return alpha * (flat == best[:, None]).reshape(m, h, w)


def ball_coverage(levels: np.ndarray, colors: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, n, H, W) coverage of each ball on its largest region; (F, n) whether that region touches another ball.

    alpha = clip(<p - bg, c - bg> / |c - bg|^2, 0, 1) per pixel p, kept where alpha >= ALPHA_MIN and
    |p - bg - alpha (c - bg)| <= the segment tolerance. Touching: a pixel next to the region is off the
    ball's segment yet foreground (max_c |p - bg| > FOREGROUND_LEVELS): another ball, or a mix of two.
    """
    f, h, w, _ = levels.shape
    n = colors.shape[0]
    alpha, res = _segment_fit(levels, background, colors)  # (F, H, W, n)
    # a pixel is ball k's only if k's segment explains it best: balls of similar colours stay apart
    best = res == res.min(-1, keepdims=True) if n else np.zeros_like(res, dtype=bool)
    on_segment = best & (res <= _segment_tolerance(background, colors))
    alpha = np.where((alpha >= ALPHA_MIN) & on_segment, alpha, 0.0)
    alpha = _largest_component(alpha.transpose(0, 3, 1, 2).reshape(f * n, h, w)).reshape(f, n, h, w)
    foreground = np.abs(levels - background).max(-1) > FOREGROUND_LEVELS  # (F, H, W)
    other = (foreground[..., None] & ~on_segment).transpose(0, 3, 1, 2)  # (F, n, H, W)
    region = alpha > 0  # (F, n, H, W)
    ring = _max3x3(region) & ~region
    return alpha, (ring & other).any((2, 3))


def area_radius(area_px: np.ndarray) -> np.ndarray:
    """Disc radius (pixels) from its coverage area A: r = sqrt(A / pi - 1/12).

    For alpha = clip(r - d + 1/2, 0, 1) (disc_coverage), A = integral of alpha = pi (r^2 + 1/12).
    """
    return np.sqrt(np.maximum(np.asarray(area_px, dtype=np.float64) / math.pi - 1.0 / 12.0, 0.0))


def _typical_area(area: np.ndarray, touching: np.ndarray) -> np.ndarray:
    """(n,) each ball's median area over the frames where it touches nothing (over all frames if none)."""
    alone = np.where(touching & ~touching.all(0), np.nan, area)  # (F, n), no column all NaN
    return np.nanmedian(alone, axis=0)


def track_balls(frames, colors=None, background=None) -> Tracks:
    """Per ball and frame, the coverage centroid p = sum_px alpha (px + 1/2) / (W sum_px alpha), and whether found.

    frames: uint8 (F, H, W, 3), square. colors (n, 3) and background (3,) in [-1, 1] (the generator's
    extras "colors", "background") when known; else estimate_background and estimate_colors. alpha
    from ball_coverage. Found: |A / A_typ - 1| <= AREA_TOLERANCE and A >= MIN_AREA_PIXELS, with
    A = sum_px alpha and A_typ the ball's median A over frames where it touches no other ball;
    radius r = sqrt(A_typ / pi - 1/12) / W (area_radius).
    """
    levels = _clip_levels(frames)  # (F, H, W, 3)
    size = levels.shape[2]
    estimated = colors is None
    # background pixels are exactly round(level): compare with that, so they give alpha = 0 exactly
    bg = estimate_background(levels) if background is None else np.round(to_levels(background)).reshape(3)
    cols = estimate_colors(levels, bg) if colors is None else to_levels(colors).reshape(-1, 3)
    alpha, touching = ball_coverage(levels, cols, bg)  # (F, n, H, W), (F, n)
    area = alpha.sum((2, 3))  # (F, n)
    centres = (np.arange(size) + 0.5) / size  # (W,) pixel centres, normalised
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (alpha.sum(2) * centres).sum(-1) / area  # (F, n): column marginals -> x
        y = (alpha.sum(3) * centres).sum(-1) / area  # (F, n): row marginals -> y
    typical = _typical_area(area, touching)  # (n,)
    found = (area >= MIN_AREA_PIXELS) & (np.abs(area / np.maximum(typical, 1e-9) - 1) <= AREA_TOLERANCE)
    return Tracks(positions=np.stack([x, y], -1), radii=area_radius(typical) / size, found=found, areas=area,
                  touching=touching, colors=cols, background=bg, size=size, estimated=estimated)


# ----------------------------------------------------------------------------- score


def fold(q: np.ndarray, radius) -> np.ndarray:
    """Unbounded straight-line coordinates folded into [r, 1 - r] by elastic walls (ball_paths' triangle wave).

    L = 1 - 2r;  u = (q - r) mod 2L;  p = r + L - |u - L|.
    """
    r = np.minimum(np.asarray(radius, dtype=np.float64), 0.5 - 1e-6)  # a "ball" as wide as the frame: L > 0
    span = 1.0 - 2.0 * r
    u = np.mod(q - r, 2.0 * span)
    return r + span - np.abs(u - span)


def predict_next(previous: np.ndarray, current: np.ndarray, radius) -> np.ndarray:
    """Constant-velocity prediction of the next centre, reflected off the walls: fold(2 p_t - p_{t-1}, r).

    Exact for elastic motion unless a bounce happened between t - 1 and t (then p_t - p_{t-1} is not the velocity).
    """
    return fold(2.0 * current - previous, radius)


def physics_score(tracks: Tracks) -> PhysicsScore:
    """Mean prediction error E = mean_{k, t} |p_k(t+1) - fold(2 p_k(t) - p_k(t-1), r_k)|, in frame sides.

    Over balls k and 1 <= t <= F-2 with p_k(t-1), p_k(t), p_k(t+1) all found; NaN when there is no
    such triplet. error_px = E W (pixels). found = #found (k, t) / (n F), 0 when n = 0.
    """
    p, ok = tracks.positions, tracks.found  # (F, n, 2), (F, n)
    f, n = ok.shape
    pred = predict_next(p[:-2], p[1:-1], tracks.radii[None, :, None])  # (F-2, n, 2)
    both = ok[:-2] & ok[1:-1] & ok[2:]  # (F-2, n)
    dist = np.linalg.norm(p[2:] - pred, axis=-1)[both]  # (T,) over the triplets
    error = float(dist.mean()) if dist.size else math.nan
    return PhysicsScore(error=error, error_px=error * tracks.size, found=float(ok.mean()) if ok.size else 0.0,
                        triplets=int(dist.size), balls=n, frames=f)


def aggregate_physics(scores: Sequence[PhysicsScore], colours: str = "estimated") -> PhysicsSummary:
    """Set-level score: error = mean over clips with >= 1 triplet of their E; found = mean over all clips."""
    scored = [s for s in scores if s.triplets]
    return PhysicsSummary(error=float(np.mean([s.error for s in scored])) if scored else math.nan,
                          error_px=float(np.mean([s.error_px for s in scored])) if scored else math.nan,
                          found=float(np.mean([s.found for s in scores])) if scores else 0.0,
                          clips=len(scores), untracked=len(scores) - len(scored), colours=colours)


def clip_set_physics(clips: Sequence, truth: Sequence[dict] | None = None) -> dict:
    """aggregate_physics over uint8 clips as a dict; truth[i] = {"colors", "background"} in [-1, 1] where known."""
    scores = []
    for i, clip in enumerate(clips):
        known = truth[i] if truth is not None else {}
        tracks = track_balls(clip, known.get("colors"), known.get("background"))
        scores.append(physics_score(tracks))
    kinds = {"known" if truth is not None and "colors" in truth[i] else "estimated" for i in range(len(clips))}
    summary = aggregate_physics(scores, kinds.pop() if len(kinds) == 1 else "mixed" if kinds else "estimated")
    log.debug("physics: %d clips, error %.4f (%.3f px), found %.3f, %d untracked", summary.clips, summary.error,
              summary.error_px, summary.found, summary.untracked)
    return dataclasses.asdict(summary)
