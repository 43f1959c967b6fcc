"""Visible-frame statistics of the path: E[m/F] (token cost) and E[(m/F)^2] (attention cost).

Both are measured from the implementation and computed in closed form (an exact integral,
evaluated by quadrature), so that the training-cost ratio against a full-sequence flow is known
before any network runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from flowvid.flow.path import InsertionPath
from flowvid.flow.schedulers import get_kappa


@dataclass
class VisibleStats:
    mean: float  # E[m/F]
    mean_sq: float  # E[(m/F)^2]
    mean_err: float = 0.0  # standard error of the mean (0 for closed forms)
    mean_sq_err: float = 0.0

    @property
    def token_ratio(self) -> float:
        """Full-sequence tokens / insertion tokens: 1 / E[m/F]."""
        return 1.0 / self.mean

    @property
    def attention_ratio(self) -> float:
        """Full-sequence attention cost / insertion attention cost: 1 / E[(m/F)^2]."""
        return 1.0 / self.mean_sq


def measured_visible_stats(path: InsertionPath, num_frames: int, draws: int, seed: int = 0) -> VisibleStats:
    """Draw `draws` path samples of an F-frame clip (no context) and average m/F and (m/F)^2."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.zeros(num_frames, 1, 1, 1)  # (F, C, H, W): only the frame count matters here
    frac = torch.tensor([len(path.sample(x1, generator=g).index) / num_frames for _ in range(draws)],
                        dtype=torch.float64)
    sq = frac.square()
    n = math.sqrt(draws)
    return VisibleStats(frac.mean().item(), sq.mean().item(), frac.std().item() / n, sq.std().item() / n)


def closed_form_visible_stats(kappa: str, n_start: int, num_frames: int,
                              insertion_phase_weight: float = 0.0, grid: int = 1024) -> VisibleStats:
    """E[m/F], E[(m/F)^2] for the insertion path, no context, uniform global time.

    With n = F - n_start delayed frames, U_max = max U_j ~ Beta(n, 1) and M = kappa^{-1}(U_max):
    tau ~ U[0, 1 + M] (weight 1 - w) or U[0, 1] (weight w). For tau < M the other n - 1 frames
    are each visible with probability p = kappa(tau) / U_max, so m = n_start + Binomial(n - 1, p);
    for tau >= M all F frames are visible. Integrated by the midpoint rule on a grid x grid.
    """
    F, s = num_frames, min(n_start, num_frames)
    n = F - s
    if n == 0:
        return VisibleStats(1.0, 1.0)
    kap = get_kappa(kappa)
    mid = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    a = mid ** (1.0 / n)  # U_max by inverse CDF: P(U_max <= a) = a^n
    M = kap.inverse(a)  # (grid,)
    tau = M[:, None] * mid[None, :]  # (grid, grid): tau in [0, M]
    p = (kap(tau) / a[:, None]).clamp(0, 1)
    e1 = s + (n - 1) * p  # E[m | tau < M]
    e2 = e1.square() + (n - 1) * p * (1 - p)  # E[m^2 | tau < M]
    w = insertion_phase_weight
    out = []
    for em, full in ((e1 / F, 1.0), (e2 / F**2, 1.0)):
        during = M * em.mean(1)  # integral over tau in [0, M]
        whole = (during + full * 1.0) / (1 + M)  # tau ~ U[0, 1 + M]
        ins = during + full * (1 - M)  # tau ~ U[0, 1]
        out.append(((1 - w) * whole + w * ins).mean().item())
    return VisibleStats(out[0], out[1])


def limit_visible_stats(kappa: str, insertion_phase_weight: float = 0.0, grid: int = 100_000) -> VisibleStats:
    """F -> infinity: m/F -> kappa(tau); tau ~ U[0, 2] (weight 1 - w) or U[0, 1] (weight w)."""
    kap = get_kappa(kappa)
    s = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    k1, k2 = kap(s).mean().item(), kap(s).square().mean().item()
    w = insertion_phase_weight
    return VisibleStats((1 - w) * (k1 + 1) / 2 + w * k1, (1 - w) * (k2 + 1) / 2 + w * k2)
