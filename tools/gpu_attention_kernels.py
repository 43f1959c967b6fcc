"""Attention kernels side by side on one CUDA GPU: SDPA's flash, cuDNN and memory-efficient
kernels and compiled FlexAttention, bf16, at the shape of a training batch (8 clips of 16
frames x 257 tokens, width 1024), head dim 64 and 128. Reports forward and forward+backward
time and TFLOP/s (4 L^2 D per clip forward, 3x that for forward+backward).

    python tools/gpu_attention_kernels.py
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

KERNELS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
           "efficient": SDPBackend.EFFICIENT_ATTENTION}


def timed(fn, reps: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=16 * 257)
    ap.add_argument("--width", type=int, default=1024)
    args = ap.parse_args()
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}")
    print("| head dim | kernel | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s |")
    print("|---|---|---|---|---|---|")
    for dh in (64, 128):
        heads = args.width // dh
        q, k, v = (torch.randn(args.clips, heads, args.tokens, dh, device="cuda", dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(3))
        flops = 4 * args.clips * args.tokens**2 * args.width
        calls = {name: (lambda b=b: _with(b, q, k, v)) for name, b in KERNELS.items()}
        calls["flex (compiled)"] = lambda: flex(q, k, v)
        for name, call in calls.items():
            try:
                fwd = timed(lambda: call())
                both = timed(lambda: call().sum().backward())
                print(f"| {dh} | {name} | {1e3 * fwd:.2f} | {flops / fwd / 1e12:.0f} | {1e3 * both:.2f} "
                      f"| {3 * flops / both / 1e12:.0f} |", flush=True)
            except Exception as e:  # a kernel that refuses these inputs is reported, not fatal
                print(f"| {dh} | {name} | error: {type(e).__name__}: {str(e).splitlines()[0][:100]} |", flush=True)


def _with(backend, q, k, v):
    with sdpa_kernel([backend]):
        return F.scaled_dot_product_attention(q, k, v)


if __name__ == "__main__":
    main()
