"""Map-style datasets indexed by ClipRequest (which clip, how many frames, which random draw).

The batch sampler decides each clip's length, so a packed batch can respect a token budget
before any frame is decoded. Readers are opened inside __getitem__, i.e. in the worker process
that reads (decord is not fork-safe), and closed after each clip.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flowvid.data.clips import Clip, ClipRequest
from flowvid.data.manifest import ManifestEntry, resolve
from flowvid.data.readers import VideoReadError, open_video
from flowvid.errors import UsageError

log = logging.getLogger(__name__)
_MIN_READS_BEFORE_GIVING_UP = 20
# Synthetic sets draw clip i of each split from seed + offset: disjoint streams for training,
# validation and `flowvid eval`'s held-out real clips.
VAL_SEED_OFFSET = 1_000_003
EVAL_SEED_OFFSET = 2_000_003


def resample_times(start: float, num: int, fps: float) -> np.ndarray:
    """Sample times t_k = start + k / fps, k < num."""
    return start + np.arange(num) / fps


# A shot's frames lie before the next shot's start by at least this (seconds): a sample exactly at
# a cut shows the new shot.
_CUT_MARGIN = 1e-4


@dataclass(frozen=True)
class Segment:
    """One shot of a video (the whole video when the manifest lists no shots), as frames at `fps`.

    start: seconds after the video's first frame; first: its first frame index at the native rate;
    length: frames it yields at fps (native rate when fps <= 0)."""
    entry: ManifestEntry
    start: float
    first: int
    length: int


def segments(entry: ManifestEntry, fps: float) -> list[Segment]:
    """The video's shots (or the whole video) with the frames each yields at fps."""
    starts = [0.0] + list(entry.shots)
    ends = list(entry.shots) + [None]
    out = []
    for a, b in zip(starts, ends):
        first = math.ceil(a * entry.fps - 1e-6)
        stop = entry.num_frames if b is None else min(entry.num_frames, math.ceil(b * entry.fps - 1e-6))
        if fps <= 0:
            length = stop - first
        else:
            last = (entry.num_frames - 1) / entry.fps if b is None else b - _CUT_MARGIN
            length = 1 + math.floor((last - a) * fps + 1e-6) if last >= a else 0
        out.append(Segment(entry, a, first, max(length, 0)))
    return out


