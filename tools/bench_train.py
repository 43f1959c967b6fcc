"""Training throughput of the insertion path against the full-sequence baseline, in one run.

Same network, same data (the same synthetic clips of 16 frames), same batches, same trainer:
only `path.kind` (and the global-time distribution) changes. For each setting it times real
training steps (forward, backward, AdamW, EMA) and reports clips/s, tokens/s and the speed-up
over full-sequence training, next to the cost ratio the steps allowed: forward FLOPs of the
steps' clips at full length over those of the frames they really showed (flowvid.models.flops).
Efficiency = measured speed-up / allowed ratio (target >= 0.9); the token ratio (full frames
over visible frames) is shown too, since on CPU step time follows tokens more than FLOPs.

    python tools/bench_train.py [--steps 16] [--warmup 4] [--rounds 2] [--patch 4] [--clips 8]

--patch 2 (257 tokens a frame, 4,112 a clip) makes attention most of the work, as at real sizes.
"""
from __future__ import annotations

import argparse
import logging
import platform
import statistics
import time
import warnings

import lightning as L
import numpy as np
import torch

from flowvid.config import load_config
from flowvid.data.module import VideoDataModule
from flowvid.flow import InsertionPath
from flowvid.models import forward_flops
from flowvid.training.module import FlowceptionModule

FRAMES = 16
SETTINGS = {
    "full sequence": ["path.kind=full_sequence"],
    "insertion, tau_g on [0, 1 + max u]": ["path.time.insertion_phase_weight=0.0"],
    "insertion, 50/50 mixture": ["path.time.insertion_phase_weight=0.5"],
    "insertion, tau_g on [0, 1]": ["path.time.insertion_phase_weight=1.0"],
}


class StepTimer(L.Callback):
    def __init__(self):
        self.times, self.tokens, self._t0 = [], [], 0.0

    def on_train_batch_start(self, trainer, module, batch, idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, idx):
        self.times.append(time.perf_counter() - self._t0)


def tokens_per_frame(patch: int) -> int:
    return (32 // patch) ** 2 + 1  # patches plus the frame token


def config(extra: list[str], steps: int, patch: int, clips: int):
    return load_config("configs/base.yaml", [
        "model.dim=128", "model.depth=4", "model.heads=4", "model.height=32", "model.width=32",
        f"model.patch_size={patch}", "data.height=32", "data.width=32", f"data.min_frames={FRAMES}",
        f"data.max_frames={FRAMES}", f"data.tokens_per_batch={clips * FRAMES * tokens_per_frame(patch)}", "data.synthetic.num_clips=256", "data.synthetic.val_clips=0",
        f"trainer.max_steps={steps}", "trainer.limit_val_batches=0", "trainer.accelerator=cpu", *extra])


def allowed_ratio(cfg, lengths: list[list[int]]) -> float:
    """FLOPs of the steps' clips at full length over FLOPs of the frames they really showed."""
    full = sum(forward_flops(cfg.model, FRAMES) * len(step) for step in lengths)
    return full / sum(forward_flops(cfg.model, m) for step in lengths for m in step)


def measure(cfg, warmup: int) -> tuple[float, list[list[int]]]:
    """(mean step seconds, visible frames of each clip of each step) over the steps after warm-up.
    The mean, not the median: the allowed ratio sums the same steps' FLOPs, and step costs are skewed."""
    L.seed_everything(cfg.seed, verbose=False)
    module, timer = FlowceptionModule(cfg), StepTimer()
    visible = []
    original = module.path.sample_batch

    def counting(*args, **kwargs):
        s = original(*args, **kwargs)
        visible.append(s.lengths.tolist())
        return s

    module.path.sample_batch = counting
    L.Trainer(max_steps=cfg.trainer["max_steps"], accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
              use_distributed_sampler=False).fit(module, datamodule=VideoDataModule(cfg))
    return statistics.mean(timer.times[warmup:]), visible[warmup:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--patch", type=int, default=4, choices=(2, 4, 8))
    ap.add_argument("--clips", type=int, default=8, help="clips a step")
    args = ap.parse_args()
    tpf = tokens_per_frame(args.patch)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"4 blocks, width 128, 32x32 frames, patch {args.patch} ({tpf} tokens/frame); {args.clips} clips of {FRAMES} "
          f"frames a step; "
          f"mean of {args.steps - args.warmup} steps after {args.warmup}\n")
    # Settings take turns over `rounds` rounds and each keeps its fastest round: load from other
    # processes on a shared machine then slows every setting alike instead of one of them.
    rows: dict = {}
    for _ in range(args.rounds):
        for name, extra in SETTINGS.items():
            cfg = config(extra, args.steps, args.patch, args.clips)
            t, lengths = measure(cfg, args.warmup)
            if name not in rows or t < rows[name][0][0]:
                rows[name] = ((t, lengths), cfg)
    (base_t, _), _ = rows["full sequence"]
    print("| setting | visible frames/step | step ms | clips/s | tokens/s | speed-up | allowed (FLOPs) | efficiency "
          "| allowed (tokens) | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, ((t, lengths), cfg) in rows.items():
        allowed = allowed_ratio(cfg, lengths)
        vis = float(np.mean([sum(step) for step in lengths]))
        speed = base_t / t
        tokens = args.clips * FRAMES / vis
        print(f"| {name} | {vis:.1f} | {1e3 * t:.0f} | {args.clips / t:.1f} | {vis * tpf / t:,.0f} | {speed:.2f}x "
              f"| {allowed:.2f}x | {speed / allowed:.2f} | {tokens:.2f}x | {speed / tokens:.2f} |")


if __name__ == "__main__":
    main()
