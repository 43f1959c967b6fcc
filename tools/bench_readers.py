"""Video reader throughput, decord vs PyAV, and the file rate of `probe`; prints markdown.

Writes synthetic H.264 videos to a temporary folder, then measures, for each backend and
decoder thread count: (a) sequential full decode, (b) random 16-frame windows (the training
access: open, read one window at a random start, close), and `probe` on a few hundred small
files, some of them bad. The default run takes about two minutes on 2 CPU cores.

    python tools/bench_readers.py [--files 40] [--size 256] [--frames 120] [--gop 60] [--windows 300]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from flowvid.data.readers import VideoReadError, available_backends, open_video, probe, resolve_backend
from flowvid.io import write_video


@dataclass
class Rate:
    """Frames (or files) per second over a timed loop."""

    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds


def synthetic_frames(n: int, size: int, seed: int) -> np.ndarray:
    """Moving gradients plus noise: motion for the codec to predict, detail so frames cost bits."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = rng.integers(0, 48, (size, size, 3), dtype=np.uint8)
    frames = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        frames[i, ..., 0] = (xx + 3 * i) % 256
        frames[i, ..., 1] = (yy + 2 * i) % 256
        frames[i, ..., 2] = ((xx + yy) // 2 + 5 * i) % 256
        frames[i] = frames[i] // 2 + base
    return frames


def write_dataset(folder: Path, args: argparse.Namespace) -> list[Path]:
    paths = []
    for k in range(args.files):
        frames = synthetic_frames(args.frames, args.size, seed=k)
        paths.append(write_video(folder / f"v{k:03d}.mp4", frames, fps=30, gop=args.gop))
    return paths


def bench_sequential(paths: list[Path], backend: str, threads: int) -> Rate:
    t0, n = time.perf_counter(), 0
    for p in paths:
        with open_video(p, backend, num_threads=threads) as r:
            n += len(r.read(range(r.info.num_frames)))
    return Rate(n, time.perf_counter() - t0)


def bench_windows(paths: list[Path], backend: str, threads: int, windows: int, length: int, seed: int) -> Rate:
    rng = np.random.default_rng(seed)  # same draws for every backend
    t0, n = time.perf_counter(), 0
    for _ in range(windows):
        p = paths[int(rng.integers(len(paths)))]
        with open_video(p, backend, num_threads=threads) as r:
            start = int(rng.integers(r.info.num_frames - length + 1))
            n += len(r.read(range(start, start + length)))
    return Rate(n, time.perf_counter() - t0)


def write_probe_set(folder: Path, count: int) -> list[Path]:
    """Small files in several codecs and containers; every 10th is bad (cut, empty, text)."""
    kinds = [("libx264", ".mp4"), ("libx264", ".mkv"), ("mpeg4", ".avi"), ("mjpeg", ".mkv")]
    paths = []
    for k in range(count):
        codec, suffix = kinds[k % len(kinds)]
        p = write_video(folder / f"p{k:04d}{suffix}", synthetic_frames(24, 64, seed=k), fps=24, codec=codec)
        if k % 10 == 3:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
        elif k % 30 == 7:
            p.write_bytes(b"")
        elif k % 30 == 17:
            p.write_text("not a video\n" * 20)
        paths.append(p)
    return paths


def bench_probe(paths: list[Path]) -> tuple[Rate, Counter]:
    reasons: Counter = Counter()
    t0 = time.perf_counter()
    for p in paths:
        try:
            probe(p)
            reasons["ok"] += 1
        except VideoReadError as e:
            reasons[e.reason] += 1
    return Rate(len(paths), time.perf_counter() - t0), reasons


def versions() -> str:
    try:
        import decord

        dec = decord.__version__
    except ImportError:
        dec = "not installed"
    ffmpeg = av.library_versions.get("libavcodec", ())
    return (
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"PyAV {av.__version__} (libavcodec {'.'.join(map(str, ffmpeg))}), decord {dec}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--gop", type=int, default=60, help="keyframe interval of the test videos (frames)")
    ap.add_argument("--windows", type=int, default=300, help="random windows per backend and thread count")
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="decoder threads (0 = auto)")
    ap.add_argument("--probe-files", type=int, default=300)
    args = ap.parse_args()
    print(versions())
    print(f"'auto' resolves to: {resolve_backend('auto')}\n")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = write_dataset(Path(tmp), args)
        print(f"{args.files} files of {args.size}x{args.size} x {args.frames} frames, H.264 crf 18, gop {args.gop}, "
              f"30 fps; written in {time.perf_counter() - t0:.1f} s\n")
        print(f"| backend | threads | sequential full decode (frames/s) | random {args.window}-frame windows, "
              f"open+read+close (frames/s) | windows/s |")
        print("|---|---|---|---|---|")
        for threads in args.threads:
            for backend in available_backends():
                seq = bench_sequential(paths, backend, threads)
                win = bench_windows(paths, backend, threads, args.windows, args.window, seed=threads)
                print(f"| {backend} | {threads or 'auto'} | {seq.per_s:,.0f} | {win.per_s:,.0f} "
                      f"| {win.per_s / args.window:,.1f} |")
                sys.stdout.flush()
        probe_dir = Path(tmp) / "probe"
        probe_dir.mkdir()
        probe_paths = write_probe_set(probe_dir, args.probe_files)
        rate, reasons = bench_probe(probe_paths)
        print(f"\n| probe: files | files/s | ms/file | outcomes |\n|---|---|---|---|")
        print(f"| {rate.count} (64x64 x 24 frames; mp4, mkv, avi) | {rate.per_s:,.0f} | {1000 / rate.per_s:.2f} "
              f"| {dict(reasons)} |")


if __name__ == "__main__":
    main()
