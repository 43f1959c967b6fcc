"""Shared by the training tests: tiny configs and reading parameters back from checkpoints."""
from __future__ import annotations

import torch

from flowvid.config import load_config

FAST = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "train.checkpoint_every=10"]


def tiny(*overrides):
    return load_config("configs/tiny.yaml", [*FAST, *overrides])


def ckpt_params(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in state["state_dict"].items() if k.startswith("model.")}


def assert_same_params(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"largest parameter difference {worst:.3g} > {atol}"
