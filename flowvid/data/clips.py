"""What datasets return and what the loader hands the trainer: clips, and clips packed without padding."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClipRequest:
    """One item of a batch, decided by the batch sampler: which clip, how many frames, which draw."""

    index: int
    num_frames: int
    seed: int  # for the window position and crop: deterministic per (sampler seed, epoch, index)


@dataclass
class Clip:
    frames: Tensor  # (F, C, H, W) float32, pixels in [-1, 1] or latents
    label: int = -1  # class, -1 = none
    fps: float = 0.0
    source: str = ""  # file path or synthetic family and index
    extras: dict = field(default_factory=dict)  # per-family ground truth (synthetic sets)
    seed: int = 0  # the request's seed: the trainer derives this clip's path draws from it


@dataclass
class PackedClips:
    """Clean clips of different lengths concatenated along frames; the trainer samples the path per clip."""

    frames: Tensor  # (M, C, H, W), M = total frames
    cu_seqlens: Tensor  # (B + 1,) int32 frame offsets
    labels: Tensor  # (B,) long, -1 = none
    fps: Tensor  # (B,) float
    sources: list[str]
    extras: list[dict]
    seeds: Tensor  # (B,) long, each clip's request seed

    @property
    def num_clips(self) -> int:
        return len(self.cu_seqlens) - 1

    @property
    def lengths(self) -> Tensor:
        return self.cu_seqlens.diff()

    def pin_memory(self) -> "PackedClips":
        """Called by the DataLoader's pinning thread (pin_memory=True): the frames, in page-locked memory."""
        return replace(self, frames=self.frames.pin_memory())

    def clips(self) -> list[Tensor]:
        """Per-clip views (F_b, C, H, W), the input of InsertionPath.sample_batch."""
        return list(torch.split(self.frames, self.lengths.tolist()))


def collate_clips(items: Sequence[Clip | None]) -> PackedClips:
    """Pack clips without padding; None items (reads that failed and were skipped) are dropped.

    A batch whose reads all failed is an empty PackedClips, never None: Lightning would skip the
    step on that rank alone, and the other ranks would wait for it in their collectives."""
    clips = [c for c in items if c is not None]
    if not clips:
        return PackedClips(torch.zeros(0), torch.zeros(1, dtype=torch.int32), torch.zeros(0, dtype=torch.long),
                           torch.zeros(0), [], [], torch.zeros(0, dtype=torch.long))
    shapes = {tuple(c.frames.shape[1:]) for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"clips in one batch must share (C, H, W), got {sorted(shapes)}")
    cu = torch.zeros(len(clips) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor([c.frames.shape[0] for c in clips]).cumsum(0)
    return PackedClips(
        frames=torch.cat([c.frames for c in clips]),
        cu_seqlens=cu,
        labels=torch.tensor([c.label for c in clips], dtype=torch.long),
        fps=torch.tensor([c.fps for c in clips], dtype=torch.float32),
        sources=[c.source for c in clips],
        extras=[c.extras for c in clips],
        seeds=torch.tensor([c.seed for c in clips], dtype=torch.long),
    )
