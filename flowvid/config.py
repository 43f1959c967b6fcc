"""Typed experiment configs: dataclass schemas loaded and validated through OmegaConf.

No torch import here: `flowvid --help` and config checks stay fast.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterator, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message is one line."""


class PathKind(str, Enum):
    insertion = "insertion"
    full_sequence = "full_sequence"
    autoregressive = "autoregressive"


class KappaName(str, Enum):
    linear = "linear"
    cubic = "cubic"
    cosine = "cosine"


class TimeDistName(str, Enum):
    uniform = "uniform"
    logit_normal = "logit_normal"


class RateLink(str, Enum):
    softplus = "softplus"
    exp = "exp"


class AttentionBackend(str, Enum):
    sdpa = "sdpa"
    xformers = "xformers"
    flex = "flex"
    reference = "reference"


@dataclass
class TimeConfig:
    """How the global time tau_g is drawn for each training clip."""

    dist: TimeDistName = TimeDistName.uniform
    loc: float = 0.0  # logit-normal mean
    scale: float = 1.0  # logit-normal standard deviation
    # Probability of drawing tau_g from the insertion phase [lo, 1] only, instead of the
    # whole path [lo, 1 + max u]. 0 follows METHOD.md; larger values train cheaper (fewer
    # visible frames) at the price of fewer late-denoising samples.
    insertion_phase_weight: float = 0.0

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.scale <= 0:
            yield "scale", f"must be > 0, got {self.scale}"
        if not 0.0 <= self.insertion_phase_weight <= 1.0:
            yield "insertion_phase_weight", f"must be in [0, 1], got {self.insertion_phase_weight}"


@dataclass
class PathConfig:
    """The probability path: insertion (the method) or one of the baselines."""

    kind: PathKind = PathKind.insertion
    kappa: KappaName = KappaName.linear
    n_start: int = 2  # frames present at t = 0, frame 0 included
    time: TimeConfig = field(default_factory=TimeConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.n_start < 1:
            yield "n_start", f"must be >= 1 (frame 0 always starts), got {self.n_start}"


@dataclass
class LossConfig:
    insertion_weight: float = 1.0  # w_ins

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.insertion_weight < 0:
            yield "insertion_weight", f"must be >= 0, got {self.insertion_weight}"


@dataclass
class AttentionConfig:
    backend: AttentionBackend = AttentionBackend.sdpa
    window: int = 0  # local temporal window in compacted frames; 0 = full attention
    causal: bool = False  # frames see only earlier frames (the autoregressive baseline)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.window < 0:
            yield "window", f"must be >= 0 (0 = full attention), got {self.window}"


@dataclass
class ModelConfig:
    """The spatiotemporal transformer; frames are pixels or latents of this layout."""

    in_channels: int = 3
    height: int = 32
    width: int = 32
    patch_size: int = 4
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0  # 0 = unconditional; otherwise a null label is added for guidance
    rate_link: RateLink = RateLink.softplus  # lambda = softplus(head) or exp(head)
    qk_norm: bool = True
    rope_theta: float = 10000.0
    grad_checkpointing: bool = False
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        for name in ("in_channels", "height", "width", "patch_size", "dim", "depth", "heads"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if self.heads >= 1 and self.dim % self.heads:
            yield "dim", f"must be divisible by heads={self.heads}, got {self.dim}"
        for name in ("height", "width"):
            if self.patch_size >= 1 and getattr(self, name) % self.patch_size:
                yield name, f"must be a multiple of patch_size={self.patch_size}, got {getattr(self, name)}"
        if self.rope_theta <= 1:
            yield "rope_theta", f"must be > 1, got {self.rope_theta}"
        if self.num_classes < 0:
            yield "num_classes", f"must be >= 0, got {self.num_classes}"


@dataclass
class Config:
    """One whole experiment."""

    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    path: PathConfig = field(default_factory=PathConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    # Lightning Trainer options under Lightning's own names, e.g. trainer.max_steps=20.
    trainer: Dict[str, Any] = field(default_factory=dict)


def load_config(files: str | Path | Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Merge YAML files (in order) and dotted `key=value` overrides onto the schema; validate."""
    if isinstance(files, (str, Path)):
        files = [files]
    merged = OmegaConf.structured(Config)
    try:
        for path in files:
            for part in _expand_defaults(Path(path), seen=()):
                merged = OmegaConf.merge(merged, part)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    validate(cfg)
    return cfg


def validate(cfg: Any, prefix: str = "") -> None:
    """Walk nested dataclasses; raise ConfigError on the first impossible value."""
    if hasattr(cfg, "problems"):
        for name, why in cfg.problems():
            raise ConfigError(f"config key '{prefix}{name}' {why}")
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML: what a run folder stores and load_config reads back."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _expand_defaults(path: Path, seen: tuple[Path, ...]) -> Iterator[Any]:
    """Yield the YAML parts of `path`, its `defaults:` (relative paths) first, in order."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path} includes itself through 'defaults'")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    node = OmegaConf.load(path)
    if not OmegaConf.is_dict(node):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, got a list")
    defaults = node.pop("defaults", None) or []
    if not isinstance(defaults, list) and not OmegaConf.is_list(defaults):
        raise ConfigError(f"{path}: 'defaults' must be a list of YAML paths, got {defaults!r}")
    for rel in defaults:
        yield from _expand_defaults(path.parent / str(rel), seen + (path,))
    yield node


def _one_line(e: OmegaConfBaseException) -> str:
    """OmegaConf's first message line, with the full key and, for an unknown key, the valid ones."""
    msg = str(getattr(e, "msg", None) or e).splitlines()[0].strip()
    key = getattr(e, "full_key", None)
    if not key:
        return msg
    if type(e).__name__ == "ConfigKeyError":
        return f"unknown config key '{key}'; valid keys here: {', '.join(_sibling_keys(key))}"
    return f"config key '{key}': {msg}"


def _sibling_keys(full_key: str) -> list[str]:
    """Field names of the schema node that holds `full_key` (e.g. 'path.nn' -> PathConfig's)."""
    node: Any = Config
    for part in full_key.split(".")[:-1]:
        types = {f.name: f.type for f in dataclasses.fields(node)}
        sub = getattr(node(), part, None) if part in types else None
        if not dataclasses.is_dataclass(sub):
            break
        node = type(sub)
    return [f.name for f in dataclasses.fields(node)]
