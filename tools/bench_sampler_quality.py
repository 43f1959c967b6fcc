"""What the faster sampler settings change in trained models' samples, beside their cost.

Two models trained alike on bouncing balls (`configs/demo.yaml`): an insertion model (--ckpt)
and a full-sequence baseline (--baseline, `path.kind=full_sequence`). The insertion model draws
its lengths with its learned rate; the baseline samples, with the same seeds, clips of the same
lengths, so both settle the same number of frames. For the insertion settings the exact rule is
the reference: a bounded tail leaves the insertions alone (same seed, same length and insertion
order), so "diff to exact" compares the same frames.

Quality proxies, with the training data's values as reference (the evaluation issue's metric
replaces them when it exists):
- contrast: mean spatial std of a frame; a coarse flow from noise averages towards a blur;
- late contrast: the same over the frames inserted in the last quarter of the clock (the ones
  a bounded tail integrates in fewer steps);
- flicker: mean abs difference between neighbouring frames.

    python tools/bench_sampler_quality.py --ckpt INSERTION --baseline FULL [--steps 20] [--clips 32]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from flowvid.data.synthetic import make_synthetic
from flowvid.flow.sampler import ClipTask, InsertionSampler, sample_full_sequence
from flowvid.pipelines.tasks import _born, model_denoiser
from flowvid.training.export import load_model


def contrast(frames: torch.Tensor) -> torch.Tensor:
    return frames.std((2, 3)).mean(1)  # per frame


def flicker(clips: list[torch.Tensor]) -> float:
    return float(torch.cat([(c[1:] - c[:-1]).abs().mean((1, 2, 3)) for c in clips]).mean())


def counting(denoiser, seen: list):
    def fn(x, t, *rest):
        seen.append(len(t))
        return denoiser(x, t, *rest)
    return fn


def insertion_rows(model, cfg, args):
    shape = (cfg.model.in_channels, cfg.model.height, cfg.model.width)
    tasks = [ClipTask(seed=i) for i in range(args.clips)]
    settings = [("exact", 0, 0.0), (f"tail {args.steps // 2}", args.steps // 2, 0.0),
                (f"tail {args.steps // 4}", args.steps // 4, 0.0), (f"tail {args.steps // 8}", args.steps // 8, 0.0),
                ("skip 0.05", 0, 0.05), ("skip 0.2", 0, 0.2), ("skip 0.5", 0, 0.5)]
    rows, ref = [], None
    for name, tail, skip in settings:
        seen: list = []
        s = InsertionSampler(counting(model_denoiser(model), seen), shape, kappa=cfg.path.kappa, steps=args.steps,
                             n_start=cfg.path.n_start, max_frames=4 * cfg.data.max_frames, tail_steps=tail,
                             skip_threshold=skip)
        t0 = time.perf_counter()
        res = s.sample(tasks)
        dt = time.perf_counter() - t0
        ref = ref or res
        late = [torch.tensor(_born(r)) >= 0.75 * args.steps for r in ref]
        same = [(a, b) for a, b in zip(res, ref) if a.frames.shape == b.frames.shape]
        diff = torch.cat([(a.frames - b.frames).abs().mean((1, 2, 3)) for a, b in same]).mean()
        clips = [r.frames for r in res]
        rows.append((f"insertion, {name}", s.stats.nfe, sum(seen), dt, f"{float(diff):.4f} ({len(same)}/{len(res)})",
                     clips, torch.cat([contrast(r.frames)[m] for r, m in zip(res, late)])))
    return rows, [r.frames.shape[0] for r in ref]


def baseline_rows(model, cfg, args, lengths: list[int]):
    shape = (cfg.model.in_channels, cfg.model.height, cfg.model.width)
    rows = []
    for steps in (args.steps, args.steps // 2):
        seen: list = []
        t0 = time.perf_counter()
        clips, stats = sample_full_sequence(counting(model_denoiser(model), seen), shape, lengths, steps,
                                            list(range(len(lengths))))
        dt = time.perf_counter() - t0
        rows.append((f"full sequence, {steps} steps", stats.nfe, sum(seen), dt, "-", clips, None))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="the insertion model (export folder or .ckpt)")
    ap.add_argument("--baseline", required=True, help="the full-sequence model trained alike")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clips", type=int, default=32)
    args = ap.parse_args()
    model, cfg = load_model(args.ckpt)
    base, base_cfg = load_model(args.baseline)
    if cfg.path.kind.value != "insertion" or base_cfg.path.kind.value != "full_sequence":
        raise SystemExit("--ckpt must be an insertion model and --baseline a full-sequence one")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.clips} clips, N={args.steps}\n")
    ins, lengths = insertion_rows(model, cfg, args)
    rows = baseline_rows(base, base_cfg, args, lengths) + ins
    d = cfg.data
    data = make_synthetic(d.synthetic.kind, num_clips=args.clips, size=d.height, frames=(d.min_frames, d.max_frames),
                          seed=12345)
    data_clips = [data[i].frames for i in range(len(data))]
    print(f"mean length {sum(lengths) / len(lengths):.1f} frames (the baseline samples the same lengths)\n")
    print("| sampler | NFE | frames evaluated | seconds | time vs full sequence | mean abs diff to exact (clips) "
          "| contrast | late contrast | flicker |")
    print("|---|---|---|---|---|---|---|---|---|")
    base_t = rows[0][3]
    for name, nfe, seen, dt, diff, clips, late in rows:
        late_s = "-" if late is None else f"{float(late.mean()):.4f}"
        print(f"| {name} | {nfe} | {seen} | {dt:.2f} | {dt / base_t:.2f}x | {diff} | "
              f"{float(torch.cat([contrast(c) for c in clips]).mean()):.4f} | {late_s} | {flicker(clips):.4f} |")
    print(f"| training data (bouncing balls) | - | - | - | - | - | "
          f"{float(torch.cat([contrast(c) for c in data_clips]).mean()):.4f} | - | {flicker(data_clips):.4f} |")


if __name__ == "__main__":
    main()