def resize_crop(frames: np.ndarray, height: int, width: int, random_crop: bool, rng: np.random.Generator) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, height, width) in [-1, 1]: scale the short side, then crop.

    The resize runs on uint8 in channels-last layout, torch's vectorised path: about 8x faster
    than on float32 (measured, 16 frames 256 -> 128), within one grey level of it.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (F, 3, H, W), channels-last memory
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    top = int(rng.integers(size[0] - height + 1)) if random_crop else (size[0] - height) // 2
    left = int(rng.integers(size[1] - width + 1)) if random_crop else (size[1] - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return x.float().div_(127.5).sub_(1.0).contiguous()


def flip_reverse(x: torch.Tensor, flip: float, reverse: float, rng: np.random.Generator) -> torch.Tensor:
    """(F, C, H, W) mirrored left to right with probability `flip`, its frames in reverse order with
    probability `reverse` (torch.flip copies, so the result stays contiguous). A probability of 0
    draws nothing, so clips without these are unchanged."""
    if flip and rng.random() < flip:
        x = x.flip(-1)
    if reverse and rng.random() < reverse:
        x = x.flip(0)
    return x


class FailureCounter:
    """Counts failed reads; past max_fraction of all reads (after a few), reading stops with an error."""

    def __init__(self, max_fraction: float):
        self.max_fraction, self.reads, self.failures = max_fraction, 0, 0

    def ok(self) -> None:
        self.reads += 1

    def failed(self, err: Exception) -> None:
        self.reads += 1
        self.failures += 1
        log.warning("skipped a clip (%d of %d reads failed so far in this worker): %s", self.failures, self.reads, err)
        if self.reads >= _MIN_READS_BEFORE_GIVING_UP and self.failures > self.max_fraction * self.reads:
            raise UsageError(f"{self.failures} of {self.reads} video reads failed (last: {err}); more than "
                               f"data.max_failed_fraction={self.max_fraction}: check the files or re-run "
                               f"`flowvid data index`")


def files_present(entries: Sequence[ManifestEntry], manifest: Path, max_fraction: float) -> list[ManifestEntry]:
    """The entries whose files are still there, checked by stat alone before training (a manifest
    whose videos were moved or deleted would otherwise fail read by read). More missing than
    max_fraction stops here, naming the first; files changed since indexing (size or mtime) are
    reported, and read as they are."""
    present, missing, changed = [], [], 0
    for e in entries:
        try:
            st = os.stat(resolve(manifest, e.path))
        except OSError:
            missing.append(e.path)
            continue
        changed += bool(e.size) and (st.st_size != e.size or abs(st.st_mtime - e.mtime) > 1e-3)
        present.append(e)
    if len(missing) > max_fraction * len(entries):
        raise UsageError(f"{len(missing)} of {len(entries)} videos listed in {manifest} are missing (first: "
                         f"{missing[0]}), more than data.max_failed_fraction={max_fraction}; restore them or "
                         f"re-run `flowvid data index`")
    if missing:
        log.warning("%d of %d videos listed in %s are missing and left out (first: %s)", len(missing), len(entries),
                    manifest, missing[0])
    if changed:
        log.warning("%d videos listed in %s changed since indexing (size or mtime); `flowvid data index` re-checks "
                    "them", changed, manifest)
    return present


class ManifestDataset(torch.utils.data.Dataset):
    """Clips from the videos of a manifest, resampled to `fps` by timestamps, resized and cropped.

    Its items are segments: each shot of a video whose manifest entry lists shots, else the
    whole video. A clip never crosses a shot's end. With `augment` (training sets only) a clip is
    mirrored with probability cfg.flip and played backwards with probability cfg.reverse."""

    def __init__(self, entries: Sequence[ManifestEntry], manifest_path: str | Path, cfg, augment: bool = False):
        self.cfg, self.augment = cfg, augment
        self.manifest_path = Path(manifest_path)
        entries = files_present(entries, self.manifest_path, cfg.max_failed_fraction)
        self.whole = getattr(cfg.clip_mode, "value", cfg.clip_mode) == "whole"
        self.segments = self._usable([s for e in entries for s in segments(e, cfg.fps)], len(entries))
        self.failures = FailureCounter(cfg.max_failed_fraction)

    def _usable(self, segs: list[Segment], num_videos: int) -> list[Segment]:
        """Leave out (and count) the segments too short for a clip, or in whole mode too long for one."""
        cfg, fps = self.cfg, self.cfg.fps or "native"
        shortest = min(cfg.frame_choices) if cfg.frame_choices else cfg.min_frames
        what = "videos" if len(segs) == num_videos else f"shots (of {num_videos} videos)"
        kept = [s for s in segs if s.length >= shortest]
        if len(kept) < len(segs):
            log.warning("%d of %d %s are shorter than %d frames at fps=%s and are left out",
                        len(segs) - len(kept), len(segs), what, shortest, fps)
        if self.whole:  # a whole video or shot longer than the longest clip cannot be a clip
            longer = [s for s in kept if s.length > cfg.max_frames]
            if longer:
                log.warning("data.clip_mode=whole: %d of %d %s are longer than data.max_frames=%d frames at "
                            "fps=%s and are left out%s", len(longer), len(segs), what, cfg.max_frames, fps,
                            "" if what != "videos" else " (list where their shots begin under \"shots\" in "
                            "the manifest to keep them as shots)")
                kept = [s for s in kept if s.length <= cfg.max_frames]
        if not kept:
            raise UsageError(f"no video or shot in {self.manifest_path} has {shortest} frames at fps={fps}"
                             f"{' and at most data.max_frames' if self.whole else ''}; "
                             f"lower data.min_frames or data.fps{', or raise data.max_frames' if self.whole else ''}")
        return kept

    def __len__(self) -> int:
        return len(self.segments)

    def frame_range(self, i: int) -> tuple[int, int]:
        """The clip lengths segment i allows: any window up to all of it, or (whole) exactly all of it."""
        n = self.segments[i].length
        return (n, n) if self.whole else (1, n)

    def source(self, i: int) -> str:
        """The file segment i comes from (and the shot's start, where the video has shots)."""
        seg = self.segments[i]
        return seg.entry.path + (f"@{seg.start:g}s" if seg.entry.shots else "")

    def __getitem__(self, req: ClipRequest) -> Clip | None:
        seg = self.segments[req.index]
        path = resolve(self.manifest_path, seg.entry.path)
        rng = np.random.default_rng(req.seed)
        try:
            frames, fps = self._read(path, seg, req.num_frames, rng)
        except VideoReadError as e:
            self.failures.failed(e)
            return None
        self.failures.ok()
        x = resize_crop(frames, self.cfg.height, self.cfg.width, self.cfg.crop.value == "random", rng)
        if self.augment:
            x = flip_reverse(x, self.cfg.flip, self.cfg.reverse, rng)
        source = str(path) + (f"@{seg.start:g}s" if seg.entry.shots else "")
        return Clip(frames=x, label=seg.entry.label, fps=fps, source=source, seed=req.seed)

    def _read(self, path: Path, seg: Segment, n: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        backend = getattr(self.cfg.reader, "value", self.cfg.reader)
        offset = 0 if self.whole else int(rng.integers(seg.length - n + 1))  # frames into the segment
        with open_video(path, backend) as reader:
            if self.cfg.fps <= 0:
                total = reader.info.num_frames
                if total < seg.first + seg.length:
                    raise VideoReadError(str(path), f"has {total} frames, the manifest promised {seg.entry.num_frames}")
                start = seg.first + offset
                return reader.read(range(start, start + n)), seg.entry.fps
            ts = reader.timestamps()
            if (ts[-1] - ts[0]) - seg.start - (seg.length - 1) / self.cfg.fps < -1e-6:
                raise VideoReadError(str(path), f"spans {ts[-1] - ts[0]:.3f} s, too short for {seg.length} frames "
                                                f"at {self.cfg.fps} fps from {seg.start:g} s")
            # a random sub-frame phase too, so windows do not always sample the same source frames
            phase = 0.0 if self.whole or offset == seg.length - n else rng.uniform(0, 1 / self.cfg.fps)
            start = ts[0] + seg.start + (offset + phase) / self.cfg.fps
            return reader.read_at(resample_times(start, n, self.cfg.fps)), self.cfg.fps


class SyntheticDataset(torch.utils.data.Dataset):
    """A synthetic family (flowvid.data.synthetic) behind the ClipRequest interface; no files."""

    def __init__(self, kind: str, num_clips: int, cfg, seed: int):
        from flowvid.data.synthetic import make_synthetic

        if cfg.height != cfg.width:
            raise UsageError(f"synthetic clips are square; got data.height={cfg.height}, data.width={cfg.width}")
        fps = cfg.fps if cfg.fps > 0 else 8.0
        self.family = make_synthetic(kind, num_clips=num_clips, size=cfg.height,
                                     frames=(cfg.min_frames, cfg.max_frames), fps=fps, seed=seed,
                                     frame_choices=tuple(cfg.frame_choices))
        self.kind = kind

    def __len__(self) -> int:
        return len(self.family)

    def frame_range(self, i: int) -> tuple[int, int]:
        n = self.family.num_frames(i)  # a clip's length is part of its content
        return n, n

    def __getitem__(self, req: ClipRequest) -> Clip:
        clip = self.family[req.index]
        return Clip(frames=clip.frames[:req.num_frames], label=clip.label, fps=clip.fps,
                    source=f"synthetic:{self.kind}:{req.index}", extras=clip.extras, seed=req.seed)
