"""The autoencoder's reconstruction loss: L1 at every decoder scale, (1 - SSIM) at full resolution, KL."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from flowvid.autoencoders.model import Encoded
from flowvid.eval.pixels import SSIM_WINDOW, ssim_map


@dataclass
class ReconstructionTerms:
    total: Tensor  # sum_s w_s L1_s + w_ssim (1 - SSIM) + w_kl KL
    l1: Tensor  # at full resolution
    ssim: Tensor  # 1 - SSIM at full resolution (0 when frames are smaller than its window)
    kl: Tensor


def downsampled(x: Tensor, size: tuple[int, int]) -> Tensor:
    """x (M, C, H, W) averaged over blocks to `size` (area downsampling): each coarse output's target."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_avg_pool2d(x, size)


def reconstruction_loss(x: Tensor, outs: list[Tensor], enc: Encoded, cfg) -> ReconstructionTerms:
    """Frames x (M, 3, H, W) in [-1, 1]; outs the decoder's [1/4, 1/2, full] outputs; cfg AutoencoderConfig."""
    total = 0.0
    for w, out in zip(cfg.scale_weights, outs):
        l1 = (out.float() - downsampled(x, out.shape[-2:]).float()).abs().mean()
        total = total + w * l1
    full = outs[-1].float()
    if min(x.shape[-2:]) >= SSIM_WINDOW:
        ssim = 1 - ssim_map((full.clamp(-1, 1) + 1) / 2, (x.float() + 1) / 2, 1.0).mean()
    else:
        ssim = full.new_zeros(())
    kl = enc.kl().float()
    total = total + cfg.ssim_weight * ssim + cfg.kl_weight * kl
    return ReconstructionTerms(total=total, l1=l1, ssim=ssim, kl=kl)
