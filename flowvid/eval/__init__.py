"""Metrics as plain functions on uint8 (F, H, W, 3) clips or feature arrays; no Lightning.

frechet (Frechet distance), fvd (I3D features and FVD), i3d (the I3D network and its weights),
pixels (PSNR, SSIM), interpolation (the drop-and-restore protocol and its baselines), length
(length histograms), physics (bouncing-balls trajectories); run is what `flowvid eval` calls.
"""
from flowvid.eval.frechet import FeatureStats, feature_stats, frechet_distance, frechet_distance_of
from flowvid.eval.pixels import psnr, psnr_frames, ssim, ssim_frames

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "frechet_distance_of", "psnr", "psnr_frames", "ssim",
           "ssim_frames"]
