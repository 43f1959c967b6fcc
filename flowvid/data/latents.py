"""Precomputed latents: clips stored as frames in .npy shards, with an index of where each clip lies.

Layout of a split folder (e.g. LATENTS/train):
    index.jsonl         one line per clip: shard, offset, num_frames, label, fps, source
    shard_00000.npy     float16 (N, C, h, w), clips' frames back to back
Shards are plain .npy (np.load with allow_pickle=False, memory-mapped), so loading never
unpickles anything and a worker touches only the frames it reads.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from flowvid.data.clips import Clip, ClipRequest
from flowvid.data.manifest import read_jsonl, write_jsonl
from flowvid.errors import UsageError

log = logging.getLogger(__name__)


@dataclass
class LatentEntry:
    shard: str
    offset: int
    num_frames: int
    label: int = -1
    fps: float = 0.0
    source: str = ""


def write_latent_shards(clips: Iterable[Clip], out_dir: str | Path, shard_frames: int = 4096) -> Path:
    """Write clips (frames (F, C, h, w)) into shards of about `shard_frames` frames; returns the index path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[LatentEntry] = []
    pending: list[np.ndarray] = []
    count, shard = 0, 0
    for clip in clips:
        n = clip.frames.shape[0]
        if count and count + n > shard_frames:
            _save_npy(out / _shard_name(shard), np.concatenate(pending))
            pending, count, shard = [], 0, shard + 1
        entries.append(LatentEntry(_shard_name(shard), count, n, clip.label, clip.fps, clip.source))
        pending.append(clip.frames.detach().cpu().numpy().astype(np.float16))
        count += n
    if pending:
        _save_npy(out / _shard_name(shard), np.concatenate(pending))
    write_jsonl(out / "index.jsonl", entries)
    return out / "index.jsonl"


def _shard_name(i: int) -> str:
    return f"shard_{i:05d}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class LatentDataset(torch.utils.data.Dataset):
    """Clip windows from latent shards, at the latents' own frame rate."""

    def __init__(self, root: str | Path, cfg):
        self.root = Path(root)
        index = self.root / "index.jsonl"
        if not index.is_file():
            raise UsageError(f"no latent index at {index} (expected a folder written by write_latent_shards)")
        if cfg.fps > 0:
            raise UsageError(f"latents keep their own frame rate; data.fps must be 0 with data.source=latents, got {cfg.fps}")
        self.entries = read_jsonl(index, LatentEntry)
        if not self.entries:
            raise UsageError(f"{index} lists no clips")
        # data.clip_mode=whole: each clip entire (as `flowvid data encode` wrote whole videos or shots),
        # so that a model learns the videos' lengths. Clips too short for a window, or in whole mode too
        # long, are counted and left out (latent frames: with a temporal factor T, a clip of F frames has
        # 1 + (F - 1) / T of them, and data.min_frames counts those)
        self.whole = getattr(cfg.clip_mode, "value", cfg.clip_mode) == "whole"
        shortest = min(cfg.frame_choices) if cfg.frame_choices else cfg.min_frames
        longest = cfg.max_frames if self.whole else math.inf
        kept = [e for e in self.entries if shortest <= e.num_frames <= longest]
        if len(kept) < len(self.entries):
            log.warning("%d of %d latent clips in %s have fewer than %d latent frames%s and are left out",
                        len(self.entries) - len(kept), len(self.entries), index, shortest,
                        f" or more than data.max_frames={cfg.max_frames}" if self.whole else "")
        if not kept:
            span = f"{shortest} to data.max_frames={cfg.max_frames}" if self.whole else f"at least {shortest}"
            raise UsageError(f"no latent clip in {index} has {span} latent frames; change data.min_frames or "
                             "data.max_frames")
        self.entries = kept
        self.frame_shape = tuple(self._shard(self.entries[0].shard).shape[1:])
        self._open: dict[str, np.ndarray] = {}

    def _shard(self, name: str) -> np.ndarray:
        return np.load(self.root / name, mmap_mode="r", allow_pickle=False)

    def __len__(self) -> int:
        return len(self.entries)

    def frame_range(self, i: int) -> tuple[int, int]:
        """Any window up to the whole clip, or (whole) exactly the whole clip."""
        n = self.entries[i].num_frames
        return (n, n) if self.whole else (1, n)

    def __getitem__(self, req: ClipRequest) -> Clip:
        e = self.entries[req.index]
        if e.shard not in self._open:  # memory maps are opened lazily, inside each worker
            self._open[e.shard] = self._shard(e.shard)
        slack = 0 if self.whole else e.num_frames - req.num_frames
        start = e.offset + int(np.random.default_rng(req.seed).integers(slack + 1))
        frames = torch.from_numpy(np.array(self._open[e.shard][start:start + req.num_frames], dtype=np.float32))
        return Clip(frames=frames, label=e.label, fps=e.fps, source=e.source or f"{self.root}:{req.index}", seed=req.seed)
