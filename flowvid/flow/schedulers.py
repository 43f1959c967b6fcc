"""Insertion schedulers kappa: the probability that a non-start frame is present at global time s.

Each is monotone on [0, 1] with kappa(0) = 0 and kappa(1) = 1, and gives kappa, its
derivative and its inverse (delays are drawn as u = kappa^{-1}(U), U ~ U(0, 1)).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from flowvid.errors import UsageError


class Kappa:
    name = "base"

    def __call__(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, s: Tensor) -> Tensor:
        raise NotImplementedError

    def inverse(self, p: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearKappa(Kappa):
    """kappa(s) = s."""

    name = "linear"

    def __call__(self, s: Tensor) -> Tensor:
        return s.clamp(0, 1)

    def derivative(self, s: Tensor) -> Tensor:
        return torch.ones_like(s)

    def inverse(self, p: Tensor) -> Tensor:
        return p.clamp(0, 1)


class CubicKappa(Kappa):
    """kappa(s) = s^3: few frames early, most inserted late (cheap training, late growth)."""

    name = "cubic"

    def __call__(self, s: Tensor) -> Tensor:
        return s.clamp(0, 1) ** 3

    def derivative(self, s: Tensor) -> Tensor:
        return 3 * s.clamp(0, 1) ** 2

    def inverse(self, p: Tensor) -> Tensor:
        return p.clamp(0, 1) ** (1.0 / 3.0)


class CosineKappa(Kappa):
    """kappa(s) = 1 - cos(pi s / 2)."""

    name = "cosine"

    def __call__(self, s: Tensor) -> Tensor:
        return 1 - torch.cos(0.5 * math.pi * s.clamp(0, 1))

    def derivative(self, s: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.sin(0.5 * math.pi * s.clamp(0, 1))

    def inverse(self, p: Tensor) -> Tensor:
        return torch.arccos(1 - p.clamp(0, 1)) * (2 / math.pi)


KAPPAS: dict[str, type[Kappa]] = {k.name: k for k in (LinearKappa, CubicKappa, CosineKappa)}


def get_kappa(name: str | Kappa) -> Kappa:
    """A scheduler by name ('linear', 'cubic', 'cosine') or an instance passed through."""
    if isinstance(name, Kappa):
        return name
    key = getattr(name, "value", name)
    if key not in KAPPAS:
        raise UsageError(f"unknown kappa scheduler {key!r}; expected one of {sorted(KAPPAS)}")
    return KAPPAS[key]()
