"""The method's math, network-agnostic: schedulers, the insertion path, losses.

Imports neither a network nor Lightning.
"""
from flowvid.flow.losses import (LossTerms, insertion_loss, masked_mean, path_loss, poisson_nll,
                                 rate_and_log_rate, velocity_loss)
from flowvid.flow.path import InsertionPath, PackedPathSample, PathSample, pack, task_masks
from flowvid.flow.schedulers import CosineKappa, CubicKappa, Kappa, LinearKappa, get_kappa
from flowvid.flow.timedist import GlobalTime

__all__ = [
    "CosineKappa", "CubicKappa", "GlobalTime", "InsertionPath", "Kappa", "LinearKappa", "LossTerms",
    "PackedPathSample", "PathSample", "get_kappa", "insertion_loss", "masked_mean", "pack", "path_loss",
    "poisson_nll", "rate_and_log_rate", "task_masks", "velocity_loss",
]
