"""Typed experiment configs: dataclass schemas loaded and validated through OmegaConf.

No torch import here: `flowvid --help` and config checks stay fast.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from flowvid.errors import UsageError


class ConfigError(UsageError):
    """A config file or override that does not fit the schema; the message is one line."""


class PathKind(str, Enum):
    insertion = "insertion"
    full_sequence = "full_sequence"
    autoregressive = "autoregressive"


class KappaName(str, Enum):
    linear = "linear"
    cubic = "cubic"
    cosine = "cosine"


class InsertionOrder(str, Enum):
    random = "random"
    left_to_right = "left_to_right"
    hierarchical = "hierarchical"


class TimeDistName(str, Enum):
    uniform = "uniform"
    logit_normal = "logit_normal"


class VelocityWeighting(str, Enum):
    uniform = "uniform"  # ||v_hat - v||^2 (METHOD.md)
    clean = "clean"  # (1 - t)^2 ||v_hat - v||^2 = the error of the clean frame the velocity implies


class RateLink(str, Enum):
    softplus = "softplus"
    exp = "exp"


class ModelKind(str, Enum):
    flow = "flow"  # the spatiotemporal transformer (section model), trained on the flow path
    autoencoder = "autoencoder"  # a video autoencoder (section autoencoder), trained to reconstruct


class Bottleneck(str, Enum):
    kl = "kl"  # a diagonal Gaussian per latent value, with a KL penalty (Stable Diffusion's VAE)
    plain = "plain"  # deterministic latents


class AttentionBackend(str, Enum):
    sdpa = "sdpa"
    xformers = "xformers"
    flex = "flex"
    varlen = "varlen"
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
class AutoencoderConfig:
    """A video autoencoder: per-frame encoder, multi-scale decoder with causal temporal layers."""

    in_channels: int = 3
    latent_channels: int = 4
    downsample: int = 4  # spatial factor, a power of two >= 4 (the decoder's coarsest output is 1/4)
    channels: List[int] = field(default_factory=lambda: [32, 64, 64])  # per level, full resolution first
    blocks: int = 1  # residual blocks per level
    temporal_kernel: int = 3  # frames each causal temporal layer sees (itself and the ones before)
    # frames a latent frame stands for: 1 + T k frames encode to 1 + k latent frames (frame 0 alone).
    # 1 keeps latents per frame, which the tools that place given frames one by one need
    temporal_factor: int = 1
    bottleneck: Bottleneck = Bottleneck.kl
    kl_weight: float = 1.0e-6
    scale_weights: List[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # L1 at 1/4, 1/2, full
    ssim_weight: float = 0.2  # (1 - SSIM) at full resolution

    @property
    def levels(self) -> int:
        return int(math.log2(self.downsample)) if self.downsample >= 1 else 0

    def problems(self) -> Iterator[tuple[str, str]]:
        d = self.downsample
        if d < 4 or d & (d - 1):
            yield "downsample", f"must be a power of two >= 4 (4 or 8 are usual), got {d}"
        elif len(self.channels) != self.levels + 1 or any(c < 8 or c % 8 for c in self.channels):
            yield "channels", (f"needs log2(downsample) + 1 = {self.levels + 1} widths, each a multiple of 8 (group "
                               f"norm), full resolution first; got {list(self.channels)}")
        if self.in_channels < 1 or self.latent_channels < 1 or self.blocks < 1 or self.temporal_kernel < 1:
            yield "latent_channels", "in_channels, latent_channels, blocks and temporal_kernel must be >= 1"
        if not 1 <= self.temporal_factor <= 16:
            yield "temporal_factor", f"must be 1 (per-frame latents) to 16, got {self.temporal_factor}"
        if len(self.scale_weights) != 3 or any(w < 0 for w in self.scale_weights) or self.scale_weights[-1] <= 0:
            yield "scale_weights", (f"are three weights >= 0 for the 1/4, 1/2 and full-resolution outputs, the last "
                                    f"> 0; got {list(self.scale_weights)}")
        if self.kl_weight < 0 or self.ssim_weight < 0:
            yield "kl_weight", f"kl_weight and ssim_weight must be >= 0, got {self.kl_weight}, {self.ssim_weight}"


@dataclass
class PathConfig:
    """The probability path: insertion (the method) or one of the baselines."""

    kind: PathKind = PathKind.insertion
    kappa: KappaName = KappaName.linear
    n_start: int = 2  # frames present at t = 0, frame 0 included
    # the order frames appear in training: random (i.i.d. delays; the model learns where to
    # insert) or a prescribed one (left_to_right, hierarchical), for the order ablation
    order: InsertionOrder = InsertionOrder.random
    # probability that a clip's frames other than its start and given frames share one delay, so
    # that they appear at once: the state a one-step sampler run of interpolation or completion
    # starts from (all of a gap's frames at t = 0), which independent delays almost never give
    together: float = 0.0
    time: TimeConfig = field(default_factory=TimeConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.n_start < 1:
            yield "n_start", f"must be >= 1 (frame 0 always starts), got {self.n_start}"
        if not 0.0 <= self.together <= 1.0:
            yield "together", f"must be a probability in [0, 1], got {self.together}"
        elif self.together > 0 and (self.kind != PathKind.insertion or self.order != InsertionOrder.random):
            yield "together", ("applies to the insertion path with random order only (path.kind=insertion, "
                               f"path.order=random), got kind {self.kind.value}, order {self.order.value}")


@dataclass
class LossConfig:
    insertion_weight: float = 1.0  # w_ins
    # how each flowing frame's velocity error counts. clean: times (1 - t)^2, which is the squared
    # error of x_t + (1 - t) v_hat against the clean frame: early times, where a frame is made from
    # its neighbours (the first sampler step of interpolation), count as much as late ones, where
    # the error is mostly the noise left to remove (docs/training.md)
    velocity_weighting: VelocityWeighting = VelocityWeighting.uniform

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
    # exported autoencoder whose normalised latents the frames are (data.source: latents); the tools
    # decode what the model makes through it. "" = the frames are pixels
    autoencoder: str = ""
    rate_link: RateLink = RateLink.softplus  # lambda = softplus(head) or exp(head)
    qk_norm: bool = True
    # each frame's conditioning also embeds its clip's number of frames: softmax attention averages
    # and cannot count, and the insertion rate needs the count (how many frames are still missing)
    length_embedding: bool = True
    # each frame also takes as input the given frames nearest it in its clip, blended by distance
    # (one side only: that frame): a still region is then a copy of the frame's own input, which
    # attention from a neighbouring token rebuilds only approximately (docs/model.md)
    reference_input: bool = False
    # the network's output is the clean frame minus the reference, turned into the velocity
    # (reference + output - x_t) / (1 - t): neither the noise nor a still background has to pass
    # through the network, and an untrained one interpolates as its reference does (docs/model.md)
    reference_skip: bool = False
    # > 0: a frame between two given frames takes as reference their block-matched interpolation, which
    # searches displacements up to this many pixels (of the frames the network sees: latents under
    # an autoencoder) and judges each over windows of reference_window pixels; blending cannot follow
    # motion, and on real footage the network did not learn to (docs/model.md). 0 = the blend
    reference_search: int = 0
    reference_window: int = 15
    # with the skip, the frames enter the network as t x_t: its output (the clean frame minus the
    # reference) owes nothing to the starting noise, which then enters as t (1 - t) x0 and is gone
    # at t = 0, where it would otherwise be most of every made frame's tokens (docs/model.md)
    scale_input_by_t: bool = False
    # transformer blocks of the insertion head's own, reading the trunk's output through a stop-gradient:
    # the Poisson loss then trains only them and the head, and the trunk learns from the velocity loss
    # alone (0: the head reads the trunk's frame token and its loss trains the trunk too; docs/model.md)
    rate_blocks: int = 0
    rope_theta: float = 10000.0
    grad_checkpointing: bool = False
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    def problems(self) -> Iterator[tuple[str, str]]:
        for name in ("in_channels", "height", "width", "patch_size", "dim", "depth", "heads"):
            if getattr(self, name) < 1:
                yield name, f"must be >= 1, got {getattr(self, name)}"
        if self.heads >= 1 and self.dim % self.heads:
            yield "dim", f"must be divisible by heads={self.heads}, got {self.dim}"
        elif self.heads >= 1 and self.dim // self.heads < 8:
            yield "heads", f"leave a head dimension >= 8 (rotary positions need it), got dim {self.dim} / {self.heads} heads"
        elif self.attention.backend == AttentionBackend.varlen and not (self.dim // self.heads % 8 == 0
                                                                         and self.dim // self.heads <= 256):
            yield "attention.backend", (f"varlen (flash attention) needs a head dimension that is a multiple of 8 and "
                                        f"at most 256, got dim {self.dim} / {self.heads} heads")
        for name in ("height", "width"):
            if self.patch_size >= 1 and getattr(self, name) % self.patch_size:
                yield name, f"must be a multiple of patch_size={self.patch_size}, got {getattr(self, name)}"
        if self.rope_theta <= 1:
            yield "rope_theta", f"must be > 1, got {self.rope_theta}"
        if self.scale_input_by_t and not self.reference_skip:
            yield "scale_input_by_t", ("needs model.reference_skip=true: without the skip the velocity x1 - x0 "
                                       "needs the starting noise, which t x_t hides at t = 0")
        if self.reference_search < 0:
            yield "reference_search", f"must be >= 0 pixels (0: blend the given frames), got {self.reference_search}"
        elif self.reference_search >= min(self.height, self.width):
            yield "reference_search", (f"must be below the frames' sides ({self.height}x{self.width}): past them a "
                                       f"displacement sees only repeated edges, got {self.reference_search}")
        if self.reference_window < 1 or self.reference_window % 2 == 0:
            yield "reference_window", f"must be an odd number of pixels >= 1, got {self.reference_window}"
        if self.reference_search and not (self.reference_input or self.reference_skip):
            yield "reference_search", "needs model.reference_input or model.reference_skip: nothing reads the reference"
        if self.rate_blocks < 0:
            yield "rate_blocks", f"must be >= 0, got {self.rate_blocks}"
        if self.num_classes < 0:
            yield "num_classes", f"must be >= 0, got {self.num_classes}"
        if not self.dim * self.mlp_ratio >= 1:
            yield "mlp_ratio", f"must be > 0 (MLP width = dim x mlp_ratio >= 1), got {self.mlp_ratio}"


class DataSource(str, Enum):
    synthetic = "synthetic"
    manifest = "manifest"
    latents = "latents"


class ReaderBackend(str, Enum):
    auto = "auto"
    decord = "decord"
    pyav = "pyav"


class CropMode(str, Enum):
    center = "center"
    random = "random"


class ClipMode(str, Enum):
    window = "window"  # a window of each video, of a length the batch sampler draws
    whole = "whole"  # each video entire at data.fps: the only way a model learns videos' lengths


MAX_SYNTHETIC_CLIPS = 1_000_000


@dataclass
class SyntheticDataConfig:
    kind: str = "balls"  # balls | textures (flowvid.data.synthetic.SYNTHETIC)
    num_clips: int = 1000
    val_clips: int = 64  # drawn with another seed

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.num_clips < 1 or self.val_clips < 0:
            yield "num_clips", f"must be >= 1 (and val_clips >= 0), got {self.num_clips}, {self.val_clips}"
        if max(self.num_clips, self.val_clips) > MAX_SYNTHETIC_CLIPS:
            # the batch sampler reads every clip's length at set-up; more distinct clips add nothing a
            # longer run does not (clips repeat across epochs)
            yield "num_clips", (f"must be at most {MAX_SYNTHETIC_CLIPS:,} (val_clips too), got {self.num_clips}, "
                                f"{self.val_clips}")


@dataclass
class DataConfig:
    """Where clips come from, how long they are, and how they are batched."""

    source: DataSource = DataSource.synthetic
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)
    manifest: str = ""  # jsonl from `flowvid data index` or `flowvid data synth`
    val_manifest: str = ""
    latents: str = ""  # folder of latent shards (flowvid.data.latents)
    reader: ReaderBackend = ReaderBackend.auto
    fps: float = 0.0  # resample clips to this rate by timestamps; 0 keeps each file's rate
    min_frames: int = 8  # clip length drawn uniformly in [min_frames, max_frames] ...
    max_frames: int = 16
    frame_choices: List[int] = field(default_factory=list)  # ... or from this set when given
    height: int = 32  # frames are resized (short side) and cropped to height x width
    width: int = 32
    crop: CropMode = CropMode.random
    clip_mode: ClipMode = ClipMode.window  # manifests: windows of videos, or whole videos (length learning)
    flip: float = 0.0  # manifests: probability that a training clip is mirrored left to right
    reverse: float = 0.0  # manifests: probability that a training clip plays backwards
    tokens_per_batch: int = 4096  # token budget of one packed batch (model tokens per frame x frames)
    max_clips_per_batch: int = 0  # 0 = only the token budget limits
    num_workers: int = 0
    persistent_workers: bool = True
    max_failed_fraction: float = 0.05  # reads that may fail (skipped, counted) before the run stops

    def problems(self) -> Iterator[tuple[str, str]]:
        if not 1 <= self.min_frames <= self.max_frames:
            yield "min_frames", f"must satisfy 1 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}"
        if any(c < 1 for c in self.frame_choices):
            yield "frame_choices", f"must be positive frame counts, got {list(self.frame_choices)}"
        if self.fps < 0:
            yield "fps", f"must be >= 0 (0 = native rate), got {self.fps}"
        if self.height < 1 or self.width < 1:
            yield "height", f"frame size must be positive, got {self.height}x{self.width}"
        if self.tokens_per_batch < 1 or self.max_clips_per_batch < 0 or self.num_workers < 0:
            yield "tokens_per_batch", "tokens_per_batch must be >= 1, max_clips_per_batch and num_workers >= 0"
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            yield "max_failed_fraction", f"must be in [0, 1], got {self.max_failed_fraction}"
        for key, p in (("flip", self.flip), ("reverse", self.reverse)):
            if not 0.0 <= p <= 1.0:
                yield key, f"must be a probability in [0, 1], got {p}"
            elif p and self.source != DataSource.manifest:
                yield key, f"applies to video files only (data.source=manifest), got data.source={self.source.value}"
        if self.source == DataSource.manifest and not self.manifest:
            yield "manifest", "is required when data.source=manifest (a jsonl from `flowvid data index`)"
        if self.source == DataSource.latents and not self.latents:
            yield "latents", "is required when data.source=latents (a folder of latent shards)"


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    linear = "linear"


@dataclass
class OptimConfig:
    """AdamW with linear warmup, then a constant, cosine or linear schedule; gradient clipping."""

    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0  # not applied to norms, biases and embeddings
    warmup_steps: int = 1000
    schedule: Schedule = Schedule.constant
    min_lr_ratio: float = 0.0  # cosine/linear decay ends at lr * min_lr_ratio at trainer.max_steps
    grad_clip: float = 1.0  # max global gradient norm; 0 = off

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.lr <= 0:
            yield "lr", f"must be > 0, got {self.lr}"
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            yield "betas", f"must be two numbers in [0, 1), got {list(self.betas)}"
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            yield "weight_decay", "weight_decay, warmup_steps and grad_clip must be >= 0"
        if not 0 <= self.min_lr_ratio <= 1:
            yield "min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}"


@dataclass
class TrainConfig:
    """What the training loop does besides the optimizer step."""

    ema_decay: float = 0.9999  # EMA weights are used for validation, sampling and export
    ema_start: int = 0  # steps before the EMA starts tracking (it copies the weights until then)
    label_dropout: float = 0.1  # share of labels replaced by the null label (classifier-free guidance)
    val_times: List[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])  # where on the path
    max_nonfinite_steps: int = 5  # consecutive non-finite losses before the run stops
    compile: bool = False  # torch.compile each block's work around attention (GPU training)
    accumulate_grad_batches: int = 1  # batches per optimizer step (each frame of them counts the same)
    init_from: str = ""  # export folder or .ckpt whose EMA weights start a new run (fine-tuning)
    checkpoint_every: int = 1000  # steps between checkpoints (last.ckpt is always the newest)
    # stop once this rank has done this many model TFLOPs (3 x the forward's matmuls on the visible
    # frames); 0 = off. Compares methods at equal compute: an insertion step is cheaper than a
    # full-sequence one. With it, optim.schedule=cosine|linear still ends at trainer.max_steps.
    max_tflops: float = 0.0
    keep_checkpoints: int = 3  # stepNNNNNNNN.ckpt files kept, the newest; 0 = all of them
    preview_clips: int = 2  # clips sampled with the EMA weights at each validation, as GIFs in the run folder
    preview_steps: int = 20
    # probability of each task per clip (flowvid/flow/tasks.py): which frames are given, so that one
    # checkpoint serves sample, i2v, interpolate and extend. {} = the default mix (generate 0.4, i2v
    # 0.15, interpolate 0.25, extend 0.15, complete 0.05); {generate: 1} trains generation alone.
    # Empty by default so that a config's mapping is the whole mix, not merged into a default one.
    tasks: Dict[str, float] = field(default_factory=dict)
    interpolate_spacings: List[int] = field(default_factory=lambda: [2, 3, 4])  # keyframe spacings drawn

    def problems(self) -> Iterator[tuple[str, str]]:
        if not 0 <= self.ema_decay < 1:
            yield "ema_decay", f"must be in [0, 1), got {self.ema_decay}"
        if not 0 <= self.label_dropout <= 1:
            yield "label_dropout", f"must be in [0, 1], got {self.label_dropout}"
        if any(not 0 <= q <= 1 for q in self.val_times):
            yield "val_times", f"are fractions of each path's time range, in [0, 1]; got {list(self.val_times)}"
        if self.preview_clips < 0 or self.preview_steps < 1:
            yield "preview_clips", "preview_clips must be >= 0 and preview_steps >= 1"
        if self.keep_checkpoints < 0:
            yield "keep_checkpoints", f"must be >= 0 (0 keeps every checkpoint), got {self.keep_checkpoints}"
        if self.accumulate_grad_batches < 1:
            yield "accumulate_grad_batches", f"must be >= 1 (batches a step), got {self.accumulate_grad_batches}"
        if self.max_tflops < 0:
            yield "max_tflops", f"must be >= 0 (0 = no compute budget), got {self.max_tflops}"
        if self.max_nonfinite_steps < 1 or self.checkpoint_every < 1 or self.ema_start < 0:
            yield "max_nonfinite_steps", "max_nonfinite_steps and checkpoint_every must be >= 1, ema_start >= 0"
        known = ("generate", "i2v", "interpolate", "extend", "complete")  # flowvid.flow.tasks.TASKS (no torch here)
        bad = set(self.tasks) - set(known) or any(w < 0 for w in self.tasks.values())
        if bad or (self.tasks and sum(self.tasks.values()) <= 0):
            yield "tasks", (f"maps tasks ({', '.join(known)}) to probabilities >= 0, not all 0; got "
                            f"{dict(self.tasks)}")
        if not self.interpolate_spacings or min(self.interpolate_spacings) < 2:
            yield "interpolate_spacings", f"must be keyframe spacings >= 2, got {list(self.interpolate_spacings)}"


@dataclass
class SamplingConfig:
    """Sampler settings the tools may change at sampling time (flowvid sample --kappa ...)."""

    kappa: str = ""  # insertion scheduler while sampling; "" = the one the model trained with (path.kappa)
    rate_guidance: bool = False  # classifier-free guidance on log lambda too
    skip_threshold: float = 0.0  # adaptive step skipping: reuse velocities that changed less than this
    # at most this many steps after the last insertion step (late frames take larger steps):
    # -1 = a quarter of the sampler's steps, 0 = as many as the frames need
    tail_steps: int = -1

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.tail_steps < -1:
            yield "tail_steps", (f"must be >= -1 (-1 = a quarter of --steps, 0 = as many as the frames need), "
                                 f"got {self.tail_steps}")
        if self.kappa not in ("",) + tuple(k.value for k in KappaName):
            yield "kappa", f"must be one of {[k.value for k in KappaName]} (or empty: the model's), got {self.kappa!r}"
        if self.skip_threshold < 0:
            yield "skip_threshold", f"must be >= 0 (0 = off), got {self.skip_threshold}"


@dataclass
class Config:
    """One whole experiment."""

    seed: int = 0
    kind: ModelKind = ModelKind.flow  # what `flowvid train` trains: the flow model or an autoencoder
    model: ModelConfig = field(default_factory=ModelConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    path: PathConfig = field(default_factory=PathConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    # Lightning Trainer options under Lightning's own names, e.g. trainer.max_steps=20.
    trainer: Dict[str, Any] = field(default_factory=dict)


def check_data_fits_model(cfg: Config) -> None:
    """Pixel sources feed the network directly: their frames must have the model's input shape.

    Checked where data meets the model (training), not at load time: tools such as
    `flowvid model-info` read a model section alone."""
    d, m = cfg.data, cfg.model
    if cfg.kind == ModelKind.autoencoder:
        a = cfg.autoencoder
        if d.source == DataSource.latents or a.in_channels != 3:
            raise ConfigError("config key 'data.source' must give RGB frames to train an autoencoder (synthetic or "
                              f"manifest, autoencoder.in_channels=3); got {d.source.value}, {a.in_channels} channels")
        if d.height % a.downsample or d.width % a.downsample:
            raise ConfigError(f"config key 'data.height' must make frames whose sides are multiples of "
                              f"autoencoder.downsample={a.downsample}; got {d.height}x{d.width}")
        if d.max_frames < 1 + a.temporal_factor:  # a clip is cut to 1 + T k frames: k = 0 trains no group
            raise ConfigError(f"config key 'data.max_frames' must be at least 1 + autoencoder.temporal_factor = "
                              f"{1 + a.temporal_factor} (frame 0, then a group of T), got {d.max_frames}")
        return
    if d.source != DataSource.latents and (d.height, d.width, 3) != (m.height, m.width, m.in_channels):
        raise ConfigError(f"config key 'data.height' must match the model: data frames {d.height}x{d.width}x3, "
                          f"model input {m.height}x{m.width}x{m.in_channels} (model.height, model.width, model.in_channels)")


def load_config(files: str | Path | Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Merge YAML files (in order) and dotted `key=value` overrides onto the schema; validate."""
    if isinstance(files, (str, Path)):
        files = [files]
    return _build(lambda: [part for path in files for part in _expand_defaults(Path(path), seen=())], overrides)


def config_from_yaml(text: str) -> Config:
    """A config from YAML text, e.g. the one a checkpoint carries; validated like a file."""
    return _build(lambda: [_yaml(lambda: OmegaConf.create(text), "the config text")], ())


def _yaml(read, where) -> Any:
    """read() with a YAML syntax error as one ConfigError line (where and the scanner's first line)."""
    try:
        return read()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None


def _build(parts, overrides: Sequence[str]) -> Config:
    merged = OmegaConf.structured(Config)
    try:
        for part in parts():
            merged = OmegaConf.merge(merged, part)
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from None
    validate(cfg)
    return cfg


def validate(cfg: Any, prefix: str = "") -> None:
    """Walk nested dataclasses; raise ConfigError on the first impossible value."""
    for f in dataclasses.fields(cfg):  # nan passes every comparison the checks below make
        value = getattr(cfg, f.name)
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"config key '{prefix}{f.name}' must be a finite number, got {v}")
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
    node = _yaml(lambda: OmegaConf.load(path), path)
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
