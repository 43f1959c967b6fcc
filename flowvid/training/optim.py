"""AdamW with decoupled weight decay on matrices only, and a warmup-then-decay schedule."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on the weight matrices of linear layers; none on biases, norms, embeddings and
    learned tokens. Chosen by layer, not by shape: under FSDP every weight is a flat shard."""
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if id(p) in matrices else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Linear warmup to 1 over `warmup` steps, then constant, cosine or linear decay to min_ratio at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * shape


def build_optimizer(model: nn.Module, cfg, total_steps: int):
    """AdamW (fused on CUDA and the CPU) and its LambdaLR schedule, from an OptimConfig."""
    # On the CPU torch would loop over the tensors one by one: the fused step is 3.5-4x faster
    # (e.g. 95 -> 24 ms for 33M parameters on 2 cores). Other devices keep torch's default.
    fused = True if next(model.parameters()).device.type in ("cuda", "cpu") else None
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
    schedule = getattr(cfg.schedule, "value", cfg.schedule)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg.warmup_steps, total_steps, schedule, cfg.min_lr_ratio))
    return opt, sched


def apply_settings(opt: torch.optim.Optimizer, sched, cfg) -> list[str]:
    """Put an OptimConfig's learning rate, betas and weight decay into an optimizer and its
    schedule whose state a checkpoint restored (which holds the settings it was saved with), so
    that a run resumed with other settings trains with them. The schedule's shape (warmup,
    decay) comes from the config already: LambdaLR keeps no function in its state. Returns what
    changed, as "name old -> new"."""
    before = [dict(g) for g in opt.param_groups]
    sched.base_lrs = [cfg.lr] * len(opt.param_groups)
    for group, decay, lam in zip(opt.param_groups, (cfg.weight_decay, 0.0), sched.lr_lambdas):
        group.update(initial_lr=cfg.lr, lr=cfg.lr * lam(sched.last_epoch), betas=tuple(cfg.betas),
                     weight_decay=decay)
    sched._last_lr = [g["lr"] for g in opt.param_groups]  # what get_last_lr() reports
    changed = []
    for key, name in (("initial_lr", "optim.lr"), ("betas", "optim.betas"), ("weight_decay", "optim.weight_decay")):
        old, new = before[0].get(key), opt.param_groups[0][key]
        if old is not None and tuple(np.atleast_1d(old)) != tuple(np.atleast_1d(new)):
            changed.append(f"{name} {old} -> {new}")
    return changed
