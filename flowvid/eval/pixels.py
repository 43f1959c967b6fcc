"""Per-frame fidelity against a reference: PSNR and SSIM on uint8 RGB clips (F, H, W, 3).

The protocol of the frame-interpolation literature: RGB, values 0-255, one score per frame,
averaged over frames; SSIM with Wang et al.'s 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
K2 = 0.03, computed per channel over the window's valid positions and averaged.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from flowvid.devices import to_device

PEAK = 255.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 (F, H, W, 3) clips of one shape as float64 tensors."""
    x, y = (torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for v in (a, b))
    for name, v in (("prediction", x), ("reference", y)):
        if v.dtype != torch.uint8 or v.dim() != 4 or v.shape[-1] != 3:
            raise ValueError(f"the {name} must be uint8 (F, H, W, 3) RGB frames, got {v.dtype} {tuple(v.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"clips differ in shape: {tuple(x.shape)} against a reference of {tuple(y.shape)}")
    return x.double(), y.double()


def psnr_frames(pred, ref) -> np.ndarray:
    """(F,) PSNR_f = 10 log10(255^2 / MSE_f), MSE_f over the frame's H x W x 3 values; inf where equal."""
    x, y = _pair(pred, ref)
    mse = (x - y).pow(2).mean(dim=(1, 2, 3)).numpy()
    with np.errstate(divide="ignore"):
        return 10 * np.log10(PEAK**2 / mse)


def psnr(pred, ref) -> float:
    """Mean over frames of PSNR_f (inf when every frame is equal to its reference)."""
    return float(np.mean(psnr_frames(pred, ref)))


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(1, 1, size, size) separable Gaussian weights summing to 1."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


@functools.lru_cache(maxsize=8)
def _window_on(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The Gaussian window on a device, made and copied once (the SSIM loss runs every training step)."""
    return to_device(_gaussian_window(), device).to(dtype)


def ssim_frames(pred, ref) -> np.ndarray:
    """(F,) SSIM_f: the mean over channels and valid window positions of ssim_map."""
    x, y = _pair(pred, ref)
    f, h, w, c = x.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {w}x{h}")
    s = ssim_map(x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2), PEAK)  # (F, 3, H', W')
    return s.reshape(f, -1).mean(dim=1).numpy()  # (F,)


def ssim_map(x: torch.Tensor, y: torch.Tensor, peak: float) -> torch.Tensor:
    """(N, C, H', W') SSIM at each valid window position of each channel, differentiable:

    SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
    with Gaussian-weighted local means mu, variances s^2 and covariance s_xy, C1 = (0.01 peak)^2,
    C2 = (0.03 peak)^2; x, y float (N, C, H, W) with values in [0, peak]."""
    n, c, h, w = x.shape
    x, y = x.reshape(n * c, 1, h, w), y.reshape(n * c, 1, h, w)  # (N*C, 1, H, W): each channel alone
    win = _window_on(x.device, x.dtype)  # (1, 1, 11, 11)
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    var_x = F.conv2d(x * x, win) - mu_x**2
    var_y = F.conv2d(y * y, win) - mu_y**2
    cov = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    s = (2 * mu_x * mu_y + c1) * (2 * cov + c2) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.reshape(n, c, *s.shape[-2:])


def ssim(pred, ref) -> float:
    """Mean over frames of SSIM_f (1 for identical clips)."""
    return float(np.mean(ssim_frames(pred, ref)))

