"""Parameter and FLOP counts of the transformer, for `flowvid model-info` and MFU figures.

FLOPs count matrix multiplications only (2 per multiply-add), the convention of MFU reports;
attention counts only the query-key pairs the mask allows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from flowvid.errors import UsageError
from flowvid.models.attention import PackedLayout
from flowvid.models.dit import SpatioTemporalDiT

TIME_FEATURES = 256


@dataclass
class ModelInfo:
    parameters: int
    tokens_per_frame: int  # patches + the frame token
    forward_flops: dict[int, int]  # clip length F -> forward FLOPs for one clip of F frames


def count_parameters(cfg) -> int:
    """Parameters of SpatioTemporalDiT(cfg), in closed form: no network is built, so an absurd
    config (dim 10^6, depth 10^5) is sized in microseconds before anything is allocated."""
    d, ppc, hidden = cfg.dim, cfg.patch_size ** 2 * cfg.in_channels, int(cfg.dim * cfg.mlp_ratio)
    linear = lambda i, o: i * o + o  # noqa: E731 - weight and bias
    block = (linear(d, 3 * d) + linear(d, d) + linear(d, hidden) + linear(hidden, d) + linear(d, 6 * d)
             + (2 * (d // cfg.heads) if cfg.qk_norm else 0))
    embed = linear(ppc, d) + d + linear(TIME_FEATURES, d) + linear(d, d) + SpatioTemporalDiT.NUM_FLAGS * d
    embed += ppc * d if cfg.reference_input else 0  # the reference's patch embedding (no bias)
    labels = (cfg.num_classes + 1) * d if cfg.num_classes else 0
    labels += linear(TIME_FEATURES, d) if cfg.length_embedding else 0
    heads = linear(d, 2 * d) + linear(d, ppc) + 2 * d + linear(d, d) + linear(d, 1)
    return embed + labels + (cfg.depth + cfg.rate_blocks) * block + heads


TRAINING_BYTES_PER_PARAMETER = 20  # fp32 weights, gradients, two Adam moments and the EMA copy


def check_model_fits(cfg, device: str | torch.device, training: bool) -> None:
    """Refuse, in one line, a network whose weights (and, to train, gradients, Adam moments and EMA)
    exceed the device's whole memory: it could only end in an allocator error later."""
    check_parameters_fit(count_parameters(cfg), device, training, f"dim {cfg.dim}, depth {cfg.depth}",
                         "lower model.dim or model.depth")


def check_parameters_fit(n: int, device: str | torch.device, training: bool, what: str, advice: str) -> None:
    """check_model_fits for any network of n parameters (`what` describes it, `advice` says what to lower)."""
    device = torch.device(device)
    need = n * (TRAINING_BYTES_PER_PARAMETER if training else 4)
    have = device_memory(device)
    if need > have:
        raise UsageError(f"the model has {n:.3g} parameters ({what}), which need "
                         f"{need / 2**30:,.1f} GiB {'to train' if training else 'of weights'}; the {device.type} "
                         f"has {have / 2**30:,.1f} GiB in all: {advice}")


def device_memory(device: torch.device) -> int:
    """Total bytes of the device's memory (host RAM for the CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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
    per_frame = 2 * n * (p * p * c) * d * (2 if cfg.reference_input else 1)  # patch (and reference) embedding
    per_frame += 2 * (TIME_FEATURES * d + d * d)  # time MLP
    per_frame += 2 * TIME_FEATURES * d if cfg.length_embedding else 0  # frame-count embedding
    per_block = 2 * 6 * d * d + 2 * n1 * (3 * d * d + d * d + 2 * d * hidden)  # adaLN, qkv, proj, MLP
    per_frame += (cfg.depth + cfg.rate_blocks) * per_block
    per_frame += 2 * 2 * d * d + 2 * n * d * (p * p * c)  # final adaLN and projection
    per_frame += 2 * (d * d + d)  # insertion-rate head
    pairs = attended_frame_pairs(num_frames, cfg.attention.window, cfg.attention.causal)
    attention = (cfg.depth + cfg.rate_blocks) * 2 * 2 * pairs * n1 * n1 * d  # q k^T and (attn) v
    return num_frames * per_frame + attention


def model_info(cfg, frame_counts=(1, 4, 16, 64)) -> ModelInfo:
    n1 = (cfg.height // cfg.patch_size) * (cfg.width // cfg.patch_size) + 1
    return ModelInfo(count_parameters(cfg), n1, {f: forward_flops(cfg, f) for f in frame_counts})
