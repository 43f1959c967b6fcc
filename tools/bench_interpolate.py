"""Interpolation throughput on CPU: output frames per second of `flowvid.pipelines.interpolate`.

A small transformer (4 blocks, width 128; random weights: cost does not depend on them) at
64x64 (patch 4, 257 tokens per frame) and 256x256 (patch 16, 257 tokens per frame; and patch 8,
1025 tokens), 9 given frames at 8 fps to 32 fps (factor 4: 33 output frames, 24 generated).

    python tools/bench_interpolate.py [--steps 10] [--window 8]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from flowvid.config import load_config
from flowvid.models import SpatioTemporalDiT
from flowvid.pipelines.tasks import interpolate

SETTINGS = [(64, 4), (256, 16), (256, 8)]  # (frame size, patch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--given", type=int, default=9)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.given} given frames at 8 fps -> 32 fps, {args.steps} steps, windows of {args.window}\n")
    print("| frame size | patch | tokens/frame | output frames | generated | network evaluations | seconds | output frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for size, patch in SETTINGS:
        cfg = load_config("configs/base.yaml", ["model.dim=128", "model.depth=4", "model.heads=4",
                                                f"model.height={size}", f"model.width={size}",
                                                f"model.patch_size={patch}", f"data.height={size}", f"data.width={size}"])
        torch.manual_seed(0)
        model = SpatioTemporalDiT(cfg.model).eval()
        frames = rng.integers(0, 256, (args.given, size, size, 3), dtype=np.uint8)
        interpolate(model, cfg, frames[:3], 8.0, factor=4, steps=2, window=args.window)  # warm-up
        t0 = time.perf_counter()
        video = interpolate(model, cfg, frames, 8.0, target_fps=32.0, steps=args.steps, window=args.window)
        dt = time.perf_counter() - t0
        n = video.frames.shape[0]
        tokens = (size // patch) ** 2 + 1
        print(f"| {size}x{size} | {patch} | {tokens} | {n} | {n - args.given} | {video.record.nfe} | {dt:.2f} "
              f"| {n / dt:.1f} |")


if __name__ == "__main__":
    main()
