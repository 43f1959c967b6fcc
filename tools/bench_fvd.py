"""How many clips a stable FVD needs, and what the feature network costs on this machine.

For each synthetic set (the clips `flowvid eval` takes as real data for configs/balls.yaml: the
eval stream, 16x16 frames as configs/model/tiny.yaml sets them, 8-16 frames long), I3D features
of 2 x max(N) clips; then the FVD of two disjoint halves of the same real set as N grows (the
noise floor: any two sets of N real clips score about this much), over several random splits.
Also the I3D time per clip at a few batch sizes.

    python tools/bench_fvd.py [--sizes 32 64 128 256] [--splits 5] [--kinds balls textures] [--out DIR]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from flowvid.config import load_config
from flowvid.eval.fvd import fvd, fvd_clips, i3d_features, i3d_input
from flowvid.eval.i3d import load_i3d
from flowvid.eval.run import real_from_config


def time_per_clip(network, clips, batch_sizes) -> dict[int, float]:
    """Seconds per clip of the I3D forward (after one warm-up batch), inputs prepared outside the timing."""
    out = {}
    for b in batch_sizes:
        x = torch.stack([i3d_input(c) for c in clips[:b]])  # (b, 3, 16, 224, 224)
        with torch.no_grad():
            network(x)
            t0 = time.perf_counter()
            network(x)
        out[b] = (time.perf_counter() - t0) / b
    return out


def features(kind: str, n: int, network, out: Path, batch: int) -> np.ndarray:
    """I3D features of the first n eval clips of the synthetic `kind` set (cached in out)."""
    cache = out / f"features_{kind}_{n}.npz"
    if cache.is_file():
        return np.load(cache)["features"]
    cfg = load_config(["configs/balls.yaml"], [f"data.synthetic.kind={kind}"])
    real = fvd_clips(real_from_config(cfg, n).clips)
    t0 = time.perf_counter()
    f = i3d_features(real.clips, network, batch)
    print(f"{kind}: {n} clips ({real.padded} padded to 16 frames) in {time.perf_counter() - t0:.0f} s")
    np.savez(cache, features=f)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--splits", type=int, default=5, help="random disjoint splits per N")
    ap.add_argument("--kinds", nargs="+", default=["balls", "textures"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="outputs/bench_fvd")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    network = load_i3d()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    cfg = load_config(["configs/balls.yaml"])
    sample = fvd_clips(real_from_config(cfg, 8).clips).clips
    for b, s in time_per_clip(network, sample, [1, 4, 8]).items():
        print(f"I3D forward, batch {b}: {s:.3f} s per 16-frame clip")
    n_max = 2 * max(args.sizes)
    rng = np.random.default_rng(0)
    print(f"{'set':10s} {'N':>5s} {'FVD real vs real (mean +- std over splits)':>45s}")
    for kind in args.kinds:
        f = features(kind, n_max, network, out, args.batch)
        for n in args.sizes:
            vals = []
            for _ in range(args.splits):
                idx = rng.permutation(n_max)
                vals.append(fvd(f[idx[:n]], f[idx[n:2 * n]]))
            print(f"{kind:10s} {n:5d} {np.mean(vals):30.2f} +- {np.std(vals):.2f}")


if __name__ == "__main__":
    main()
