"""What the faster sampler settings change in trained models' samples, beside their cost.

Two models trained alike on bouncing balls (`configs/balls.yaml`): an insertion model (--ckpt)
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

    python tools/bench_sampler_quality.py --ckpt INSERTION --baseline FULL [--steps 20] [--clips 32] [--repeats 2]
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


def shape_of(cfg) -> tuple[int, int, int]:
    return cfg.model.in_channels, cfg.model.height, cfg.model.width


def run_insertion(model, cfg, args, tail: int, skip: float):
    """(clips, stats, frames evaluated) of the insertion model with its learned rates."""
    seen: list = []
    s = InsertionSampler(counting(model_denoiser(model), seen), shape_of(cfg), kappa=cfg.path.kappa,
                         steps=args.steps, n_start=cfg.path.n_start, max_frames=4 * cfg.data.max_frames,
                         tail_steps=tail, skip_threshold=skip)
    return s.sample([ClipTask(seed=i) for i in range(args.clips)]), s.stats, sum(seen)


def run_full(model, cfg, lengths: list[int], steps: int):
    """(clips, stats, frames evaluated) of the baseline, clip i of length lengths[i] from seed i."""
    seen: list = []
    clips, stats = sample_full_sequence(counting(model_denoiser(model), seen), shape_of(cfg), lengths, steps,
                                        list(range(len(lengths))))
    return clips, stats, sum(seen)


def timed_rows(settings: dict, repeats: int) -> dict:
    """name -> (output, stats, frames evaluated, fastest seconds); the settings take turns, so load
    from elsewhere slows them alike. Outputs are deterministic: the repeats differ only in time."""
    rows: dict = {}
    for _ in range(repeats):
        for name, fn in settings.items():
            t0 = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t0
            rows[name] = (*out, min(dt, rows[name][3])) if name in rows else (*out, dt)
    return rows


def table(model, cfg, base, base_cfg, args):
    """The printed rows: (name, NFE, frames evaluated, seconds, diff to exact, clips, late contrast)."""
    exact, _, _ = run_insertion(model, cfg, args, 0, 0.0)  # also warms both models up
    lengths = [r.frames.shape[0] for r in exact]
    run_full(base, base_cfg, lengths, 2)
    settings = {f"full sequence, {n} steps": (lambda n=n: run_full(base, base_cfg, lengths, n))
                for n in (args.steps, args.steps // 2)}
    for name, tail, skip in [("exact", 0, 0.0), (f"tail {args.steps // 2}", args.steps // 2, 0.0),
                             (f"tail {args.steps // 4}", args.steps // 4, 0.0),
                             (f"tail {args.steps // 8}", args.steps // 8, 0.0),
                             ("skip 0.05", 0, 0.05), ("skip 0.2", 0, 0.2), ("skip 0.5", 0, 0.5)]:
        settings[f"insertion, {name}"] = lambda tail=tail, skip=skip: run_insertion(model, cfg, args, tail, skip)
    rows = []
    for name, (out, stats, seen, dt) in timed_rows(settings, args.repeats).items():
        if name.startswith("full"):
            rows.append((name, stats.nfe, seen, dt, "-", out, None))
            continue
        late = [torch.tensor(_born(r)) >= 0.75 * args.steps for r in out]  # skipping can change lengths
        same = [(a, b) for a, b in zip(out, exact) if a.frames.shape == b.frames.shape]
        diff = torch.cat([(a.frames - b.frames).abs().mean((1, 2, 3)) for a, b in same] or [torch.zeros(1)]).mean()
        rows.append((name, stats.nfe, seen, dt, f"{float(diff):.4f} ({len(same)}/{len(out)})",
                     [r.frames for r in out], torch.cat([contrast(r.frames)[m] for r, m in zip(out, late)])))
    return rows, lengths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="the insertion model (export folder or .ckpt)")
    ap.add_argument("--baseline", required=True, help="the full-sequence model trained alike")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per row; the fastest counts")
    args = ap.parse_args()
    model, cfg = load_model(args.ckpt)
    base, base_cfg = load_model(args.baseline)
    if cfg.path.kind.value != "insertion" or base_cfg.path.kind.value != "full_sequence":
        raise SystemExit("--ckpt must be an insertion model and --baseline a full-sequence one")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.clips} clips, N={args.steps}\n")
    rows, lengths = table(model, cfg, base, base_cfg, args)
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
