"""Dataset throughput against the raw decoder it wraps, side by side in one run.

Writes a few H.264 test videos, then for each reader backend times
  (a) raw: open the file, decode a random 16-frame window (reader.read), close;
  (b) dataset: ManifestDataset.__getitem__ for the same windows, which also resizes, crops and
      converts to float in [-1, 1];
and the same at 12 fps by timestamps (raw: reader.read_at for the same times, which decodes the
whole span). Prints frames/s and dataset/raw ratios (target >= 0.8) as markdown.

    python tools/bench_data.py [--files 8] [--size 256] [--out-size 128] [--windows 60]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from flowvid.config import load_config
from flowvid.data.clips import ClipRequest
from flowvid.data.datasets import ManifestDataset
from flowvid.data.manifest import ManifestEntry, read_manifest, write_jsonl
from flowvid.data.readers import available_backends, open_video, probe
from flowvid.io import write_video

WINDOW = 16


def make_files(folder: Path, n: int, size: int, frames: int) -> Path:
    rng = np.random.default_rng(0)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        # moving gradients and noise: something a codec must really encode
        clip = np.stack([((xx + 3 * t + 40 * i) % 256 + (yy // 8) * 0) for t in range(frames)]).astype(np.uint8)
        video = np.stack([clip, np.roll(clip, i + 1, axis=2), (clip // 2 + rng.integers(0, 32, clip.shape))], -1)
        path = write_video(folder / f"v{i}.mp4", video.astype(np.uint8), 24.0)
        info = probe(path)
        entries.append(ManifestEntry(path.name, info.num_frames, info.fps, info.width, info.height, info.duration, info.codec))
    write_jsonl(folder / "m.jsonl", entries)
    return folder / "m.jsonl"


def requests(n_files: int, count: int, seed: int = 0) -> list[ClipRequest]:
    rng = np.random.default_rng(seed)
    return [ClipRequest(int(rng.integers(n_files)), WINDOW, int(rng.integers(2**31))) for _ in range(count)]


def time_raw(manifest: Path, backend: str, reqs: list[ClipRequest]) -> float:
    entries = read_manifest(manifest)
    t0 = time.perf_counter()
    for r in reqs:
        e = entries[r.index]
        start = int(np.random.default_rng(r.seed).integers(e.num_frames - WINDOW + 1))
        with open_video(manifest.parent / e.path, backend) as reader:
            reader.read(range(start, start + WINDOW))
    return len(reqs) * WINDOW / (time.perf_counter() - t0)


def time_raw_at(manifest: Path, backend: str, reqs: list[ClipRequest], fps: float) -> float:
    """The decoder's share of resampling: the same read_at calls, no resize or crop."""
    entries = read_manifest(manifest)
    t0 = time.perf_counter()
    for r in reqs:
        with open_video(manifest.parent / entries[r.index].path, backend) as reader:
            ts = reader.timestamps()
            slack = (ts[-1] - ts[0]) - (WINDOW - 1) / fps
            start = ts[0] + np.random.default_rng(r.seed).uniform(0, slack)
            reader.read_at(start + np.arange(WINDOW) / fps)
    return len(reqs) * WINDOW / (time.perf_counter() - t0)


def time_dataset(manifest: Path, backend: str, reqs: list[ClipRequest], out_size: int, fps: float) -> float:
    cfg = load_config("configs/base.yaml", ["data.source=manifest", f"data.manifest={manifest}", f"data.reader={backend}",
                                            f"data.height={out_size}", f"data.width={out_size}", f"data.fps={fps}"]).data
    ds = ManifestDataset(read_manifest(manifest), manifest, cfg)
    t0 = time.perf_counter()
    for r in reqs:
        ds[r]
    return len(reqs) * WINDOW / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--out-size", type=int, default=128)
    ap.add_argument("--windows", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as in a loader worker
    print(f"machine: {platform.machine()}, torch {torch.__version__}, av {av.__version__}, backends {available_backends()}")
    print(f"{args.files} H.264 files {args.size}x{args.size}, {args.frames} frames @ 24 fps; {args.windows} random "
          f"{WINDOW}-frame windows; dataset output {args.out_size}x{args.out_size}; one process, torch 1 thread\n")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_files(Path(tmp), args.files, args.size, args.frames)
        reqs = requests(args.files, args.windows)
        print("| backend | raw read frames/s | dataset frames/s | ratio | raw read_at 12 fps frames/s | dataset 12 fps frames/s | ratio |")
        print("|---|---|---|---|---|---|---|")
        for backend in available_backends():
            time_raw(manifest, backend, reqs[:5])  # warm-up: imports, codec initialisation
            raw = time_raw(manifest, backend, reqs)
            native = time_dataset(manifest, backend, reqs, args.out_size, 0.0)
            raw_at = time_raw_at(manifest, backend, reqs, 12.0)
            resampled = time_dataset(manifest, backend, reqs, args.out_size, 12.0)
            print(f"| {backend} | {raw:.0f} | {native:.0f} | {native / raw:.2f} | {raw_at:.0f} | {resampled:.0f} "
                  f"| {resampled / raw_at:.2f} |")


if __name__ == "__main__":
    main()
