"""Generating past the training length: sampling time and peak memory, local window against full attention.

A small transformer (4 blocks, width 128, 16x16 frames, patch 4: 17 tokens per frame; random weights)
trained length 16; clips of 16, 64 and 256 frames (1x, 4x, 16x) with the insertion sampler, N steps.
The rate head is replaced by an oracle asking for the frames still missing, so each run reaches
its length. Each row runs in a fresh process; peak = growth of its peak resident memory (VmHWM).

    python tools/bench_long.py [--steps 10] [--window 4]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(frames: int, window: int, steps: int) -> dict:
    from flowvid.config import load_config
    from flowvid.flow.sampler import ClipTask, InsertionSampler
    from flowvid.models import SpatioTemporalDiT

    cfg = load_config("configs/base.yaml", ["model.dim=128", "model.depth=4", "model.heads=4", "model.height=16",
                                            "model.width=16", "model.patch_size=4", f"model.attention.window={window}"])
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg.model).eval()

    def fn(x, t, pos, cu, ctx, pas, label):
        with torch.no_grad():
            out = model(x, t, pos, cu, ctx, pas, None)
        rate = torch.zeros(len(t))
        rate[0] = max(frames - len(t), 0)
        return out.velocity, rate

    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak to the current resident size
        fh.write("5")
    before = vm_hwm_mib()
    s = InsertionSampler(fn, (3, 16, 16), steps=steps, n_start=2)
    t0 = time.perf_counter()
    r = s.sample([ClipTask(seed=0)])[0]
    return {"seconds": time.perf_counter() - t0, "peak_mib": vm_hwm_mib() - before, "length": r.frames.shape[0],
            "nfe": s.stats.nfe}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    print(f"machine: {platform.machine()}, torch {torch.__version__}; N={args.steps} steps, training length 16\n")
    print("| frames | x training length | attention | length reached | NFE | seconds | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    rows = {}
    for frames in args.lengths:
        for window in (args.window, 0):
            out = subprocess.run([sys.executable, __file__, "--child", str(frames), str(window), str(args.steps)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows[(frames, window)] = r
            label = f"window {window}" if window else "full"
            print(f"| {frames} | {frames // 16} | {label} | {r['length']} | {r['nfe']} | {r['seconds']:.2f} "
                  f"| {r['peak_mib']:.1f} |", flush=True)
    lo, hi = min(args.lengths), max(args.lengths)
    for window in (args.window, 0):
        a, b = rows[(lo, window)], rows[(hi, window)]
        print(f"\n{'window ' + str(window) if window else 'full'}: {hi}/{lo} frames -> time x{b['seconds'] / a['seconds']:.1f}, "
              f"peak memory x{b['peak_mib'] / max(a['peak_mib'], 1e-3):.1f}")


if __name__ == "__main__":
    main()
