"""How much a classical motion-compensated interpolator gains over linear blending on a set of videos:
the headroom that motion leaves an interpolation model at factor 2.

    python tools/block_matching.py MANIFEST [--block 16] [--search 3] [--every 3]

Every `--every`-th frame of each video in MANIFEST (not its first or last) is made from its two
neighbours, by linear blending and by symmetric block matching: per block of the made frame, the
displacement d (|d| <= --search pixels in each axis) whose two neighbours agree best, |a(p - d) -
c(p + d)| summed over the block plus a small cost for moving, gives the frame (a(p - d) + c(p + d)) / 2.
Neither method looks at the made frame. Prints the mean over frames of each one's PSNR, as `flowvid
eval` scores interpolation, and the PSNR pooled over all pixels. The frames are not those that `flowvid
eval --task interpolate` draws: the figures bound what motion can add, they do not score a model.
"""
from __future__ import annotations

import argparse

import numpy as np
from interp_errors import pooled_psnr  # tools/ is this script's folder, first on sys.path

MOTION_COST = 0.2  # per pixel of the block, times sqrt(|dy| + |dx|): a still block keeps d = 0 on a tie


def shifted(img: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """img (H, W, 3) moved by (dy, dx): out[p] = img[p + (dy, dx)], edges repeated."""
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return p[pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def block_matching(a: np.ndarray, c: np.ndarray, block: int, search: int) -> np.ndarray:
    """The frame halfway between float frames a and c (H, W, 3), H and W multiples of `block`."""
    h, w = a.shape[:2]
    best, out = np.full((h, w), np.inf), (a + c) / 2
    for dy in range(-search, search + 1):
        for dx in range(-search, search + 1):
            back, ahead = shifted(a, -dy, -dx, search), shifted(c, dy, dx, search)
            cost = np.abs(back - ahead).sum(-1).reshape(h // block, block, w // block, block).sum((1, 3))
            cost = cost + MOTION_COST * block * block * np.sqrt(abs(dy) + abs(dx))  # (H/B, W/B)
            cost = np.kron(cost, np.ones((block, block)))  # (H, W): each block's cost on its pixels
            better = cost < best
            best[better] = cost[better]
            out[better] = ((back + ahead) / 2)[better]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", help="a manifest (flowvid data index) of the videos")
    ap.add_argument("--block", type=int, default=16, help="block side, pixels (divides the frame's sides)")
    ap.add_argument("--search", type=int, default=3, help="largest displacement from the made frame, pixels")
    ap.add_argument("--every", type=int, default=3, help="make every n-th frame")
    args = ap.parse_args(argv)
    if args.block < 1 or args.search < 0 or args.every < 1:
        raise SystemExit(f"--block and --every must be >= 1 and --search >= 0, got {args.block}, {args.every}, "
                         f"{args.search}")

    from flowvid.data.manifest import read_manifest, resolve
    from flowvid.data.readers import open_video
    from flowvid.eval.pixels import psnr_frames
    from flowvid.eval.run import PSNR_CAP_DB

    made = {"blending": [], "block matching": []}
    truth = []
    for entry in read_manifest(args.manifest):
        with open_video(resolve(args.manifest, entry.path)) as reader:
            v = reader.read(range(len(reader)))  # (F, H, W, 3) uint8
        if v.shape[1] % args.block or v.shape[2] % args.block:
            raise SystemExit(f"--block {args.block} must divide the frames' {v.shape[1]}x{v.shape[2]}")
        for i in range(1, len(v) - 1, args.every):
            a, c = v[i - 1].astype(np.float64), v[i + 1].astype(np.float64)
            made["blending"].append((a + c) / 2)
            made["block matching"].append(block_matching(a, c, args.block, args.search))
            truth.append(v[i])
    truth = np.stack(truth)  # (N, H, W, 3)
    for name, frames in made.items():
        frames = np.stack(frames).round().clip(0, 255).astype(np.uint8)  # as a tool writes them
        per_frame = np.minimum(psnr_frames(frames, truth), PSNR_CAP_DB)
        pooled = pooled_psnr(frames, truth, np.ones(truth.shape, bool))
        print(f"{name}: mean PSNR {per_frame.mean():.2f} dB, pooled {pooled:.2f} dB ({len(truth)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
