"""Training throughput of the insertion path against the full-sequence baseline, in one run.

Same network, same data (the same synthetic clips of 16 frames), same batches, same trainer:
only `path.kind` (and the global-time distribution) changes. For each setting it times real
training steps (forward, backward, AdamW, EMA) and reports clips/s, tokens/s and the speed-up
over full-sequence training, next to the cost ratio the steps allowed: forward FLOPs of the
steps' clips at full length over those of the frames they really showed (flowvid.models.flops).
Efficiency = measured speed-up / allowed ratio (target >= 0.9); the token ratio (full frames
over visible frames) is shown too, since on CPU step time follows tokens more than FLOPs. With
--compile, steps after warm-up during which torch.compile compiled a graph are left out (and counted).

    python tools/bench_train.py [--steps 16] [--warmup 4] [--rounds 2] [--patch 4] [--clips 8]

--patch 2 (257 tokens a frame, 4,112 a clip) makes attention most of the work, as at real sizes.
On a CUDA device, --gpu trains in bf16-mixed and adds model FLOPs utilisation (MFU: 3 x the
forward FLOPs of the visible frames / step time / the card's dense bf16 peak), e.g. the B preset
on 64x64 frames for each attention backend:

    python tools/bench_train.py --gpu --preset B --size 64 --patch 4 --backend flex [--compile]
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
from torch._dynamo.utils import counters

from flowvid.config import load_config
from flowvid.data.module import VideoDataModule
from flowvid.flow import InsertionPath
from flowvid.models import forward_flops
from flowvid.training.module import FlowceptionModule
from gpu_bench import peak_flops, sync  # tools/: the script's own folder is on the path

FRAMES = 16
SETTINGS = {
    "full sequence": ["path.kind=full_sequence"],
    "insertion, tau_g on [0, 1 + max u]": ["path.time.insertion_phase_weight=0.0"],
    "insertion, 50/50 mixture": ["path.time.insertion_phase_weight=0.5"],
    "insertion, tau_g on [0, 1]": ["path.time.insertion_phase_weight=1.0"],
}


class StepTimer(L.Callback):
    """Step times, and whether torch.compile compiled a graph during each step (compiled blocks
    compile again when batch shapes cross a size threshold, which can happen after warm-up)."""

    def __init__(self):
        self.times, self.compiled, self._t0, self._graphs = [], [], 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, idx):
        sync()
        self._graphs = compiled_graphs()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, idx):
        sync()
        self.times.append(time.perf_counter() - self._t0)
        self.compiled.append(compiled_graphs() != self._graphs)


def compiled_graphs() -> int:
    return counters["stats"]["unique_graphs"]


def tokens_per_frame(args) -> int:
    return (args.size // args.patch) ** 2 + 1  # patches plus the frame token


def config(extra: list[str], args):
    files = ["configs/base.yaml"] + ([f"configs/model/{args.preset}.yaml"] if args.preset else [])
    model = [] if args.preset else ["model.dim=128", "model.depth=4", "model.heads=4"]
    device = (["trainer.accelerator=gpu", "trainer.devices=1", "trainer.precision=bf16-mixed", "data.num_workers=8"]
              if args.gpu else ["trainer.accelerator=cpu"]) + [f"train.compile={str(args.compile).lower()}"]
    return load_config(files, [
        *model, *device, f"model.attention.backend={args.backend}", f"model.height={args.size}",
        f"model.width={args.size}", f"model.patch_size={args.patch}", f"data.height={args.size}",
        f"data.width={args.size}", f"data.min_frames={FRAMES}",
        f"data.max_frames={FRAMES}", f"data.tokens_per_batch={args.clips * FRAMES * tokens_per_frame(args)}",
        "data.synthetic.num_clips=256", "data.synthetic.val_clips=0",
        f"trainer.max_steps={args.steps}", "trainer.limit_val_batches=0", *extra])


def allowed_ratio(cfg, lengths: list[list[int]]) -> float:
    """FLOPs of the steps' clips at full length over FLOPs of the frames they really showed."""
    full = sum(forward_flops(cfg.model, FRAMES) * len(step) for step in lengths)
    return full / sum(forward_flops(cfg.model, m) for step in lengths for m in step)


