"""Building FlexAttention's block mask once per forward: from frames (flowvid) against torch's
create_block_mask, which evaluates the mask on every token pair.

Shapes are training batches: clips x frames x tokens per frame, clip lengths as an insertion
batch or all full, with and without a local window. Times are medians of --reps builds after one
warm-up, the two builders taking turns; the ratio is measured side by side in one run. Both
builders give the same tiles (tests/models/test_attention.py checks this).

    python tools/bench_flex_mask.py [--gpu] [--reps 5]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.nn.attention.flex_attention import create_block_mask

from flowvid.models.attention import PackedLayout, flex_block_mask

SHAPES = [  # (label, frames per clip, tokens per frame, window)
    ("8 clips, 32x32 patch 4", [16] * 8, 65, 0),
    ("8 insertion clips, 32x32 patch 4", [16, 12, 9, 16, 5, 14, 16, 7], 65, 0),
    ("2 clips, 64x64 patch 4", [16] * 2, 257, 0),
    ("4 clips, 64x64 patch 4", [16] * 4, 257, 0),
    ("4 clips, 64x64 patch 4, window 4", [16] * 4, 257, 4),
]
GPU_SHAPES = [("8 clips, 64x64 patch 4 (B preset bench)", [16] * 8, 257, 0),
              ("8 insertion clips, 64x64 patch 4", [16, 12, 9, 16, 5, 14, 16, 7], 257, 0)]


def layout(lengths: list[int], tpf: int, window: int) -> PackedLayout:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return PackedLayout(cu, tpf, torch.cat([torch.arange(n) for n in lengths]), window)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="build on the CUDA device (adds the B preset shapes)")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; none is visible here")
    device = torch.device("cuda" if args.gpu else "cpu")
    name = torch.cuda.get_device_name() if args.gpu else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"{name}, torch {torch.__version__}\n")
    print("| batch | tokens | from frames ms | create_block_mask ms | speed-up |")
    print("|---|---|---|---|---|")
    for label, lengths, tpf, window in SHAPES + (GPU_SHAPES if args.gpu else []):
        lay = layout(lengths, tpf, window)
        ours = lambda: flex_block_mask(lay, device)  # noqa: E731
        mask_mod, T = ours().mask_mod, sum(lengths) * tpf
        theirs = lambda: create_block_mask(mask_mod, None, None, T, T, device=device)  # noqa: E731
        theirs()  # warm-up
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for _ in range(args.reps):
            times["ours"].append(timed(ours, device))
            times["theirs"].append(timed(theirs, device))
        a, b = (statistics.median(times[k]) * 1e3 for k in ("ours", "theirs"))
        print(f"| {label} | {T:,} | {a:.2f} | {b:.1f} | {b / a:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
