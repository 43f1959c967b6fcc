"""How much a classical motion-compensated interpolator gains over linear blending on a set of videos:
the headroom that motion leaves an interpolation model, and what `model.reference_search` starts from.

    python tools/block_matching.py MANIFEST [--search 6] [--window 15] [--every 3] [--gap 1]

Every `--every`-th frame of each video in MANIFEST is made from the frames `--gap` before and after it,
by linear blending and by block matching (flowvid.models.motion: per pixel, the displacement up to
--search pixels between the two whose predictions of the frame agree best over a --window-pixel
window). Neither method looks at the made frame. Prints the mean over frames of each one's PSNR, as
`flowvid eval` scores interpolation, and the PSNR pooled over all pixels. The frames are not those that
`flowvid eval --task interpolate` draws: the figures bound what motion can add, they do not score a model.
"""
from __future__ import annotations

import argparse

import numpy as np
from interp_errors import pooled_psnr  # tools/ is this script's folder, first on sys.path

CHUNK = 256  # frames matched at once: memory stays bounded on long manifests


def block_matching(a: np.ndarray, c: np.ndarray, search: int, window: int) -> np.ndarray:
    """The uint8 frames halfway between uint8 frames a and c (N, H, W, 3)."""
    import torch

    from flowvid.models.motion import motion_between
    from flowvid.pipelines.tasks import to_model_space, to_uint8

    made = []
    for i in range(0, len(a), CHUNK):
        first, last = (to_model_space(torch.from_numpy(v[i:i + CHUNK])) for v in (a, c))  # (n, 3, H, W) each
        made.append(motion_between(first, last, torch.full((len(first),), 0.5), search, window))
    return to_uint8(torch.cat(made)).numpy()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", help="a manifest (flowvid data index) of the videos")
    ap.add_argument("--search", type=int, default=6, help="largest displacement between the two frames, pixels")
    ap.add_argument("--window", type=int, default=15, help="side of the window a displacement is judged on (odd)")
    ap.add_argument("--every", type=int, default=3, help="make every n-th frame")
    ap.add_argument("--gap", type=int, default=1, help="make each frame from the frames this far before and after")
    args = ap.parse_args(argv)
    if args.every < 1 or args.gap < 1 or args.search < 0 or args.window < 1 or args.window % 2 == 0:
        raise SystemExit(f"--every and --gap must be >= 1, --search >= 0 and --window odd, got {args.every}, "
                         f"{args.gap}, {args.search}, {args.window}")

    from flowvid.data.manifest import read_manifest, resolve
    from flowvid.data.readers import open_video
    from flowvid.eval.pixels import psnr_frames
    from flowvid.eval.run import PSNR_CAP_DB

    before, after, truth = [], [], []
    for entry in read_manifest(args.manifest):
        with open_video(resolve(args.manifest, entry.path)) as reader:
            v = reader.read(range(len(reader)))  # (F, H, W, 3) uint8
        for i in range(args.gap, len(v) - args.gap, args.every):
            before.append(v[i - args.gap])
            after.append(v[i + args.gap])
            truth.append(v[i])
    if not truth:
        raise SystemExit(f"{args.manifest}: no video is longer than 2 x --gap = {2 * args.gap} frames")
    before, after, truth = np.stack(before), np.stack(after), np.stack(truth)  # (N, H, W, 3) each
    blend = ((before.astype(np.float64) + after) / 2).round().astype(np.uint8)  # as a tool writes it
    for name, frames in {"blending": blend,
                         "block matching": block_matching(before, after, args.search, args.window)}.items():
        per_frame = np.minimum(psnr_frames(frames, truth), PSNR_CAP_DB)
        pooled = pooled_psnr(frames, truth, np.ones(truth.shape, bool))
        print(f"{name}: mean PSNR {per_frame.mean():.2f} dB, pooled {pooled:.2f} dB ({len(truth)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
