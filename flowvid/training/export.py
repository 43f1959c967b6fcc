"""Export EMA weights for the sampling tools, and load a model from an export or a checkpoint.

An export folder holds `model.safetensors` (the EMA weights) and `config.yaml` (the run's whole
config: the model section builds the network, the path section tells the sampler kappa and
n_start). Loading never unpickles arbitrary objects: safetensors holds tensors only, and
Lightning checkpoints are read with torch.load(weights_only=True).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from flowvid.config import Config, config_from_yaml, load_config, to_yaml
from flowvid.models import SpatioTemporalDiT

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"


def read_checkpoint(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """(config, EMA weights) from a flowvid Lightning checkpoint."""
    state = open_checkpoint(path)
    cfg = _config_from_yaml(state["flowvid"]["config"], path)
    ema = {k[len("ema."):]: v for k, v in state["state_dict"].items() if k.startswith("ema.")}
    if not ema:
        raise ValueError(f"{path}: holds no EMA weights; expected a .ckpt written by `flowvid train`")
    return cfg, ema


def open_checkpoint(path: str | Path) -> dict:
    """A flowvid training checkpoint, memory-mapped, tensors and plain types only; one-line errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}); expected a flowvid .ckpt") from None
    if not isinstance(state, dict) or "state_dict" not in state or "config" not in state.get("flowvid", {}):
        raise ValueError(f"{path}: not a flowvid training checkpoint (no 'flowvid' section); expected a .ckpt "
                         "written by `flowvid train`")
    return state


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> Path:
    """Write out_dir/model.safetensors (EMA weights) and out_dir/config.yaml; atomically each."""
    cfg, ema = read_checkpoint(ckpt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{WEIGHTS}.tmp-{os.getpid()}"
    try:
        save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp), metadata={"format": "flowvid-ema"})
        os.replace(tmp, out / WEIGHTS)
    finally:
        tmp.unlink(missing_ok=True)
    tmp_cfg = out / f".{CONFIG}.tmp-{os.getpid()}"
    tmp_cfg.write_text(to_yaml(cfg))
    os.replace(tmp_cfg, out / CONFIG)
    return out


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SpatioTemporalDiT, Config]:
    """The EMA model (eval mode) and its config, from an export folder or a .ckpt file."""
    cfg, weights = read_weights(path)
    model = SpatioTemporalDiT(cfg.model)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model its config describes "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval(), cfg


def read_weights(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """(config, EMA weights) from an export folder or a .ckpt file."""
    path = Path(path)
    if path.is_dir():
        if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
            raise ValueError(f"{path}: not a flowvid export (expected {WEIGHTS} and {CONFIG}, from `flowvid export`)")
        cfg = load_config(path / CONFIG)
        try:
            weights = load_file(str(path / WEIGHTS))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise ValueError(f"{path / WEIGHTS}: not readable safetensors ({e})") from None
    elif path.is_file():
        cfg, weights = read_checkpoint(path)
    else:
        raise FileNotFoundError(f"no model at {path} (expected an export folder or a .ckpt file)")
    return cfg, weights


def _config_from_yaml(text: str, where) -> Config:
    try:
        return config_from_yaml(text)
    except ValueError as e:
        raise ValueError(f"{where}: its config does not load: {e}") from None
