"""Sampling cost: the insertion sampler against the full-sequence baseline, and step skipping.

Same network for both (4 blocks, width 128, 32x32 frames, patch 4; random weights: cost does not
depend on them), clips of the training length F. The insertion model's rate head is replaced by
an oracle that asks for exactly the frames still missing to reach F (frame 0 carries the
count), so that both samplers produce F-frame clips and the comparison is of cost alone.
tools/bench_sampler_quality.py measures what the faster settings change in a trained model's samples.

    python tools/bench_sampler.py [--frames 16] [--steps 20] [--clips 4]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from flowvid.config import load_config
from flowvid.flow.sampler import ClipTask, InsertionSampler, sample_full_sequence
from flowvid.models import SpatioTemporalDiT

SHAPE = (3, 32, 32)


def build_model():
    cfg = load_config("configs/base.yaml", ["model.dim=128", "model.depth=4", "model.heads=4", "model.patch_size=4"])
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.02)  # a model that has trained a little: non-zero velocities
    return model


def SETTINGS(steps: int) -> dict:
    """Sampler rows: name -> (kappa, tail_steps); the full-sequence row has none."""
    return {"full sequence": None,
            "insertion (linear kappa)": ("linear", 0),
            "insertion (cubic kappa)": ("cubic", 0),
            f"insertion (linear, tail {steps // 2})": ("linear", steps // 2),
            f"insertion (linear, tail {steps // 4})": ("linear", steps // 4),
            f"insertion (cubic, tail {steps // 4})": ("cubic", steps // 4)}


def denoiser(model, frames: int, counter: list):
    def fn(x, t, pos, cu, ctx, pas, label):
        with torch.no_grad():
            out = model(x, t, pos, cu, ctx, pas, None)
        counter.append(len(t))
        rate = torch.zeros(len(t))
        for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
            rate[lo] = max(frames - (hi - lo), 0)  # the frames still missing to reach F
        return out.velocity, rate
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model = build_model()
    seeds = list(range(args.clips))
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"F={args.frames}, N={args.steps} steps, {args.clips} clips; best of {args.repeats}\n")
    rows = {}
    for _ in range(args.repeats):  # alternate the samplers; keep each one's fastest run
        for name in SETTINGS(args.steps):
            frames_seen: list = []
            t0 = time.perf_counter()
            if name == "full sequence":
                clips, stats = sample_full_sequence(denoiser(model, args.frames, frames_seen), SHAPE, args.frames,
                                                    args.steps, seeds)
                lengths = [c.shape[0] for c in clips]
            else:
                kappa, tail = SETTINGS(args.steps)[name]
                s = InsertionSampler(denoiser(model, args.frames, frames_seen), SHAPE, kappa=kappa,
                                     steps=args.steps, n_start=2, tail_steps=tail)
                res = s.sample([ClipTask(seed=i) for i in seeds])
                stats, lengths = s.stats, [r.frames.shape[0] for r in res]
            dt = time.perf_counter() - t0
            if name not in rows or dt < rows[name][0]:
                rows[name] = (dt, stats.nfe, sum(frames_seen), sum(lengths) / len(lengths))
    base = rows["full sequence"][0]
    print("| sampler | mean length | network evaluations | frames evaluated | seconds | time vs full sequence |")
    print("|---|---|---|---|---|---|")
    for name, (dt, nfe, seen, length) in rows.items():
        print(f"| {name} | {length:.1f} | {nfe} | {seen} | {dt:.2f} | {dt / base:.2f}x |")

    print("\nStep skipping (insertion, linear kappa): a step reuses the last velocities and rates when they")
    print("changed by less than the threshold (relative norm) since the evaluation before; never twice in a row.\n")
    print("| threshold | network evaluations | saved | seconds | mean abs difference to no skipping (same-length clips) |")
    print("|---|---|---|---|---|")
    ref = None
    for thr in (0.0, 0.02, 0.05, 0.1, 0.2):
        counter: list = []
        s = InsertionSampler(denoiser(model, args.frames, counter), SHAPE, steps=args.steps, skip_threshold=thr)
        t0 = time.perf_counter()
        res = s.sample([ClipTask(seed=i) for i in seeds])
        dt = time.perf_counter() - t0
        if ref is None:
            ref = res
        same = [(a, b) for a, b in zip(res, ref) if a.frames.shape == b.frames.shape]
        diff = sum(float((a.frames - b.frames).abs().mean()) for a, b in same) / max(len(same), 1)
        print(f"| {thr} | {s.stats.nfe} | {s.stats.skipped} | {dt:.2f} | {diff:.4f} ({len(same)}/{len(res)} clips) |")


if __name__ == "__main__":
    main()
