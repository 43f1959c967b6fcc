"""Losses of the insertion path: masked velocity regression and Poisson NLL of insertion counts."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

RATE_LINKS = ("softplus", "exp")
# Below this head value softplus(x) == exp(x) to float precision; using x itself as log lambda
# avoids log(0) when softplus underflows.
_SOFTPLUS_LOG_LINEAR = -15.0


@dataclass
class LossTerms:
    total: Tensor  # velocity + w_ins * insertion
    velocity: Tensor
    insertion: Tensor


def _at_least_float32(x: Tensor) -> Tensor:
    """Losses are reduced in float32 (or float64 if given) even when the network runs in bf16."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of values[mask]; 0 (still differentiable) when the mask is empty."""
    values = torch.where(mask, values, torch.zeros_like(values))
    return values.sum() / mask.sum().clamp_min(1)


VELOCITY_WEIGHTINGS = ("uniform", "clean")


def velocity_loss(v_pred: Tensor, v_target: Tensor, flowing: Tensor, t: Tensor | None = None,
                  weighting: str = "uniform") -> Tensor:
    """mean over flowing frames of w_i ||v_hat_i - v_i||^2 / D, D = elements per frame.

    w_i = 1 (uniform) or (1 - t_i)^2 (clean: ||x1_hat_i - x1_i||^2 / D with x1_hat = x_t + (1 - t) v_hat).
    Dividing by D keeps the balance against the insertion loss independent of frame size.
    """
    error = per_frame_velocity_error(v_pred, v_target)
    weighting = getattr(weighting, "value", weighting)
    if weighting == "clean":
        if t is None:
            raise ValueError("the clean velocity weighting needs the frames' times t")
        error = error * (1 - _at_least_float32(t)).pow(2)
    elif weighting != "uniform":
        raise ValueError(f"unknown velocity weighting {weighting!r}; expected one of {list(VELOCITY_WEIGHTINGS)}")
    return masked_mean(error, flowing)


def per_frame_velocity_error(v_pred: Tensor, v_target: Tensor) -> Tensor:
    """(m,) ||v_hat_i - v_i||^2 / D per frame."""
    if v_pred.shape != v_target.shape:
        raise ValueError(f"velocity prediction {tuple(v_pred.shape)} and target {tuple(v_target.shape)} differ")
    diff = _at_least_float32(v_pred) - _at_least_float32(v_target)
    return diff.pow(2).flatten(1).mean(1)


def rate_and_log_rate(head: Tensor, link: str = "softplus") -> tuple[Tensor, Tensor]:
    """lambda = softplus(head) or exp(head), and log lambda computed stably."""
    link = getattr(link, "value", link)
    head = _at_least_float32(head)
    if link == "exp":
        return head.exp(), head
    if link == "softplus":
        lam = F.softplus(head)
        log_lam = torch.where(head < _SOFTPLUS_LOG_LINEAR, head, lam.clamp_min(1e-30).log())
        return lam, log_lam
    raise ValueError(f"unknown rate link {link!r}; expected one of {list(RATE_LINKS)}")


def poisson_nll(head: Tensor, k: Tensor, link: str = "softplus") -> Tensor:
    """Per-frame -log Poisson(k; lambda) = lambda - k log lambda + log k!  (log k! is constant in lambda)."""
    lam, log_lam = rate_and_log_rate(head, link)
    k = k.to(lam.dtype)
    return lam - k * log_lam + torch.lgamma(k + 1)


def insertion_loss(head: Tensor, k: Tensor, active: Tensor, link: str = "softplus") -> Tensor:
    """mean over active frames of the Poisson NLL of the insertion counts k_i."""
    return masked_mean(poisson_nll(head, k, link), active)


def path_loss(v_pred: Tensor, rate_head: Tensor, sample, insertion_weight: float = 1.0,
              link: str = "softplus", weighting: str = "uniform") -> LossTerms:
    """L = velocity loss + w_ins * insertion loss, for a PathSample or PackedPathSample."""
    lv = velocity_loss(v_pred, sample.v_target, sample.flowing, sample.t, weighting)
    li = insertion_loss(rate_head, sample.k, sample.active, link)
    return LossTerms(total=lv + insertion_weight * li, velocity=lv, insertion=li)
