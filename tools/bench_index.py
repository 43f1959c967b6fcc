"""Probe rate of `flowvid data index` on a few hundred small files, first run and re-run.

    python tools/bench_index.py [--files 300] [--workers 1 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from video_files import make_empty, make_text_file, make_video, truncate  # noqa: E402  test-file makers

from data_pipelines.index import index_videos  # noqa: E402


def make_tree(root: Path, n: int) -> None:
    """n files: mostly good mp4/mkv/avi of 64x48 x 24 frames, a tenth broken in various ways."""
    for i in range(n):
        sub = root / f"d{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        kind = i % 20
        if kind == 0:
            make_empty(sub / f"{i}.mp4")
        elif kind == 1:
            make_text_file(sub / f"{i}.mp4")
        elif kind == 2:
            truncate(make_video(sub / f"{i}.mp4", seed=i), 0.5)
        else:
            ext, codec = [(".mp4", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4")][i % 3]
            make_video(sub / f"{i}{ext}", seed=i, codec=codec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; {args.files} files (64x48, 24 frames; 1 in 20 "
          f"empty, 1 in 20 text, 1 in 20 truncated)\n")
    print("| workers | first run files/s | good | bad | re-run (nothing new) s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "videos"
        make_tree(root, args.files)
        for w in args.workers:
            out = Path(tmp) / f"m{w}.jsonl"
            t0 = time.perf_counter()
            r = index_videos(root, out, workers=w)
            first = time.perf_counter() - t0
            again = index_videos(root, out, workers=w)
            print(f"| {w} | {args.files / first:.0f} | {r.good} | {r.bad} | {again.seconds:.2f} |")


if __name__ == "__main__":
    main()
