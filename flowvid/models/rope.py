"""3D rotary position embedding over (frame, row, column).

Rotary angles encode relative offsets, so any clip length works without a learned table, and
the frame axis uses the compacted positions only (METHOD.md: original indices would leak gaps).
"""
from __future__ import annotations

import torch
from torch import Tensor


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Rotated channels per axis (frame, row, col); each even. A quarter for time, the rest split."""
    dt = (head_dim // 4) // 2 * 2
    ds = ((head_dim - dt) // 2) // 2 * 2
    return dt, ds, ds


class Rope3D(torch.nn.Module):
    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.dims = axis_dims(head_dim)
        for name, d in zip(("t", "h", "w"), self.dims):
            self.register_buffer(f"freq_{name}", theta ** (-torch.arange(0, d, 2, dtype=torch.float32) / d),
                                 persistent=False)

    def angles(self, coords: Tensor) -> tuple[Tensor, Tensor]:
        """coords (T, 3) float -> cos, sin of shape (T, 1, R/2), R = rotated channels."""
        ang = torch.cat([coords[:, i:i + 1].float() * f[None, :]
                         for i, f in enumerate((self.freq_t, self.freq_h, self.freq_w))], dim=1)
        return ang.cos()[:, None, :], ang.sin()[:, None, :]

    @staticmethod
    def apply(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate channel pairs (i, i + R/2) of x (T, H, Dh) by the angles; the rest pass through."""
        half = cos.shape[-1]
        # split, not three slices: its backward is one cat, a slice's a full-size gradient each
        x1, x2, rest = x.split([half, half, x.shape[-1] - 2 * half], dim=-1)
        xf1, xf2 = x1.float(), x2.float()
        out = torch.cat([xf1 * cos - xf2 * sin, xf2 * cos + xf1 * sin], dim=-1).to(x.dtype)
        return torch.cat([out, rest], dim=-1)
