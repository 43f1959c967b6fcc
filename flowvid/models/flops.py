"""Parameter and FLOP counts of the transformer, for `flowvid model-info` and MFU figures.

FLOPs count matrix multiplications only (2 per multiply-add), the convention of MFU reports;
attention counts only the query-key pairs the mask allows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from flowvid.models.attention import PackedLayout
from flowvid.models.dit import SpatioTemporalDiT

TIME_FEATURES = 256


@dataclass
class ModelInfo:
    parameters: int
    tokens_per_frame: int  # patches + the frame token
    forward_flops: dict[int, int]  # clip length F -> forward FLOPs for one clip of F frames


def count_parameters(cfg) -> int:
    """Parameters of SpatioTemporalDiT(cfg), counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = SpatioTemporalDiT(cfg)
    return sum(p.numel() for p in model.parameters())


def attended_frame_pairs(num_frames: int, window: int = 0, causal: bool = False) -> int:
    """Number of (query frame, key frame) pairs the attention rule allows in one clip."""
    pos = torch.arange(num_frames)
    layout = PackedLayout([0, num_frames], 1, pos, window, causal)
    return int(layout.frame_mask(pos, pos).sum())


def forward_flops(cfg, num_frames: int) -> int:
    """Matmul FLOPs of one forward pass over one clip of `num_frames` frames."""
    d, p, c = cfg.dim, cfg.patch_size, cfg.in_channels
    n = (cfg.height // p) * (cfg.width // p)
    n1 = n + 1
    hidden = int(d * cfg.mlp_ratio)
    per_frame = 2 * n * (p * p * c) * d  # patch embedding
    per_frame += 2 * (TIME_FEATURES * d + d * d)  # time MLP
    per_block = 2 * 6 * d * d + 2 * n1 * (3 * d * d + d * d + 2 * d * hidden)  # adaLN, qkv, proj, MLP
    per_frame += cfg.depth * per_block
    per_frame += 2 * 2 * d * d + 2 * n * d * (p * p * c)  # final adaLN and projection
    per_frame += 2 * (d * d + d)  # insertion-rate head
    pairs = attended_frame_pairs(num_frames, cfg.attention.window, cfg.attention.causal)
    attention = cfg.depth * 2 * 2 * pairs * n1 * n1 * d  # q k^T and (attn) v
    return num_frames * per_frame + attention


def model_info(cfg, frame_counts=(1, 4, 16, 64)) -> ModelInfo:
    n1 = (cfg.height // cfg.patch_size) * (cfg.width // cfg.patch_size) + 1
    return ModelInfo(count_parameters(cfg), n1, {f: forward_flops(cfg, f) for f in frame_counts})
