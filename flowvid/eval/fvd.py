"""FVD: the Frechet distance between I3D features of real and generated clips (Unterthiner et al. 2018).

Preprocessing follows the original FVD code: each clip's first 16 frames, resized to 224 x 224
(bilinear, aspect ratio not kept), values mapped to [-1, 1]; the feature is I3D's 400 Kinetics
logits averaged over time. Our choices where that code is silent or cannot apply:
- a clip shorter than 16 frames is padded by repeating its last frame (the count is reported);
  the same rule holds for real and generated clips, so only a difference between them counts;
- the resize uses half-pixel centres (torch's align_corners=False) and antialiasing when it shrinks;
  TensorFlow 1's resize_bilinear, which the original used, sampled without the half-pixel shift.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flowvid.eval.frechet import frechet_distance_of

log = logging.getLogger(__name__)

FVD_FRAMES = 16
FVD_SIZE = 224


@dataclass
class FVDClips:
    """Clips cut or padded to the FVD length."""

    clips: list[np.ndarray]  # uint8 (T, H, W, 3) each
    padded: int  # how many were shorter and padded with their last frame


def fvd_clips(clips: Sequence[np.ndarray], frames: int = FVD_FRAMES) -> FVDClips:
    """Each clip's first `frames` frames; a shorter clip repeats its last frame up to that length."""
    out, padded = [], 0
    for c in clips:
        if c.ndim != 4 or c.shape[-1] != 3 or c.dtype != np.uint8 or c.shape[0] == 0:
            raise ValueError(f"clips must be uint8 (F, H, W, 3) RGB frames with F >= 1, got {c.dtype} {c.shape}")
        if c.shape[0] < frames:
            c = np.concatenate([c, np.repeat(c[-1:], frames - c.shape[0], axis=0)])
            padded += 1
        out.append(c[:frames])
    return FVDClips(out, padded)


def i3d_input(clip: np.ndarray, size: int = FVD_SIZE) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, size, size) in [-1, 1]: x = 2 u / 255 - 1 after the resize."""
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    if x.shape[-2:] != (size, size):
        shrink = x.shape[-2] > size or x.shape[-1] > size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3)  # (3, T, size, size)


def i3d_features(clips: Sequence[np.ndarray], model: torch.nn.Module, batch_size: int = 8,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, D) float64 features of FVD-length clips, batch_size clips per forward pass."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = next(iter(model.parameters()), torch.zeros(())).device
    feats = []
    for i in range(0, len(clips), batch_size):
        x = torch.stack([i3d_input(c) for c in clips[i:i + batch_size]]).to(device)  # (B, 3, T, 224, 224)
        with torch.no_grad():
            feats.append(model(x).double().cpu().numpy())
        if progress is not None:
            progress(min(i + batch_size, len(clips)), len(clips))
    return np.concatenate(feats)


def fvd(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """FVD = Frechet distance of Gaussians fitted to the two sets of I3D features (see frechet.py)."""
    return frechet_distance_of(real_features, fake_features)
