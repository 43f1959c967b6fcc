"""How well a model denoises its own training clips: the one-step estimate x1_hat = x_t + (1 - t) v
against the clean frames, at fixed t for every frame of a clip, beside two references.

- mean colour: each frame replaced by its own mean colour (an oracle that knows the background);
- noise kept: the share of the noise x0 the velocity does not remove at t = 0 (1 - the slope of
  v on -x0), and the spread left around that slope.

A model that has learnt its data has x1_hat error well below the mean colour from mid t on, and
removes nearly all the noise at t = 0. Used in docs/RESULTS.md to tell a network that learns
slowly from a sampler that goes wrong.

    python tools/denoise_check.py MODEL [--clips 8] [--seed 0]
"""
from __future__ import annotations

import argparse

import torch

from flowvid.data.clips import ClipRequest
from flowvid.data.datasets import SyntheticDataset
from flowvid.training.export import load_model

TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", help="export folder or .ckpt of a model trained on a synthetic set")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model, cfg = load_model(args.model)
    model.eval()
    if cfg.data.source.value != "synthetic":
        raise SystemExit("denoise_check reads the model's synthetic training set; this model has other data")
    ds = SyntheticDataset(cfg.data.synthetic.kind, cfg.data.synthetic.num_clips, cfg.data, cfg.seed)
    g = torch.Generator().manual_seed(args.seed)
    clips = [ds[ClipRequest(index=i, num_frames=ds.frame_range(i)[1], seed=0)].frames
             for i in range(min(args.clips, len(ds)))]
    print(f"{'t':>4}  {'x1_hat MSE':>10}  {'mean colour':>11}")
    with torch.no_grad():
        for t in TIMES:
            err = ref = 0.0
            for x1 in clips:
                n = x1.shape[0]
                x_t = t * x1 + (1 - t) * torch.randn(x1.shape, generator=g)
                v = model(x_t, torch.full((n,), t), torch.arange(n), [0, n]).velocity
                err += float(((x_t + (1 - t) * v - x1) ** 2).mean())
                ref += float(((x1.mean((2, 3), keepdim=True) - x1) ** 2).mean())
            print(f"{t:4.1f}  {err / len(clips):10.4f}  {ref / len(clips):11.4f}")
        kept, spread = [], []
        for x1 in clips:
            n = x1.shape[0]
            x0 = torch.randn(x1.shape, generator=g)
            v = model(x0, torch.zeros(n), torch.arange(n), [0, n]).velocity
            slope = float(-(v * x0).sum() / (x0 * x0).sum())
            kept.append(1 - slope)
            spread.append(float((v + slope * x0).std()))
    print(f"t = 0: noise kept {sum(kept) / len(kept):.3f}, spread around the slope {sum(spread) / len(spread):.3f}")


if __name__ == "__main__":
    main()
