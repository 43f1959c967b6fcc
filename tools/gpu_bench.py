"""Training throughput and model FLOPs utilisation (MFU) on one CUDA GPU, bf16-mixed.

Times full training steps (forward, backward, AdamW) of a preset on a packed batch of clips
for each attention backend, eager and with the blocks compiled. MFU = model FLOPs of the
step (3 x forward, flowvid.models.flops) / step time / the card's dense bf16 peak.

    python tools/gpu_bench.py --presets B L --backends sdpa xformers flex --out results.md
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch

from flowvid.config import load_config
from flowvid.models import SpatioTemporalDiT, forward_flops
from flowvid.models.attention import check_backend

# dense bf16 peaks from the vendor datasheets; the first name found in the device's name counts
DENSE_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12, "A100": 312e12}


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_flops() -> float:
    name = device_name()
    return next((v for k, v in DENSE_BF16_PEAK.items() if k in name), float("nan"))


def matmul_rate(device: str, n: int = 8192) -> float:
    n = n if device == "cuda" else 512
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ b
    sync()
    return 10 * 2 * n**3 / (time.perf_counter() - t0)


def batch(cfg, clips: int, frames: int, device: str):
    m = clips * frames
    x = torch.randn(m, cfg.in_channels, cfg.height, cfg.width, device=device)
    t = torch.rand(m, device=device)
    pos = torch.arange(frames, device=device).repeat(clips)
    cu = torch.arange(0, m + 1, frames, device=device, dtype=torch.int32)
    return x, t, pos, cu


def time_steps(model, opt, inputs, warmup: int, reps: int) -> float:
    times = []
    device = inputs[0].device.type
    for i in range(warmup + reps):
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            out = model(*inputs)
        loss = out.velocity.float().square().mean() + out.rate.float().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sdpa_preference(name: str):
    """Context preferring one SDPA kernel (e.g. cuDNN attention on Hopper), others as fallback."""
    if name == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION}
    first = order[name]
    rest = [b for b in (*order.values(), SDPBackend.MATH) if b != first]
    return sdpa_kernel([first, *rest], set_priority=True)


def run_one(preset: str, backend: str, compiled: bool, args) -> dict:
    with sdpa_preference(args.sdpa_kernel):
        row = _run_one(preset, backend, compiled, args)
    return dict(row, sdpa_kernel=args.sdpa_kernel)


def _run_one(preset: str, backend: str, compiled: bool, args) -> dict:
    over = [f"model.attention.backend={backend}", "model.in_channels=16", "model.height=32", "model.width=32",
            "model.patch_size=2", *args.override]
    cfg = load_config(["configs/base.yaml", f"configs/model/{preset}.yaml"], over).model
    check_backend(backend)
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg).to(args.device).train()
    if compiled:
        for blk in model.blocks:
            blk.compile_around_attention()  # as train.compile does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device == "cuda")
    inputs = batch(cfg, args.clips, args.frames, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step = time_steps(model, opt, inputs, args.warmup + (2 if compiled else 0), args.reps)
    flops = 3 * args.clips * forward_flops(cfg, args.frames)
    tokens = args.clips * args.frames * model.tokens_per_frame
    return dict(preset=preset, backend=backend, compiled=compiled, step_s=step, tokens_per_s=tokens / step,
                clips_per_s=args.clips / step, tflops=flops / step / 1e12, mfu=flops / step / peak_flops(),
                peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan"), wall_s=time.perf_counter() - t0,
                params_m=sum(p.numel() for p in model.parameters()) / 1e6, tokens=tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["B", "L"])
    ap.add_argument("--backends", nargs="+", default=["sdpa", "xformers", "flex"])
    ap.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--out", default=None, help="also write the rows as JSON lines here")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script")
    ap.add_argument("--override", nargs="*", default=[], help="extra model config overrides")
    ap.add_argument("--sdpa-kernel", default="default", choices=["default", "cudnn", "flash", "efficient"],
                    help="SDPA kernel to prefer")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"device: {device_name()}, torch {torch.__version__}, "
          f"bf16 square matmul {matmul_rate(args.device) / 1e12:.0f} TFLOP/s, peak used for MFU {peak_flops() / 1e12:.0f}")
    rows = []
    for preset in args.presets:
        for compiled in [c == "on" for c in args.compile]:
            for backend in args.backends:
                try:
                    row = run_one(preset, backend, compiled, args)
                except Exception as e:  # report and go on: one broken backend must not hide the others
                    row = dict(preset=preset, backend=backend, compiled=compiled, error=f"{type(e).__name__}: {e}"[:300])
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    print(f"\nSDPA kernel preference: {args.sdpa_kernel}")
    print("| preset | backend | compiled | tokens/step | step ms | tokens/s | clips/s | TFLOP/s | MFU | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['preset']} | {r['backend']} | {r['compiled']} | error: {r['error'][:120]} |")
            continue
        print(f"| {r['preset']} ({r['params_m']:.0f}M) | {r['backend']} | {r['compiled']} | {r['tokens']} "
              f"| {1e3 * r['step_s']:.0f} | {r['tokens_per_s']:,.0f} | {r['clips_per_s']:.1f} | {r['tflops']:.0f} "
              f"| {100 * r['mfu']:.1f}% | {r['peak_mem_gib']:.1f} |")


if __name__ == "__main__":
    main()
