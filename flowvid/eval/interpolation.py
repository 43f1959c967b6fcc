"""The frame-interpolation protocol: keep every k-th frame of a real clip, interpolate back to the
full rate, score only the frames that were dropped; frame repetition and linear blending as baselines."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowvid.errors import UsageError
from flowvid.eval.pixels import psnr_frames, ssim_frames


@dataclass
class Subsampled:
    """A real clip cut to (n - 1) k + 1 frames so that its last frame is kept, and its keyframes."""

    reference: np.ndarray  # uint8 (F, H, W, 3), F = (n - 1) k + 1
    keyframes: np.ndarray  # uint8 (n, H, W, 3): reference[::k]
    stride: int  # k

    @property
    def dropped(self) -> np.ndarray:
        """(F,) bool: the frames the interpolator must make (not k-th frames)."""
        return np.arange(self.reference.shape[0]) % self.stride != 0


def subsample(clip: np.ndarray, stride: int) -> Subsampled:
    """Keyframes 0, k, 2k, ... of clip; the clip is cut after its last keyframe."""
    if stride < 2:
        raise UsageError(f"the interpolation stride must be >= 2 (keep every k-th frame), got {stride}")
    n = (clip.shape[0] - 1) // stride + 1
    if n < 2:
        raise UsageError(f"a clip of {clip.shape[0]} frames has fewer than 2 keyframes at stride {stride}")
    ref = clip[: (n - 1) * stride + 1]
    return Subsampled(ref, ref[::stride], stride)


def repeat_baseline(keys: np.ndarray, stride: int) -> np.ndarray:
    """Frame j = keyframe floor(j / k): each keyframe held until the next."""
    out = np.repeat(keys[:-1], stride, axis=0)  # (k (n - 1), H, W, 3)
    return np.concatenate([out, keys[-1:]])


def blend_baseline(keys: np.ndarray, stride: int) -> np.ndarray:
    """Frame j = round((1 - w) a + w b), a and b the keyframes around j, w = (j mod k) / k."""
    w = (np.arange(stride) / stride)[None, :, None, None, None]  # (1, k, 1, 1, 1)
    a, b = keys[:-1, None].astype(np.float64), keys[1:, None].astype(np.float64)  # (n - 1, 1, H, W, 3)
    mix = np.rint((1 - w) * a + w * b).astype(np.uint8)  # (n - 1, k, H, W, 3)
    return np.concatenate([mix.reshape(-1, *keys.shape[1:]), keys[-1:]])


def align_learned(frames: np.ndarray, given: list[int], stride: int) -> np.ndarray:
    """(k (n - 1) + 1, H, W, 3) from a learned interpolation whose given frames sit at `given`: in each
    gap, reference frame j of k takes the output frame nearest its time j / k, the gap's c output
    steps spread evenly over it (the keyframes included, so an empty gap scores a held keyframe)."""
    out = [frames[given[0]]]
    for a, b in zip(given, given[1:]):
        out += [frames[a + int(round(j * (b - a) / stride))] for j in range(1, stride + 1)]
    return np.stack(out)


@dataclass
class FrameScores:
    """PSNR and SSIM of the dropped frames of one clip."""

    psnr: np.ndarray  # (D,) per dropped frame
    ssim: np.ndarray  # (D,)


def score_dropped(pred: np.ndarray, sub: Subsampled, ssim: bool = True) -> FrameScores:
    """Per-frame PSNR and SSIM (empty unless ssim) of pred against the reference, on the dropped frames only."""
    if pred.shape != sub.reference.shape:
        raise ValueError(f"the interpolated clip is {pred.shape}, the reference {sub.reference.shape}")
    pred, ref = pred[sub.dropped], sub.reference[sub.dropped]
    return FrameScores(psnr_frames(pred, ref), ssim_frames(pred, ref) if ssim else np.zeros(0))
