"""Export EMA weights for the sampling tools, and load a model from an export or a checkpoint.

An export folder holds `model.safetensors` (the EMA weights) and `config.yaml` (the run's whole
config: the model section builds the network, the path section tells the sampler kappa and
n_start). Loading never unpickles arbitrary objects: safetensors holds tensors only, and
Lightning checkpoints are read with torch.load(weights_only=True).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from torch import nn

from flowvid.config import Config, ModelKind, config_from_yaml, load_config, to_yaml
from flowvid.errors import UsageError
from flowvid.io import check_writable, output_set
from flowvid.models import SpatioTemporalDiT
from flowvid.models.flops import check_model_fits, check_parameters_fit

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"


def read_checkpoint(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """(config, EMA weights) from a flowvid Lightning checkpoint."""
    state = open_checkpoint(path)
    cfg = _config_from_yaml(state["flowvid"]["config"], path)
    ema = {k[len("ema."):]: v for k, v in state["state_dict"].items() if k.startswith("ema.")}
    if not ema:
        raise UsageError(f"{path}: holds no EMA weights; expected a .ckpt written by `flowvid train`")
    return cfg, ema


def open_checkpoint(path: str | Path) -> dict:
    """A flowvid training checkpoint, memory-mapped, tensors and plain types only; one-line errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise UsageError(f"{path}: not a readable checkpoint ({type(e).__name__}); expected a flowvid .ckpt") from None
    if not isinstance(state, dict) or "state_dict" not in state or "config" not in state.get("flowvid", {}):
        raise UsageError(f"{path}: not a flowvid training checkpoint (no 'flowvid' section); expected a .ckpt "
                         "written by `flowvid train`")
    return state


def export_checkpoint(ckpt: str | Path, out_dir: str | Path) -> Path:
    """Write out_dir/model.safetensors (EMA weights) and out_dir/config.yaml, as one set."""
    out = check_writable(out_dir, "export folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"export folder {str(out)!r} is a file; expected a folder")
    cfg, ema = read_checkpoint(ckpt)
    return write_export(ema, cfg, out)


def write_export(weights: dict[str, torch.Tensor], cfg: Config, out_dir: str | Path) -> Path:
    """out_dir/model.safetensors and out_dir/config.yaml, what load_model reads, written as one set."""
    out = Path(out_dir)
    with output_set(out) as tmp:  # both files or neither, never an empty folder
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "flowvid-ema"})
        (tmp / CONFIG).write_text(to_yaml(cfg))
    return out


def network(cfg: Config) -> nn.Module:
    """The network a config trains: the flow model (kind: flow) or the autoencoder (kind: autoencoder)."""
    if cfg.kind == ModelKind.autoencoder:
        from flowvid.autoencoders import VideoAutoencoder

        return VideoAutoencoder(cfg.autoencoder)
    return SpatioTemporalDiT(cfg.model)


def check_network_fits(cfg: Config, device: str | torch.device, training: bool) -> None:
    """The configured network's weights (and, to train, their optimizer state) fit the device."""
    if cfg.kind == ModelKind.flow:
        return check_model_fits(cfg.model, device, training)
    with torch.device("meta"):  # shapes only, no memory
        n = sum(p.numel() for p in network(cfg).parameters())
    check_parameters_fit(n, device, training, f"autoencoder channels {list(cfg.autoencoder.channels)}",
                         "lower autoencoder.channels")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[SpatioTemporalDiT, Config]:
    """The EMA flow model (eval mode) and its config, from an export folder or a .ckpt file."""
    return _load(path, device, ModelKind.flow)


def load_autoencoder(path: str | Path, device: str | torch.device = "cpu"):
    """The EMA autoencoder (eval mode) and its config, from an export folder or a .ckpt file; or a
    pretrained one from a local diffusers folder (flowvid.autoencoders.pretrained), config None."""
    from flowvid.autoencoders.pretrained import is_diffusers_folder, load_diffusers_autoencoder

    if is_diffusers_folder(path):
        return load_diffusers_autoencoder(path, device), None
    return _load(path, device, ModelKind.autoencoder)


def _load(path: str | Path, device: str | torch.device, kind: ModelKind) -> tuple[nn.Module, Config]:
    cfg, weights = read_weights(path)
    if cfg.kind != kind:
        raise UsageError(f"{path} holds a model of kind {cfg.kind.value}; this takes kind {kind.value} (a "
                         f"{'flow model, as the sampling tools do' if kind == ModelKind.flow else 'video autoencoder'})")
    check_network_fits(cfg, device, training=False)
    check_weights_fit(path, weights, cfg, "the weights and the config must come from one run: "
                      "export its checkpoint again with `flowvid export`")
    model = network(cfg)
    model.load_state_dict(weights)
    return model.to(device).eval(), cfg


def check_weights_fit(path: str | Path, weights: dict, cfg: Config, advice: str) -> None:
    """`weights` (name -> tensor) must be those of the network cfg describes, name for name and
    shape for shape; otherwise one line naming the first differences and `advice`."""
    saved = {k: tuple(v.shape) for k, v in weights.items()}
    with torch.device("meta"):  # shapes only, no memory
        wanted = {k: tuple(v.shape) for k, v in network(cfg).state_dict().items()}
    wrong = sorted(k for k in wanted.keys() | saved.keys() if wanted.get(k) != saved.get(k))
    if wrong:
        shown = ", ".join(f"{k}: {saved.get(k)} there, {wanted.get(k)} here" for k in wrong[:3])
        raise UsageError(f"{path} holds another network than the model config ({len(wrong)} tensors differ; "
                         f"{shown}); {advice}")


def read_weights(path: str | Path) -> tuple[Config, dict[str, torch.Tensor]]:
    """(config, EMA weights) from an export folder or a .ckpt file."""
    path = Path(path)
    if path.is_dir():
        if not (path / WEIGHTS).is_file() or not (path / CONFIG).is_file():
            raise UsageError(f"{path}: not a flowvid export (expected {WEIGHTS} and {CONFIG}, from `flowvid export`)")
        cfg = load_config(path / CONFIG)
        try:
            weights = load_file(str(path / WEIGHTS))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type
            raise UsageError(f"{path / WEIGHTS}: not readable safetensors ({e})") from None
    elif path.is_file():
        cfg, weights = read_checkpoint(path)
    else:
        raise UsageError(f"no model at {path} (expected an export folder or a .ckpt file)")
    if cfg.kind == ModelKind.flow and cfg.model.length_embedding and "length_embed.weight" not in weights:
        cfg.model.length_embedding = False  # written before the option existed, whose default is on
    return cfg, weights


def _config_from_yaml(text: str, where) -> Config:
    try:
        return config_from_yaml(text)
    except ValueError as e:
        raise UsageError(f"{where}: its config does not load: {e}") from None
