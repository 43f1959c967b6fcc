"""Transformer cost on CPU: packed vs padded vs one clip at a time, and local-window vs full attention.

1. Forward+backward of a 4-block, dim-128 DiT on a batch of 8 clips of 16 frames (32x32, patch 4,
   65 tokens per frame) whose visible lengths come from InsertionPath.sample_batch, run
   (a) packed (clips concatenated, no padding), (b) padded to the longest clip and masked with
   `valid`, (c) each clip alone (sum of the separate forward+backward times).
2. Forward only (torch.no_grad) of the same model on 16x16 frames (17 tokens per frame), one clip
   of 16, 64 and 256 frames, window 4 vs full attention; each row in a fresh subprocess so that
   its peak resident memory (VmHWM, i.e. its own ru_maxrss, after minus before the
   forward) is its own.
3. The motion-compensated reference (model.reference_search): forward+backward of the real-footage
   interpolation network (dim 256, 32x32, reference skip) on 8 clips of 9 frames, every other frame
   given, with the blend as reference and with block matching (search 6, window 15); the matcher's
   own time is timed alone beside them.

Prints markdown tables (for docs/BENCHMARKS.md); progress goes to stderr. About 3 minutes on 2 cores
with the defaults:

    python tools/bench_model.py [--batches 6] [--reps 5] [--warmup 1] [--long-reps 5]
                                [--lengths 16 64 256] [--window 4] [--threads N] [--skip-packing] [--skip-window]
                                [--skip-reference]
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from flowvid.config import load_config
from flowvid.flow import InsertionPath
from flowvid.models import SpatioTemporalDiT, forward_flops

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny.yaml"
BASE = ["model.dim=128", "model.depth=4", "model.heads=4", "model.patch_size=4"]
CLIPS, FRAMES = 8, 16  # packing batch: clips x full frames per clip
WEIGHTS = {0.0: "[0, 1 + max u] (default)", 1.0: "[0, 1] (insertion phase)"}


def model_config(size: int, window: int = 0):
    return load_config(str(CONFIG), overrides=BASE + [f"model.height={size}", f"model.width={size}",
                                                      f"model.attention.window={window}"]).model


def maxrss_mib() -> float:
    """Peak resident memory of this process in MiB: VmHWM where /proc has it, else ru_maxrss.

    ru_maxrss alone does not do in a child: Linux carries the parent's peak at fork into the child's
    ru_maxrss across exec (signal->maxrss), so a child of this 1 GB benchmark reads >= 1 GB whatever
    it does. VmHWM is the same high-water mark for the child's own address space only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0), so that the import
    and model-building spikes of the child do not hide a smaller forward peak. False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# -- 1. packed vs padded vs singles ---------------------------------------------------------

def packed_inputs(s):
    return (s.x_t, s.t, s.position, s.cu_seqlens), None


def padded_inputs(s):
    """Every clip zero-padded to the longest clip, cu_seqlens all equal, `valid` marks real frames."""
    lengths = s.lengths.tolist()
    b, top = len(lengths), max(lengths)
    shape = s.x_t.shape[1:]
    x = torch.zeros(b * top, *shape, dtype=s.x_t.dtype)
    t = torch.zeros(b * top, dtype=s.t.dtype)
    valid = torch.zeros(b * top, dtype=torch.bool)
    cu = s.cu_seqlens.tolist()
    for i, n in enumerate(lengths):
        x[i * top:i * top + n] = s.x_t[cu[i]:cu[i + 1]]
        t[i * top:i * top + n] = s.t[cu[i]:cu[i + 1]]
        valid[i * top:i * top + n] = True
    position = torch.arange(top).repeat(b)
    cu_pad = (torch.arange(b + 1) * top).to(torch.int32)
    return (x, t, position, cu_pad), valid


def single_inputs(s):
    cu = s.cu_seqlens.tolist()
    return [((s.x_t[lo:hi], s.t[lo:hi], s.position[lo:hi], torch.tensor([0, hi - lo], dtype=torch.int32)), None)
            for lo, hi in zip(cu, cu[1:])]


def fwd_bwd(model, args, valid) -> float:
    """Seconds for one forward+backward; gradients are cleared before, outside the timing."""
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    out = model(*args, valid=valid)
    loss = out.velocity.square().mean() + out.rate.mean()
    loss.backward()
    return time.perf_counter() - t0


