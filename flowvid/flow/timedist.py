"""Distributions of the global time tau_g on an interval [lo, hi)."""
from __future__ import annotations

import torch
from torch import Tensor

from flowvid.errors import UsageError


class GlobalTime:
    """tau_g = lo + (hi - lo) r, with r ~ U(0, 1) (uniform) or r = sigmoid(N(loc, scale^2))."""

    def __init__(self, dist: str = "uniform", loc: float = 0.0, scale: float = 1.0):
        dist = getattr(dist, "value", dist)
        if dist not in ("uniform", "logit_normal"):
            raise UsageError(f"unknown time distribution {dist!r}; expected 'uniform' or 'logit_normal'")
        if scale <= 0:
            raise UsageError(f"logit-normal scale must be > 0, got {scale}")
        self.dist, self.loc, self.scale = dist, loc, scale

    def unit(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """n draws of r in [0, 1)."""
        if self.dist == "uniform":
            return torch.rand(n, generator=generator, device=device)
        z = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.loc + self.scale * z)

    def __repr__(self) -> str:
        return f"GlobalTime({self.dist!r}, loc={self.loc}, scale={self.scale})"
