"""Visible-frame fraction of the insertion path: measured from the implementation vs closed form.

E[m/F] is proportional to token cost, E[(m/F)^2] to attention cost; their inverses are the
training-cost ratios against a full-sequence flow (which always sees all F frames).
Prints a markdown table for docs/BENCHMARKS.md.

    python tools/bench_path.py [--frames 16 32] [--draws 20000]
"""
from __future__ import annotations

import argparse
import platform
import time

from flowvid.flow import InsertionPath
from flowvid.flow.stats import closed_form_visible_stats, limit_visible_stats, measured_visible_stats

RANGES = {0.0: "[0, 1 + max u] (default)", 0.5: "50/50 mixture", 1.0: "[0, 1] (insertion phase)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--kappas", nargs="+", default=["linear", "cubic", "cosine"])
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, draws={args.draws}, n_start=2\n")
    print("| kappa | tau_g uniform on | F | E[m/F] measured | closed form | E[(m/F)^2] measured | closed form "
          "| F->inf E[m/F] | F->inf E[(m/F)^2] | token ratio | attention ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for kappa in args.kappas:
        for w, name in RANGES.items():
            lim = limit_visible_stats(kappa, w)
            for F in args.frames:
                got = measured_visible_stats(InsertionPath(kappa=kappa, insertion_phase_weight=w), F, args.draws)
                cf = closed_form_visible_stats(kappa, 2, F, w)
                print(f"| {kappa} | {name} | {F} | {got.mean:.4f} ± {got.mean_err:.4f} | {cf.mean:.4f} "
                      f"| {got.mean_sq:.4f} ± {got.mean_sq_err:.4f} | {cf.mean_sq:.4f} | {lim.mean:.4f} "
                      f"| {lim.mean_sq:.4f} | {got.token_ratio:.2f}x | {got.attention_ratio:.2f}x |")
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