def measure(cfg, warmup: int) -> tuple[float, list[list[int]], int]:
    """(mean step seconds, visible frames of each clip of each step, steps left out) over the steps
    after warm-up that compiled nothing. The mean, not the median: the allowed ratio sums the same
    steps' FLOPs, and step costs are skewed. A step is timed from its batch's arrival to the end of
    the optimizer step and EMA: loading is not in it."""
    L.seed_everything(cfg.seed, verbose=False)
    module, timer = FlowceptionModule(cfg), StepTimer()
    visible = []
    original = module.path.sample_batch

    def counting(*args, **kwargs):
        s = original(*args, **kwargs)
        visible.append(s.lengths)  # read after the run: .tolist() here would wait for the GPU inside the step
        return s

    module.path.sample_batch = counting
    t = cfg.trainer
    L.Trainer(max_steps=t["max_steps"], accelerator=t["accelerator"], devices=1,
              precision=t.get("precision", "32-true"), logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
              use_distributed_sampler=False).fit(module, datamodule=VideoDataModule(cfg))
    visible = [v.tolist() for v in visible]
    kept = [i for i in range(warmup, len(timer.times)) if not timer.compiled[i]]
    if not kept:
        raise SystemExit(f"every step after the {warmup} warm-up steps compiled a graph: raise --steps or --warmup")
    return statistics.mean(timer.times[i] for i in kept), [visible[i] for i in kept], len(timer.times) - warmup - len(kept)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--patch", type=int, default=4, choices=(2, 4, 8, 16))
    ap.add_argument("--size", type=int, default=32, help="frame side in pixels")
    ap.add_argument("--clips", type=int, default=8, help="clips a step")
    ap.add_argument("--gpu", action="store_true", help="one CUDA device, bf16-mixed; adds MFU")
    ap.add_argument("--preset", default="", help="a model preset (configs/model/NAME.yaml) instead of the small net")
    ap.add_argument("--backend", default="sdpa", help="attention backend: sdpa | flex | varlen | xformers | reference")
    ap.add_argument("--compile", action="store_true", help="compile the transformer blocks (train.compile)")
    args = ap.parse_args()
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device; none is visible here")
    tpf = tokens_per_frame(args)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    device = torch.cuda.get_device_name() if args.gpu else f"{platform.machine()}, {torch.get_num_threads()} threads"
    print(f"device: {device}, torch {torch.__version__}; {args.preset or '4 blocks, width 128'}, {args.backend}"
          f"{', compiled' if args.compile else ''}, {args.size}x{args.size} frames, patch {args.patch} ({tpf} "
          f"tokens/frame); {args.clips} clips of {FRAMES} frames a step; mean of {args.steps - args.warmup} steps "
          f"after {args.warmup}\n")
    # Settings take turns over `rounds` rounds and each keeps its fastest round: load from other
    # processes on a shared machine then slows every setting alike instead of one of them.
    rows: dict = {}
    for _ in range(args.rounds):
        for name, extra in SETTINGS.items():
            cfg = config(extra, args)
            t, lengths, left_out = measure(cfg, args.warmup)
            if left_out:
                print(f"{name}: {left_out} step(s) after warm-up compiled and are left out", flush=True)
            if name not in rows or t < rows[name][0][0]:
                rows[name] = ((t, lengths), cfg)
    (base_t, _), _ = rows["full sequence"]
    peak = peak_flops() if args.gpu else None
    mfu_head, mfu_rule = (" MFU |", "---|") if args.gpu else ("", "")
    print("| setting | visible frames/step | step ms | clips/s | tokens/s | speed-up | allowed (FLOPs) | efficiency "
          f"| allowed (tokens) | efficiency |{mfu_head}")
    print(f"|---|---|---|---|---|---|---|---|---|---|{mfu_rule}")
    for name, ((t, lengths), cfg) in rows.items():
        allowed = allowed_ratio(cfg, lengths)
        vis = float(np.mean([sum(step) for step in lengths]))
        speed = base_t / t
        tokens = args.clips * FRAMES / vis
        mfu = ""
        if args.gpu:  # forward + backward = 3 x the forward FLOPs of the frames the steps showed
            flops = 3 * float(np.mean([sum(forward_flops(cfg.model, m) for m in step) for step in lengths]))
            mfu = f" {100 * flops / t / peak:.1f}% |"
        print(f"| {name} | {vis:.1f} | {1e3 * t:.0f} | {args.clips / t:.1f} | {vis * tpf / t:,.0f} | {speed:.2f}x "
              f"| {allowed:.2f}x | {speed / allowed:.2f} | {tokens:.2f}x | {speed / tokens:.2f} |{mfu}")


if __name__ == "__main__":
    main()
