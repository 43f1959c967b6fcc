"""Decoding long videos: peak memory and time of a full decode against a chunked one, and of the
preview scale against full scale. Each case runs in a fresh process (peak RSS is per process).

    python tools/bench_decode.py [--lengths 64,256,1024] [--chunk 16] [--size 64] [--threads 2]

The autoencoder is randomly initialised (decoding costs the same whatever the weights), with the
decoder of configs/autoencoder/tiny.yaml widened to channels [32, 64, 64] at 4x downsampling. A
chunked decode hands each chunk on as uint8 frames, as `flowvid` writes them to a video; a full
decode holds every frame.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_case(length: int, chunk: int, scale: float, size: int, threads: int) -> dict:
    import torch

    from flowvid.autoencoders import VideoAutoencoder
    from flowvid.config import load_config

    torch.set_num_threads(threads)
    cfg = load_config(ROOT / "configs" / "autoencoder" / "tiny.yaml", ["autoencoder.channels=[32,64,64]"]).autoencoder
    model = VideoAutoencoder(cfg).eval()
    z = torch.randn(length, cfg.latent_channels, size // cfg.downsample, size // cfg.downsample)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        if chunk:
            frames = 0
            for part in model.decode_chunks(z, chunk, scale):
                frames += ((part.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).shape[0]  # handed on, dropped
        else:
            out = ((model.decode(z, scale=scale).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            frames = out.shape[0]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"length": length, "chunk": chunk, "scale": scale, "frames": frames, "seconds": seconds,
            "peak_mib": peak / 1024, "decode_mib": (peak - before) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="64,256,1024")
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="frame side in pixels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--case", default="", help=argparse.SUPPRESS)  # one case, in a child process
    args = p.parse_args()
    if args.case:
        length, chunk, scale = args.case.split(":")
        print(json.dumps(one_case(int(length), int(chunk), float(scale), args.size, args.threads)))
        return
    lengths = [int(v) for v in args.lengths.split(",")]
    cases = [(n, c, 1.0) for n in lengths for c in (0, args.chunk)] + [(lengths[-1], args.chunk, 0.25)]
    rows = []
    for n, c, s in cases:
        out = subprocess.run([sys.executable, __file__, "--case", f"{n}:{c}:{s}", "--size", str(args.size),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'frames':>6}  {'decode':>12}  {'scale':>5}  {'seconds':>8}  {'ms/frame':>8}  {'peak RSS MiB':>12}  "
          f"{'decode MiB':>10}")
    for r in rows:
        how = f"chunks of {r['chunk']}" if r["chunk"] else "full"
        print(f"{r['length']:>6}  {how:>12}  {r['scale']:>5g}  {r['seconds']:8.2f}  {1000 * r['seconds'] / r['length']:8.2f}"
              f"  {r['peak_mib']:12.0f}  {r['decode_mib']:10.0f}")
    by = {(r["length"], r["chunk"], r["scale"]): r for r in rows}
    lo, hi = lengths[0], lengths[-1]
    for c, name in ((args.chunk, "chunked"), (0, "full")):
        ratio = by[(hi, c, 1.0)]["peak_mib"] / by[(lo, c, 1.0)]["peak_mib"]
        print(f"{name}: peak RSS {hi} frames / {lo} frames = {ratio:.2f}")
    t_full, t_prev = by[(hi, args.chunk, 1.0)]["seconds"], by[(hi, args.chunk, 0.25)]["seconds"]
    print(f"preview (scale 0.25) against full scale, chunked, {hi} frames: {t_full / t_prev:.1f}x faster")


if __name__ == "__main__":
    main()
