"""Where an interpolation's error sits: the moving pixels, the still ones beside them, the rest.

    python tools/interp_errors.py --ckpt MODEL [--data configs/balls.yaml] [--stride 2] [--num 32]
                                  [--steps 1] [--average 1] [--seeds 8] [--sheet sheet.png]

Scores the frames `flowvid eval --task interpolate` makes on the exact grid (same real clips, same
sampling seeds) and linear blending's, as PSNR over three sets of pixels of the made frames:
- moving: where the truth differs from blending by more than 8 levels (what moved);
- near: the other pixels of the patch tokens that hold a moving pixel (a latent model's token covers
  patch x the autoencoder's downsampling);
- far: every pixel of the tokens that hold none (still background).
PSNR here is pooled over all frames' pixels of a set, not a mean over frames as in `flowvid eval`.
With --seeds K > 1 it scores the mean of K samples too: the part of the error that averaging over the
starting noise removes is variance; what stays is the model's bias. --average K: each sample is
itself the mean of K antithetic samples (`flowvid interpolate --average`). --sheet writes, for the first
three clips, rows of the truth, linear blending and the model's frames (the first 9 of each, 4x).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

MOVED = 8  # uint8 levels between truth and blending that make a pixel "moving"
SEED_STRIDE = 1000  # sampling seeds of the k-th repeat: seed + k * SEED_STRIDE + i
SHEET_CLIPS, SHEET_FRAMES, SHEET_SCALE = 3, 9, 4


def pooled_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """10 log10(255^2 / MSE) over the masked values (inf where they are equal, nan where there are none)."""
    err = (pred.astype(np.float64) - ref.astype(np.float64))[mask] ** 2
    if not err.size:
        return float("nan")
    return float(10 * np.log10(255.0**2 / err.mean())) if err.any() else float("inf")


def regions(truth: np.ndarray, blend: np.ndarray, patch: int) -> dict[str, np.ndarray]:
    """(N, H, W, 3) masks of the moving, near and far pixels."""
    moving = (np.abs(truth.astype(np.int16) - blend.astype(np.int16)).max(-1) > MOVED)  # (N, H, W)
    n, h, w = moving.shape
    tokens = moving.reshape(n, h // patch, patch, w // patch, patch).any(axis=(2, 4))  # (N, h, w)
    touched = tokens.repeat(patch, 1).repeat(patch, 2)  # (N, H, W)
    masks = {"moving": moving, "near": touched & ~moving, "far": ~touched}
    return {k: np.repeat(m[..., None], 3, -1) for k, m in masks.items()}


def write_sheet(path: str, real: list[np.ndarray], blends: list[np.ndarray], made: list[np.ndarray]) -> None:
    """Rows of the truth, blending and the model, SHEET_FRAMES frames each, for SHEET_CLIPS clips."""
    from flowvid.io import write_png
    from flowvid.pipelines.outputs import contact_sheet

    rows = []
    for clip, blend, fake in list(zip(real, blends, made))[:SHEET_CLIPS]:
        rows += [r[:SHEET_FRAMES] for r in (clip, blend, fake)]
    n = min(len(r) for r in rows)
    sheet = contact_sheet(np.concatenate([r[:n] for r in rows]), per_row=n, gap=1)  # (H', W', 3)
    write_png(path, sheet.repeat(SHEET_SCALE, 0).repeat(SHEET_SCALE, 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", default=None, help="real clips' config (default: the model's data)")
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--num", type=int, default=32)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--average", type=int, default=1, help="each sample: the mean of this many antithetic samples")
    p.add_argument("--seeds", type=int, default=1, help="samples per clip to average (K)")
    p.add_argument("--sheet", default="", help="a PNG of truth, blending and model rows")
    args = p.parse_args(argv)

    from flowvid.eval.interpolation import blend_baseline, subsample
    from flowvid.eval.run import EvalOptions, prepare_real, real_data_config, real_from_config, sample_task
    from flowvid.pipelines.tasks import pixel_size
    from flowvid.training.export import load_model

    model, cfg = load_model(args.ckpt)
    real = prepare_real(real_from_config(real_data_config(cfg, args.data), args.num),
                        EvalOptions(metrics=["psnr"], task="interpolate", stride=args.stride))
    runs = []
    for k in range(args.seeds):
        opts = EvalOptions(metrics=["psnr"], task="interpolate", stride=args.stride, steps=args.steps,
                           seed=k * SEED_STRIDE, average=args.average)
        runs.append(sample_task(model, cfg, real, opts).clips)
    subs = [subsample(clip, args.stride) for clip in real.clips]
    blends = [blend_baseline(sub.keyframes, args.stride) for sub in subs]  # whole clips: the sheet shows them
    if args.sheet:
        write_sheet(args.sheet, real.clips, blends, runs[0])
    made, truth, blend, mean = [], [], [], []
    for i, (clip, sub) in enumerate(zip(real.clips, subs)):
        made.append(runs[0][i][sub.dropped])
        mean.append(np.mean([r[i][sub.dropped].astype(np.float64) for r in runs], axis=0))
        truth.append(clip[sub.dropped])
        blend.append(blends[i][sub.dropped])
    made, mean, truth, blend = (np.concatenate(x) for x in (made, mean, truth, blend))
    masks = regions(truth, blend, cfg.model.patch_size * pixel_size(cfg)[0] // cfg.model.height)
    shares = ", ".join(f"{k} {m.mean():.2f}" for k, m in masks.items())
    print(f"{len(truth)} made frames from {len(real.clips)} clips, stride {args.stride}, {args.steps} step(s), "
          f"average {args.average}; "
          f"pixel shares: {shares}")
    print("PSNR (pooled) | all | moving | near | far")
    rows = [("model", made)] + ([(f"mean of {args.seeds} samples", mean)] if args.seeds > 1 else []) + \
        [("linear blending", blend)]
    everything = np.ones_like(truth, dtype=bool)
    for name, pred in rows:
        cells = [pooled_psnr(pred, truth, everything)] + [pooled_psnr(pred, truth, m) for m in masks.values()]
        print(f"{name} | " + " | ".join(f"{c:.2f}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
