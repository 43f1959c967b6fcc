"""Frechet distance between Gaussians fitted to two sets of features (FVD, FID).

Everything in float64: a distance is a small difference of large traces, and float32 loses it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeatureStats:
    """Mean and covariance of a set of feature vectors."""

    mean: np.ndarray  # (D,) float64
    cov: np.ndarray  # (D, D) float64, unbiased (divides by N - 1)
    count: int


def feature_stats(features: np.ndarray) -> FeatureStats:
    """mu = mean_i f_i;  Sigma = 1/(N-1) sum_i (f_i - mu)(f_i - mu)^T."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or inf")
    return FeatureStats(f.mean(axis=0), np.cov(f, rowvar=False), f.shape[0])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix by eigendecomposition (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """d^2 = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2).

    The trace term is tr((S_a S_b)^1/2) written with the symmetric PSD matrix S_a^1/2 S_b S_a^1/2,
    whose eigenvalues are real and >= 0: stable where scipy's sqrtm of the non-symmetric product
    returns complex parts on singular covariances (N < D, as FVD with 400 features and few clips).
    """
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {a.mean.shape[0]} and {b.mean.shape[0]}")
    root = _psd_sqrt(a.cov)
    inner = root @ b.cov @ root
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    cross = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = a.mean - b.mean
    d2 = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * cross)
    return max(d2, 0.0)  # rounding can leave -1e-12 for equal inputs


def frechet_distance_of(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Frechet distance between Gaussians fitted to two (N, D) feature arrays."""
    return frechet_distance(feature_stats(features_a), feature_stats(features_b))