def time_modes(model, sample, warmup: int, reps: int) -> dict[str, float]:
    """Median seconds per mode. The modes take turns within each repetition, in an order that rotates
    from one repetition to the next, so that drift and allocator state hit all of them alike."""
    modes = {
        "packed": [packed_inputs(sample)],
        "padded": [padded_inputs(sample)],
        "singles": single_inputs(sample),
    }
    times: dict[str, list[float]] = {k: [] for k in modes}
    names = list(modes)
    for r in range(warmup + reps):
        for name in names[r % 3:] + names[:r % 3]:
            calls = modes[name]
            dt = sum(fwd_bwd(model, a, v) for a, v in calls)
            if r >= warmup:
                times[name].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_packing(args) -> None:
    cfg = model_config(32)
    torch.manual_seed(0)
    model = SpatioTemporalDiT(cfg)
    # adaLN-Zero starts every block as the identity; give the weights some size so that no
    # kernel meets an all-zero tensor (the cost does not depend on it, but keep it realistic).
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0 and p.dim() > 1:
                p.normal_(0, 0.02)
    model.train()
    n1 = model.tokens_per_frame
    print(f"## 1. Packed vs padded vs one clip at a time (forward+backward)\n")
    print(f"{cfg.depth} blocks, dim {cfg.dim}, {cfg.heads} heads, {cfg.height}x{cfg.width} frames, patch "
          f"{cfg.patch_size} ({n1} tokens/frame), backend {cfg.attention.backend.value}; batch of {CLIPS} clips "
          f"of {FRAMES} frames, visible lengths from InsertionPath.sample_batch, {args.batches} batches per "
          f"setting (generator seeds 1000..{999 + args.batches}); median of {args.reps} reps after {args.warmup} "
          f"warm-up, the three modes taking turns; loss = mean(v^2) + mean(rate) over the frames given (padding "
          f"included when padded); gradients cleared between reps, outside the timing.\n")

    flops1 = {m: forward_flops(cfg, m) for m in range(1, FRAMES + 1)}
    rows, detail = [], []
    settings = [(f"w={w}, tau_g on {name}", w) for w, name in WEIGHTS.items()] + [("full length (no deletion)", None)]
    for label, w in settings:
        agg = dict(tok=0, tok_pad=0, att=0, att_pad=0, fl=0, fl_pad=0, packed=0.0, padded=0.0, singles=0.0, vis=[])
        n_batches = args.batches if w is not None else 1
        for seed in range(n_batches):
            g = torch.Generator().manual_seed(1000 + seed)
            clips = [torch.randn(FRAMES, cfg.in_channels, cfg.height, cfg.width, generator=g) for _ in range(CLIPS)]
            path = InsertionPath(insertion_phase_weight=0.0 if w is None else w)
            if w is None:
                sample = path.sample_batch(clips, generator=g, tau=[2.0] * CLIPS)  # tau_g >= 1 + max u: all visible
            else:
                sample = path.sample_batch(clips, generator=g)
            lengths = sample.lengths.tolist()
            top = max(lengths)
            t = time_modes(model, sample, args.warmup, args.reps)
            tok, tok_pad = sum(lengths), CLIPS * top
            att, att_pad = sum(m * m for m in lengths), CLIPS * top * top
            fl, fl_pad = sum(flops1[m] for m in lengths), CLIPS * flops1[top]
            for k, v in dict(tok=tok, tok_pad=tok_pad, att=att, att_pad=att_pad, fl=fl, fl_pad=fl_pad).items():
                agg[k] += v
            for k in ("packed", "padded", "singles"):
                agg[k] += t[k]
            agg["vis"].append(tok / (CLIPS * FRAMES))
            seed_txt = seed if w is not None else "-"
            detail.append(f"| {label} | {seed_txt} | {' '.join(map(str, lengths))} | {tok / tok_pad:.2f} "
                          f"| {fl / fl_pad:.2f} | {t['packed'] * 1e3:.0f} | {t['padded'] * 1e3:.0f} "
                          f"| {t['singles'] * 1e3:.0f} | {t['packed'] / t['padded']:.2f} "
                          f"| {t['packed'] / t['singles']:.2f} |")
            print(f"  [{label}, batch {seed}: lengths {lengths}, packed {t['packed']:.2f}s, padded {t['padded']:.2f}s, "
                  f"singles {t['singles']:.2f}s]", file=sys.stderr, flush=True)
        rows.append(f"| {label} | {n_batches} | {statistics.mean(agg['vis']):.3f} | {agg['tok'] / agg['tok_pad']:.2f} "
                    f"| {agg['att'] / agg['att_pad']:.2f} | {agg['fl'] / agg['fl_pad']:.2f} "
                    f"| {agg['packed'] / n_batches * 1e3:.0f} | {agg['padded'] / n_batches * 1e3:.0f} "
                    f"| {agg['singles'] / n_batches * 1e3:.0f} | {agg['packed'] / agg['padded']:.2f} "
                    f"| {agg['packed'] / agg['singles']:.2f} |")

    print("| setting | batches | mean visible fraction | tokens packed/padded | attention pairs packed/padded "
          "| FLOPs packed/padded | packed ms | padded ms | singles ms (sum of 8) | time packed/padded "
          "| time packed/singles |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nRatios over a setting are of totals over its batches; ms are means per batch. "
          "Targets: packed/singles <= 1.10; packed/padded near the token (FLOP) ratio.\n")
    print("Per batch:\n")
    print("| setting | seed | visible lengths | tokens packed/padded | FLOPs packed/padded | packed ms | padded ms "
          "| singles ms | packed/padded | packed/singles |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(detail))
    print()


# -- 2. local window vs full attention ------------------------------------------------------

def child(args) -> None:
    """One configuration in a fresh process: peak-memory delta of the first forward, then timings."""
    torch.manual_seed(0)
    cfg = model_config(16, args.child_window)
    model = SpatioTemporalDiT(cfg).eval()
    c = (cfg.in_channels, cfg.height, cfg.width)

    def inputs(n):
        return (torch.randn(n, *c), torch.rand(n), torch.arange(n), torch.tensor([0, n], dtype=torch.int32))

    with torch.no_grad():
        model(*inputs(2))  # library initialisation, outside the measured peak
        x = inputs(args.child_frames)
        reset = reset_peak()
        before, ru_before = maxrss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        model(*x)
        first = time.perf_counter() - t0
        peak = maxrss_mib() - before
        ru_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - ru_before
        times = []
        for r in range(args.warmup + args.long_reps):
            t0 = time.perf_counter()
            model(*x)
            if r >= args.warmup:
                times.append(time.perf_counter() - t0)
    print(json.dumps(dict(frames=args.child_frames, window=args.child_window, peak_mib=peak, reset=reset,
                          ru_maxrss_delta_mib=ru_peak, base_mib=before, first_s=first,
                          median_s=statistics.median(times), times=times)))


def bench_window(args) -> None:
    cfg = model_config(16)
    n1 = (cfg.height // cfg.patch_size) * (cfg.width // cfg.patch_size) + 1
    print(f"## 2. Local window (W={args.window}) vs full attention, forward only (torch.no_grad)\n")
    print(f"{cfg.depth} blocks, dim {cfg.dim}, {cfg.heads} heads, {cfg.height}x{cfg.width} frames, patch "
          f"{cfg.patch_size} ({n1} tokens/frame), one clip per forward, training length {FRAMES} frames; each row "
          f"in a fresh process: peak = peak RSS (VmHWM, the child's own ru_maxrss) after the first forward minus "
          f"before it (MiB), the peak first reset to the current RSS through /proc/self/clear_refs after a 2-frame "
          f"warm-up forward; time = median of "
          f"{args.long_reps} reps after {args.warmup} warm-up.\n")
    print("| frames | x training length | tokens | attention | GFLOPs (analytic) | ms | GFLOP/s | peak MiB "
          "| RSS before MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    res = {}
    for frames in args.lengths:
        for window in (args.window, 0):
            cmd = [sys.executable, __file__, "--child", "--child-frames", str(frames), "--child-window", str(window),
                   "--warmup", str(args.warmup), "--long-reps", str(args.long_reps),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(f"| {frames} | - | - | {'full' if window == 0 else f'window {window}'} | child failed: "
                      f"{proc.stderr.strip().splitlines()[-1:]} |")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            res[frames, window] = r
            flops = forward_flops(model_config(16, window), frames)
            mode = "full" if window == 0 else f"window {window}"
            note = "" if r["reset"] else " (peak not reset)"
            print(f"| {frames} | {frames / FRAMES:g} | {frames * n1} | {mode} | {flops / 1e9:.2f} "
                  f"| {r['median_s'] * 1e3:.0f} | {flops / r['median_s'] / 1e9:.1f} | {r['peak_mib']:.1f}{note} "
                  f"| {r['base_mib']:.0f} |", flush=True)
    lo, hi = (args.lengths[-2], args.lengths[-1]) if len(args.lengths) >= 2 else (None, None)
    if lo is not None:
        print(f"\nGrowth from {lo} to {hi} frames ({hi / lo:g}x the length):\n")
        print(f"| attention | time {hi}/{lo} | FLOPs {hi}/{lo} | peak memory {hi}/{lo} |")
        print("|---|---|---|---|")
        for window in (args.window, 0):
            if (lo, window) in res and (hi, window) in res:
                a, b = res[lo, window], res[hi, window]
                c = model_config(16, window)
                fr = forward_flops(c, hi) / forward_flops(c, lo)
                mem = f"{b['peak_mib'] / a['peak_mib']:.2f}" if a["peak_mib"] > 0 else "-"
                print(f"| {'full' if window == 0 else f'window {window}'} | {b['median_s'] / a['median_s']:.2f} "
                      f"| {fr:.2f} | {mem} |")
    print()


# -- 3. the motion-compensated reference ---------------------------------------------------------

def bench_reference(args) -> None:
    """Training-step time with the blend and with the block-matched reference, median of --reps."""
    from flowvid.models.dit import nearest_given

    clips, frames = 8, 9
    over = BASE + ["model.dim=256", "model.height=32", "model.width=32", "model.reference_skip=true"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(clips * frames, 3, 32, 32, generator=g)
    context = (torch.arange(frames) % 2 == 0).repeat(clips)  # keyframes every other frame
    t = torch.where(context, 1.0, torch.rand(clips * frames, generator=g))
    position = torch.arange(frames).repeat(clips)
    cu = (torch.arange(clips + 1) * frames).to(torch.int32)
    times = {}
    for search in (0, 6):
        torch.manual_seed(0)
        model = SpatioTemporalDiT(load_config(str(CONFIG), overrides=over + [f"model.reference_search={search}"]).model)
        step = [fwd_bwd(model, (x, t, position, cu, context), None) for _ in range(args.warmup + args.reps)]
        times[search] = statistics.median(step[args.warmup:])
    match = []
    for _ in range(args.warmup + args.reps):
        t0 = time.perf_counter()
        nearest_given(x, context, cu.tolist(), search=6, window=15)
        match.append(time.perf_counter() - t0)
    matcher = statistics.median(match[args.warmup:])
    print(f"## 3. Motion-compensated reference: a training step of {clips} clips x {frames} frames "
          f"(32x32, dim 256, every other frame given)\n")
    print("| reference | forward+backward (s) | ratio |\n|---|---|---|")
    print(f"| blend (model.reference_search=0) | {times[0]:.3f} | 1.00 |")
    print(f"| block matching (model.reference_search=6) | {times[6]:.3f} | {times[6] / times[0]:.2f} |")
    print(f"\nthe matcher alone on the batch ({int((~context).sum())} frames made): {matcher:.3f} s\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=6, help="sampled batches per insertion-phase weight")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per mode and batch (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up repetitions")
    ap.add_argument("--long-reps", type=int, default=5, help="timed repetitions per window/full row")
    ap.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256], help="clip lengths for section 2")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: torch's)")
    ap.add_argument("--skip-packing", action="store_true")
    ap.add_argument("--skip-window", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-frames", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--child-window", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    print(f"# Model benchmarks\n\nmachine: {platform.machine()} {platform.processor() or ''}".rstrip()
          + f", torch {torch.__version__}, threads {torch.get_num_threads()}, python {platform.python_version()}\n")
    t0 = time.perf_counter()
    if not args.skip_packing:
        bench_packing(args)
    if not args.skip_window:
        bench_window(args)
    if not args.skip_reference:
        bench_reference(args)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
