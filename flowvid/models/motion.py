"""A frame between two others by block matching: the motion-compensated reference (model.reference_search).

For a frame at fraction alpha of the way from frame a to frame b, each candidate displacement D (a point
at p in a is at p + D in b; |D_y|, |D_x| <= search pixels, and the nearer of a and b moves by whole
pixels) predicts it twice, from a moved forward and from b moved back:
    a_D(p) = a(p - alpha D),  b_D(p) = b(p + (1 - alpha) D).
Each pixel takes the D whose two predictions agree best over the window around it (mean |a_D - b_D|
plus a small cost for moving, so that a still region keeps D = 0), and the frame is their blend by
distance, (1 - alpha) a_D + alpha b_D. Halfway (alpha = 1/2) D moves in steps of 2 pixels, a quarter of
the way in steps of 4: a finer D, shifted between pixels, measured worse (docs/model.md). Neither the
made frame nor any learned weight enters: this is a classical interpolator, which the network refines
(docs/model.md) and tools/block_matching.py scores.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# per pixel, in the frames' units per channel, times sqrt(|D_y| + |D_x|): about a quarter of a grey
# level on frames in [-1, 1], enough to break a tie towards standing still
MOTION_COST = 0.002


def shifted(x: Tensor, shift: Tensor) -> Tensor:
    """x (M, C, H, W) moved by shift (M, 2) pixels (dy, dx), bilinear, edges repeated: out[p] = x[p - shift]."""
    m, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype)
    xs = torch.arange(w, device=x.device, dtype=x.dtype)
    gy = ys.view(1, h, 1) - shift[:, 0].view(m, 1, 1)  # (M, H, 1) source rows
    gx = xs.view(1, 1, w) - shift[:, 1].view(m, 1, 1)  # (M, 1, W) source columns
    # grid_sample's coordinates run from -1 to 1 across the pixel centres (align_corners=True)
    grid = torch.stack([(2 * gx / max(w - 1, 1) - 1).expand(m, h, w),
                        (2 * gy / max(h - 1, 1) - 1).expand(m, h, w)], dim=-1)  # (M, H, W, 2) as (x, y)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


@torch.no_grad()
def motion_between(a: Tensor, b: Tensor, alpha: Tensor, search: int, window: int) -> Tensor:
    """The frames at fraction alpha (M,) from a to b (M, C, H, W each), by block matching (module doc)."""
    if a.shape != b.shape or a.dim() != 4 or alpha.shape != a.shape[:1]:
        raise ValueError(f"a and b must be (M, C, H, W) alike and alpha (M,), got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}, {tuple(alpha.shape)}")
    dtype = a.dtype
    a, b, alpha = a.float(), b.float(), alpha.float()
    m = a.shape[0]
    # the candidates move the nearer frame by whole pixels s, D = s / its distance: sampling between
    # pixels blurs, and blurred frames agree better (which would favour any such D) and blur the frame made
    near = torch.minimum(alpha, 1 - alpha).clamp(min=1e-6).view(m, 1)  # (M, 1)
    reach = int(math.floor(near.max().item() * search + 1e-6))
    to_a, w = alpha.view(m, 1), alpha.view(m, 1, 1, 1)
    best = torch.full((m, 1, *a.shape[2:]), float("inf"), device=a.device)
    out = torch.empty_like(a)
    for sy in range(-reach, reach + 1):
        for sx in range(-reach, reach + 1):
            d = torch.tensor([[sy, sx]], dtype=a.dtype, device=a.device) / near  # (M, 2) displacement D
            ahead, back = shifted(a, to_a * d), shifted(b, (to_a - 1) * d)
            cost = (ahead - back).abs().mean(1, keepdim=True)  # (M, 1, H, W)
            cost = F.avg_pool2d(cost, window, stride=1, padding=window // 2, count_include_pad=False)
            cost = cost + MOTION_COST * d.abs().sum(1).sqrt().view(m, 1, 1, 1)
            cost = torch.where((d.abs() <= search + 1e-6).all(1).view(m, 1, 1, 1), cost, float("inf"))
            better = cost < best  # (M, 1, H, W)
            best = torch.where(better, cost, best)
            out = torch.where(better, (1 - w) * ahead + w * back, out)
    return out.to(dtype)
