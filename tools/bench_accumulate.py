"""Gradient accumulation against one large batch, for the same global batch of clips.

Setting "one batch": each step packs N x B tokens into one batch. Setting "accumulate N": each
step takes N batches of B tokens, forward and backward one after the other
(train.accumulate_grad_batches=N). Both compute the same step (tests/training/test_system.py);
this measures what accumulation costs in time and saves in memory. Each setting runs in a fresh
process: mean step time after warm-up, and peak memory growth during training (CPU: the
process's peak resident memory, VmHWM; CUDA: torch.cuda.max_memory_allocated).

    python tools/bench_accumulate.py [--accumulate 4] [--clips 4] [--steps 10] [--warmup 3]
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
import time
import warnings

FRAMES = 16


def peak_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def run_one(args) -> dict:
    """One setting in this process: {"step_s": mean step seconds, "peak_mib": peak memory growth}."""
    import lightning as L
    import torch

    from flowvid.config import load_config
    from flowvid.data.module import VideoDataModule
    from flowvid.training.module import FlowceptionModule

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    tpf = (32 // 4) ** 2 + 1
    n = args.accumulate if args.setting == "accumulate" else 1
    clips = args.clips * (1 if n > 1 else args.accumulate)  # per batch
    gpu = torch.cuda.is_available()
    cfg = load_config(["configs/base.yaml"], [
        "model.dim=128", "model.depth=4", "model.heads=4", f"data.min_frames={FRAMES}", f"data.max_frames={FRAMES}",
        f"data.tokens_per_batch={clips * FRAMES * tpf}", f"train.accumulate_grad_batches={n}",
        "data.synthetic.num_clips=512", "data.synthetic.val_clips=0", f"trainer.max_steps={args.steps}"])
    times = []

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, idx):
            torch.cuda.synchronize() if gpu else None
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, idx):
            torch.cuda.synchronize() if gpu else None
            times.append(time.perf_counter() - self.t0)

    L.seed_everything(cfg.seed, verbose=False)
    module, data = FlowceptionModule(cfg), VideoDataModule(cfg)
    before = peak_mib()
    L.Trainer(max_steps=args.steps, accelerator="gpu" if gpu else "cpu", devices=1, logger=False,
              precision="bf16-mixed" if gpu else "32-true", enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, callbacks=[Timer()],
              use_distributed_sampler=False).fit(module, datamodule=data)
    kept = times[args.warmup:]
    return {"step_s": sum(kept) / len(kept), "peak_mib": peak_mib() - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accumulate", type=int, default=4, help="N: batches a step when accumulating")
    ap.add_argument("--clips", type=int, default=4, help="clips of 16 frames in each accumulated batch")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--setting", choices=("one", "accumulate"), help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.setting:
        print(json.dumps(run_one(args)))
        return
    rows = {}
    for setting in ("one", "accumulate"):
        child = subprocess.run([sys.executable, __file__, "--setting", setting, *sys.argv[1:]], capture_output=True,
                               text=True, check=True)
        rows[setting] = json.loads(child.stdout.strip().splitlines()[-1])
    n, per_step = args.accumulate, args.accumulate * args.clips
    print(f"device: {platform.machine()}; 4 blocks, width 128, 32x32 frames, patch 4 (65 tokens a frame); "
          f"{per_step} clips of {FRAMES} frames a step; mean of {args.steps - args.warmup} steps after {args.warmup}\n")
    print("| setting | batches a step | clips a batch | step ms | peak memory growth MiB |")
    print("|---|---|---|---|---|")
    for setting, label, batches, clips in (("one", "one batch", 1, per_step),
                                           ("accumulate", f"accumulate {n}", n, args.clips)):
        r = rows[setting]
        print(f"| {label} | {batches} | {clips} | {1e3 * r['step_s']:.0f} | {r['peak_mib']:.0f} |")
    one, acc = rows["one"], rows["accumulate"]
    print(f"\naccumulate/one: step time {acc['step_s'] / one['step_s']:.2f}x, "
          f"peak memory growth {acc['peak_mib'] / max(one['peak_mib'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
