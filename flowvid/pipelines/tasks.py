"""The user tasks (METHOD.md, "Tasks"): generate, image-to-video, interpolate, extend.

Plain functions on a loaded model (flowvid.training.export.load_model) and its config. Frames at
the boundary are uint8 (F, H, W, 3) tensors; inside, the model's space is float (F, 3, H, W) in
[-1, 1]. Given frames come back bit-exact: the output's given frames are the (resized) input
uint8 frames themselves, written over whatever the model returned there.
Each task returns its frames plus a TaskRecord (seeds, steps, NFE, lengths, caps, timings, the
step at which each output frame was inserted), which flowvid.pipelines.outputs writes as JSON.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from flowvid.errors import UsageError
from flowvid.flow.sampler import (ClipResult, ClipTask, Denoiser, InsertionSampler, guided, sample_autoregressive,
                                  sample_full_sequence)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

AVERAGE_SEED_STRIDE = 1_000_003  # interpolation's averaged samples: pair j of window w draws seed + w + j * this

# The output grid of an exact-fps interpolation is p/q times the input rate with q at most this:
# larger denominators would generate q - 1 discarded frames for each kept one.
GRID_MAX_DENOMINATOR = 16
GRID_RTOL = 1e-6  # how close p/q must be to the asked ratio
DEFAULT_FPS = 8.0  # for models whose config has no data.fps, and for image lists
READ_CHUNK = 2  # video frames held at full size at a time while read_frames resizes them
CAP_PER_TRAINING_LENGTH = 4  # default length cap: this many times the training clips' data.max_frames
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- results


@dataclass
class ClipRecord:
    """One sampler clip (a generated sample, or one interpolation window)."""

    seed: int
    length: int  # frames the sampler returned for this clip
    capped: bool  # the length cap cut insertions
    nfe: int  # network evaluations of the sampler call that made this clip (guidance included)
    sampler_steps: int  # loop iterations run (at most 2 x steps for the insertion sampler)
    seconds: float  # this clip's share of its sampler call's wall time
    born: list[int]  # per frame: the sampler step that inserted it (-1: there from the start)
    given: list[int]  # indices of the given (context) frames in this clip


@dataclass
class TaskRecord:
    task: str  # generate | image_to_video | interpolate | extend
    kind: str  # the model's path kind: insertion | full_sequence | autoregressive
    seed: int
    steps: int  # requested steps (h = 1 / steps)
    nfe: int  # network evaluations in all, guidance included
    seconds: float  # sampling wall time (model loading and writing not included)
    fps: float  # frame rate of the output video(s)
    lengths: list[int]  # frames of each output video
    capped: list[bool]  # per output video: a length cap cut insertions
    clips: list[ClipRecord]
    guidance: float = 1.0
    label: int = -1
    max_frames: int = 0  # the length cap used (0 = none)
    timestamps: list[float] | None = None  # single-video tasks: output times, s from the first frame
    given: list[int] | None = None  # single-video tasks: output indices that are given frames
    grid: dict[str, Any] | None = None  # interpolation: ratio, p, q, gap counts, windows
    timings: dict[str, float] = field(default_factory=dict)  # the CLI adds load and write times
    sampling: dict[str, Any] = field(default_factory=dict)  # the sampler options used (kappa, tail, ...)


@dataclass
class Samples:
    clips: list[Tensor]  # uint8 (F_i, H, W, 3) each
    record: TaskRecord


@dataclass
class Video:
    frames: Tensor  # uint8 (F, H, W, 3)
    timestamps: list[float]  # (F,) seconds from the first frame
    record: TaskRecord


# ----------------------------------------------------------------------------- the model as a denoiser


def model_denoiser(model: torch.nn.Module) -> Denoiser:
    """A SpatioTemporalDiT as the sampler's Denoiser: (x, t, position, cu, context, passive, label) -> (v, lambda)."""

    def denoise(x, t, position, cu_seqlens, context, passive, label):
        with torch.no_grad():
            out = model(x, t, position, cu_seqlens, context, passive, label)
        return out.velocity, out.rate

    return denoise


# ----------------------------------------------------------------------------- frames


def to_model_space(frames: Tensor) -> Tensor:
    """uint8 (F, H, W, 3) -> float (F, 3, H, W) in [-1, 1]: x = u / 127.5 - 1."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()  # (F, 3, H, W)


def to_uint8(x: Tensor) -> Tensor:
    """float (F, 3, H, W) in [-1, 1] -> uint8 (F, H, W, 3): u = round((clamp(x) + 1) 127.5), as flowvid.io does."""
    if not bool(torch.isfinite(x).all()):
        raise UsageError("the model produced non-finite frames (NaN or inf); is the checkpoint damaged?")
    u = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u.permute(0, 2, 3, 1).contiguous()  # (F, H, W, 3)


DECODE_CHUNK = 16  # latent frames decoded at once: memory does not grow with a clip's length


@functools.lru_cache(maxsize=2)
def _load_autoencoder(path: str, device: str) -> torch.nn.Module:
    from flowvid.training.export import load_autoencoder

    return load_autoencoder(path, device)[0]


def pixel_size(cfg) -> tuple[int, int]:
    """(H, W) of the frames the model's tools take and make: its own, or its autoencoder's output."""
    h, w = cfg.model.height, cfg.model.width
    if not cfg.model.autoencoder:
        return h, w
    f = _load_autoencoder(str(cfg.model.autoencoder), "cpu").downsample
    return h * f, w * f


def temporal_factor(cfg) -> int:
    """Frames a latent frame of the model's autoencoder stands for (1: per-frame latents, or pixels)."""
    if not cfg.model.autoencoder:
        return 1
    return _load_autoencoder(str(cfg.model.autoencoder), "cpu").temporal_factor


def to_model_input(frames: Tensor, cfg) -> Tensor:
    """uint8 (F, H, W, 3) given frames -> the model's space: pixels in [-1, 1], or (latent model) the
    autoencoder's normalised latents of them (posterior means)."""
    x = to_model_space(frames)
    if not cfg.model.autoencoder:
        return x
    ae = _load_autoencoder(str(cfg.model.autoencoder), "cpu")
    with torch.no_grad():
        return ae.normalize(ae.encode_means(x, DECODE_CHUNK))


def to_pixels(frames: Tensor, cfg, scale: float = 1.0) -> Tensor:
    """A latent model's frames (F, c, h, w) decoded through model.autoencoder (its normalised latents,
    DECODE_CHUNK frames at a time) to (F, 3, H * scale, W * scale); a pixel model's as they are."""
    path = cfg.model.autoencoder
    if not path:
        return frames
    ae = _load_autoencoder(str(path), str(frames.device))
    if ae.latent_channels != cfg.model.in_channels:
        raise UsageError(f"model.autoencoder {path} makes {ae.latent_channels}-channel latents; this model takes "
                         f"{cfg.model.in_channels} (model.in_channels)")
    with torch.no_grad():
        return torch.cat([c.cpu() for c in ae.decode_chunks(ae.denormalize(frames), DECODE_CHUNK, scale)])


def fit_frames(frames: Any, cfg, what: str = "the input") -> Tensor:
    """uint8 (F, H, W, 3) at the model's frame size: short side scaled, centre crop (as datasets.resize_crop)."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, Tensor) or frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        got = f"{frames.dtype} {tuple(frames.shape)}" if hasattr(frames, "shape") else type(frames).__name__
        raise UsageError(f"{what} must be uint8 (F, H, W, 3) RGB frames, got {got}")
    h, w = pixel_size(cfg)
    if tuple(frames.shape[1:3]) != (h, w):
        log.warning("%s is %dx%d (WxH); resized and centre-cropped to the model's %dx%d",
                    what, frames.shape[2], frames.shape[1], w, h)
    return torch.from_numpy(fit_size(frames.numpy(), (h, w)))


def fit_size(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """uint8 (F, H, W, 3) scaled (short side) and centre-cropped to size (H, W); as they are for None."""
    if size is None or tuple(frames.shape[1:3]) == tuple(size):
        return np.ascontiguousarray(frames)
    from flowvid.data.datasets import resize_crop

    return to_uint8(resize_crop(frames, *size, random_crop=False, rng=np.random.default_rng(0))).numpy()


def read_frames(paths: Sequence[str | Path], fps: float | None = None,
                size: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Frames (F, H, W, 3) uint8 and their rate from one video file, or from an ordered list of images.

    A video keeps its own rate; images are `fps` apart (default 8). With size (H, W), frames are
    scaled and centre-cropped to it as they are decoded, READ_CHUNK at a time: a long 4K input
    then costs the memory of its result, not of its frames at full size.
    """
    from flowvid.io import read_image

    paths = [Path(p) for p in paths]
    if not paths:
        raise UsageError("no input given: expected one video file or a list of images")
    if len(paths) == 1 and paths[0].suffix.lower() not in IMAGE_SUFFIXES:
        return _read_video(paths[0], fps, size)
    images = [fit_size(read_image(p)[None], size)[0] for p in paths]
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise UsageError(f"the input images must share one size, got {sorted(s[:2] for s in sizes)} (H, W)")
    rate = DEFAULT_FPS if fps is None else float(fps)
    if not rate > 0:
        raise UsageError(f"--fps must be > 0, got {fps}")
    return np.stack(images), rate


def input_rate(paths: Sequence[str | Path], fps: float | None = None) -> float:
    """The frame rate read_frames will give, from the video's header alone (no decoding)."""
    from flowvid.data.readers import open_video

    if len(paths) != 1 or Path(paths[0]).suffix.lower() in IMAGE_SUFFIXES:
        return DEFAULT_FPS if fps is None else float(fps)
    with open_video(paths[0], backend="pyav") as reader:
        return float(reader.info.fps)


def _read_video(path: Path, fps: float | None, size: tuple[int, int] | None) -> tuple[np.ndarray, float]:
    from flowvid.data.readers import open_video

    with open_video(path, backend="pyav") as reader:
        # a chunk lives in the reader's buffer until the next: keep a copy when it is not resized
        frames = np.concatenate([fit_size(c, size) if size else c.copy() for c in reader.iter_frames(READ_CHUNK)])
        ts, rate = reader.timestamps(), reader.info.fps
    if fps is not None:
        log.warning("--fps applies to image lists; %s keeps its own rate, %.4g fps", path, rate)
    if len(ts) > 2 and rate > 0 and np.abs(np.diff(ts) - 1 / rate).max() > 0.01 / rate:
        log.warning("%s has a variable frame rate; its frames are taken as 1/%.4g s apart", path, rate)
    if not rate > 0:
        raise UsageError(f"{path}: no frame rate in the file; cannot place output frames in time")
    return frames, float(rate)


# ----------------------------------------------------------------------------- checks


def _check_model(cfg, task: str, need_insertion: bool, per_frame: bool = False) -> None:
    """per_frame: the task places given frames one by one, which latents that each stand for T > 1
    frames cannot express."""
    if cfg.model.in_channels != 3 and not cfg.model.autoencoder:
        raise UsageError(f"this model works in a {cfg.model.in_channels}-channel latent space but names no "
                         "autoencoder to decode it; train it with model.autoencoder=PATH (docs/autoencoder.md)")
    if per_frame and (t := temporal_factor(cfg)) > 1:
        raise UsageError(f"{task} places given frames one by one, but model.autoencoder {cfg.model.autoencoder} "
                         f"makes one latent frame per {t} frames; use an autoencoder with per-frame latents")
    kind = _kind(cfg)
    if need_insertion and kind != "insertion":
        raise UsageError(f"{task} needs an insertion model (path.kind=insertion); this checkpoint is the "
                         f"{kind} baseline, which only generates (flowvid sample)")


def _check_common(cfg, steps: int, guidance: float, label: int) -> None:
    if steps < 1:
        raise UsageError(f"steps must be >= 1, got {steps}")
    n = cfg.model.num_classes
    if label >= 0 and not n:
        raise UsageError(f"this model is unconditional (model.num_classes=0) but class {label} was given")
    if label >= n > 0 or label < -1:
        raise UsageError(f"class must be in [0, {n - 1}] (or -1 for none), got {label}")
    if not (math.isfinite(guidance) and guidance >= 0):
        raise UsageError(f"guidance scale must be a finite number >= 0, got {guidance}")
    if guidance != 1.0 and label < 0:
        raise UsageError(f"guidance (scale {guidance}) needs a class label: classifier-free guidance compares "
                         "the class with the null label")


def _kind(cfg) -> str:
    return getattr(cfg.path.kind, "value", cfg.path.kind)


def _cap(cfg, max_frames: int | None, given: int = 0) -> int:
    """The length cap: as asked (0 = none), else the given frames plus 4 x the training length."""
    if max_frames is None:
        return given + CAP_PER_TRAINING_LENGTH * cfg.data.max_frames
    if max_frames < 0:
        raise UsageError(f"max_frames must be >= 0 (0 = no cap), got {max_frames}")
    return max_frames


def _check_result_fits(frames: int, cfg, advice: str) -> None:
    """Refuse, before sampling, output frames that could outgrow half of this machine's memory:
    they are all held until written."""
    from flowvid.models.flops import device_memory

    h, w = pixel_size(cfg)
    need, have = frames * h * w * 3, device_memory(torch.device("cpu")) // 2
    if need > have:
        raise UsageError(f"up to {frames:,} output frames may take {need / 2**30:,.1f} GiB, more than half this "
                         f"machine's memory ({have / 2**30:,.1f} GiB); {advice}")


def default_fps(cfg) -> float:
    """The rate the model was trained at (data.fps), else 8."""
    return float(cfg.data.fps) if cfg.data.fps > 0 else DEFAULT_FPS


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _frame_shape(cfg) -> tuple[int, int, int]:
    return cfg.model.in_channels, cfg.model.height, cfg.model.width


def _sampler(model, cfg, steps: int, max_frames: int, guidance: float) -> InsertionSampler:
    sampling = cfg.sampling
    return InsertionSampler(model_denoiser(model), _frame_shape(cfg), kappa=sampling.kappa or cfg.path.kappa,
                            steps=steps, n_start=cfg.path.n_start, max_frames=max_frames, guidance=guidance,
                            rate_guidance=sampling.rate_guidance, skip_threshold=sampling.skip_threshold,
                            tail_steps=tail_steps(sampling, steps), device=_device(model))


def tail_steps(sampling, steps: int) -> int:
    """sampling.tail_steps as the sampler takes it: -1 (the default) is a quarter of the steps, which
    keeps FVD at about 0.6 of the exact rule's evaluations (docs/RESULTS.md, the sampler's defaults)."""
    return steps // 4 if sampling.tail_steps < 0 else sampling.tail_steps


def _born(result: ClipResult) -> list[int]:
    """Per output frame, the step that inserted it (-1: there from the start): replay of the insertions,
    each (step, index of the new frame in the sequence right after that step's splice)."""
    born = [-1] * (result.frames.shape[0] - len(result.insertions))
    for step, at in result.insertions:
        born.insert(at, step)
    return born


def _clip_record(seed: int, r: ClipResult, nfe: int, seconds: float) -> ClipRecord:
    given = torch.nonzero(r.is_context).flatten().tolist()
    return ClipRecord(seed, int(r.frames.shape[0]), bool(r.capped), nfe, int(r.steps), seconds, _born(r), given)


def _sub_progress(progress: Progress | None, part: int, parts: int, total: int) -> Progress | None:
    """Progress of part `part` of `parts` parts of `total` units each, as one bar."""
    if progress is None:
        return None
    return lambda done, _total: progress(part * total + min(done, total), parts * total)


def _part_done(progress: Progress | None, part: int, parts: int, total: int) -> None:
    """The sampler may finish before its bound of 2 x steps: fill the bar to the part's end."""
    if progress is not None:
        progress((part + 1) * total, parts * total)


# ----------------------------------------------------------------------------- generate


def generate(model, cfg, num: int = 1, steps: int = 50, seed: int = 0, max_frames: int | None = None,
             guidance: float = 1.0, label: int = -1, fps: float = 0.0, batch_size: int = 0,
             progress: Progress | None = None, preview: bool = False) -> Samples:
    """num clips, unconditional (label -1) or of one class; the model decides their lengths.
    preview: a latent model's clips decoded at 1/4 of the frame side (the decoder's coarsest output).

    Clip i draws from seed + i. batch_size clips share a packed sampler call (0: all of them).
    Baselines (path.kind full_sequence | autoregressive) make max_frames (default data.max_frames) frames.
    """
    _check_model(cfg, "generate", need_insertion=False)
    _check_common(cfg, steps, guidance, label)
    if num < 1 or batch_size < 0:
        raise UsageError(f"num must be >= 1 and batch_size >= 0, got {num} and {batch_size}")
    if preview and not cfg.model.autoencoder:
        raise UsageError("--preview decodes a latent model's clips at a quarter of the frame side; this model makes "
                         "pixels (it names no model.autoencoder)")
    if preview and 0.25 not in _load_autoencoder(str(cfg.model.autoencoder), "cpu").scales:
        raise UsageError(f"--preview needs a decoder with a quarter-scale output (flowvid's multi-scale one); "
                         f"model.autoencoder {cfg.model.autoencoder} decodes at full scale only")
    kind = _kind(cfg)
    cap = _cap(cfg, max_frames) if kind == "insertion" else (max_frames or cfg.data.max_frames)
    _check_result_fits(num * cap, cfg, "ask for fewer clips a call (another --seed continues the draws) or a "
                       "lower --max-frames")
    seeds = [seed + i for i in range(num)]
    batches = [seeds[i:i + (batch_size or num)] for i in range(0, num, batch_size or num)]
    clips, records, nfe, t0 = [], [], 0, time.perf_counter()
    for b, batch in enumerate(batches):
        units = 1  # the baselines report nothing along the way
        t1 = time.perf_counter()
        if kind == "insertion":
            sampler = _sampler(model, cfg, steps, cap, guidance)
            units = sampler.max_steps  # the insertion sampler reports (step, max_steps)
            sub = _sub_progress(progress, b, len(batches), units)
            results = sampler.sample([ClipTask(label=label, seed=s) for s in batch], sub)
            n_b, frames = sampler.stats.nfe, [r.frames for r in results]
            sec = (time.perf_counter() - t1) / len(batch)
            records += [_clip_record(s, r, n_b, sec) for s, r in zip(batch, results)]
        else:
            frames, n_b = _baseline(model, cfg, kind, cap, steps, batch, guidance, label)
            sec = (time.perf_counter() - t1) / len(batch)
            full = kind == "full_sequence"
            born = [-1] * cap if full else [f * steps for f in range(cap)]  # AR: frame f starts at step f * steps
            records += [ClipRecord(s, cap, False, n_b, steps if full else cap * steps, sec, born, []) for s in batch]
        _part_done(progress, b, len(batches), units)
        nfe += n_b
        clips += [to_uint8(to_pixels(f, cfg, 0.25 if preview else 1.0)) for f in frames]
    record = TaskRecord("generate", kind, seed, steps, nfe, time.perf_counter() - t0, fps or default_fps(cfg),
                        [int(c.shape[0]) for c in clips], [r.capped for r in records], records, guidance, label,
                        cap, sampling=_sampling_record(cfg, steps) if kind == "insertion" else {})
    _log_done(record)
    return Samples(clips, record)


def _baseline(model, cfg, kind: str, num_frames: int, steps: int, seeds: list[int], guidance: float,
              label: int) -> tuple[list[Tensor], int]:
    """The full-sequence or autoregressive baseline sampler: fixed length, no insertion."""
    fn = sample_full_sequence if kind == "full_sequence" else sample_autoregressive
    den, per_call = model_denoiser(model), 1
    if guidance != 1.0:
        den, per_call = guided(den, guidance), 2
    labels = [label] * len(seeds) if label >= 0 else None  # no label tensor at all for unconditional models
    frames, stats = fn(den, _frame_shape(cfg), num_frames, steps, seeds, labels, device=_device(model))
    return frames, stats.nfe * per_call


# ----------------------------------------------------------------------------- image to video


def image_to_video(model, cfg, image: Any, steps: int = 50, seed: int = 0, max_frames: int | None = None,
                   guidance: float = 1.0, label: int = -1, fps: float = 0.0,
                   progress: Progress | None = None) -> Video:
    """The image (uint8 (H, W, 3)) is frame 0: clean, active context; the model continues it.

    Starts from the image plus n_start - 1 noise frames (docs/path.md, "Delays and start frames").
    """
    _check_model(cfg, "image-to-video", need_insertion=True)
    _check_common(cfg, steps, guidance, label)
    img = image if isinstance(image, Tensor) else torch.from_numpy(np.ascontiguousarray(image))
    if img.dim() != 3:
        raise UsageError(f"the image must be uint8 (H, W, 3), got {img.dtype} {tuple(img.shape)}")
    given = fit_frames(img[None], cfg, "the image")  # (1, H, W, 3)
    cap = _cap(cfg, max_frames, given=1)
    task = ClipTask(context=to_model_input(given, cfg), passive=[False], noise_after=cfg.path.n_start - 1,
                    label=label, seed=seed)
    t0 = time.perf_counter()
    sampler = _sampler(model, cfg, steps, cap, guidance)
    r = sampler.sample([task], progress)[0]
    _part_done(progress, 0, 1, sampler.max_steps)
    frames = _restore_given(to_uint8(to_pixels(r.frames, cfg)), r.is_context, given, cfg)
    rate = fps or default_fps(cfg)
    return _video("image_to_video", cfg, seed, steps, sampler.stats.nfe, t0, rate, frames, [r], [seed],
                  guidance, label, cap)


def _restore_given(frames: Tensor, is_context: Tensor, given: Tensor, cfg) -> Tensor:
    """The given frames, bit-exact, where the output holds them (in order). With latents of T frames
    each, latent frame j holds output frame T j (frame 0: the image of image-to-video)."""
    if int(is_context.sum()) != given.shape[0]:
        raise RuntimeError(f"the sampler returned {int(is_context.sum())} context frames for {given.shape[0]} given")
    frames[is_context.nonzero().flatten() * temporal_factor(cfg)] = given
    return frames


def _video(task: str, cfg, seed: int, steps: int, nfe: int, t0: float, fps: float, frames: Tensor,
           results: list[ClipResult], seeds: list[int], guidance: float = 1.0, label: int = -1, cap: int = 0,
           given: list[int] | None = None, grid: dict | None = None, timestamps: list[float] | None = None) -> Video:
    seconds = time.perf_counter() - t0
    clips = [_clip_record(s, r, nfe, seconds / len(results)) for s, r in zip(seeds, results)]
    if given is None:
        given = clips[0].given
    ts = timestamps if timestamps is not None else [k / fps for k in range(frames.shape[0])]
    record = TaskRecord(task, _kind(cfg), seed, steps, nfe, seconds, fps, [int(frames.shape[0])],
                        [any(c.capped for c in clips)], clips, guidance, label, cap, ts, given, grid,
                        sampling=_sampling_record(cfg, steps))
    _log_done(record)
    return Video(frames, ts, record)


def _sampling_record(cfg, steps: int) -> dict[str, Any]:
    """The insertion sampler's options as used, so that a record says how its clips were made."""
    s = cfg.sampling
    return {"kappa": s.kappa or cfg.path.kappa.value, "rate_guidance": s.rate_guidance,
            "skip_threshold": s.skip_threshold, "tail_steps": tail_steps(s, steps), "n_start": cfg.path.n_start}


def _log_done(record: TaskRecord) -> None:
    log.info("%s: %s frames, %d network evaluations, %.2f s%s", record.task, record.lengths, record.nfe,
             record.seconds, " (length cap reached)" if any(record.capped) else "")


# ----------------------------------------------------------------------------- interpolate


def exact_grid(ratio: float) -> tuple[int, int]:
    """(p, q) with p / q == ratio (relative error <= 1e-6) and q <= 16: generate p x, keep every q-th frame."""
    if not (math.isfinite(ratio) and ratio > 0):
        raise UsageError(f"the frame-rate ratio must be a positive number, got {ratio}")
    if ratio < 1 - GRID_RTOL:
        raise UsageError(f"interpolation only adds frames: the output rate must be at least the input rate, "
                         f"got a ratio of {ratio:.6g} (use a higher target fps or factor >= 1)")
    frac = Fraction(ratio).limit_denominator(GRID_MAX_DENOMINATOR)
    if abs(float(frac) - ratio) > GRID_RTOL * ratio:
        raise UsageError(f"no exact output grid for a ratio of {ratio:.8g}: the nearest p/q with q <= "
                         f"{GRID_MAX_DENOMINATOR} is {frac} ({float(frac):.8g}); choose a target fps that is "
                         f"p/q times the input rate, or use --learned")
    return frac.numerator, frac.denominator


def grid_for(src_fps: float, target_fps: float | None = None, factor: float | None = None) -> tuple[int, int]:
    """(p, q) of the exact output grid for a target rate or a factor; errors name what was asked."""
    if target_fps is not None:
        if not (math.isfinite(target_fps) and target_fps > 0):
            raise UsageError(f"target fps must be a positive number, got {target_fps}")
        if target_fps < src_fps * (1 - GRID_RTOL):
            raise UsageError(f"target fps {target_fps:g} is below the input's {src_fps:.6g} fps: interpolation "
                             "only adds frames")
        try:
            return exact_grid(target_fps / src_fps)
        except ValueError:
            near = Fraction(target_fps / src_fps).limit_denominator(GRID_MAX_DENOMINATOR)
            raise UsageError(f"no exact output grid for {target_fps:.8g} fps from {src_fps:.8g} fps: the ratio "
                             f"{target_fps / src_fps:.8g} is no p/q with q <= {GRID_MAX_DENOMINATOR} (nearest: {near}, "
                             f"i.e. --target-fps {src_fps * float(near):.10g}); or use --learned") from None
    if factor is None or not (math.isfinite(factor) and factor >= 1 - GRID_RTOL):
        raise UsageError(f"factor must be a number >= 1 (output rate = input rate x factor), got {factor}")
    return exact_grid(float(factor))


def _windows(n: int, window: int) -> list[tuple[int, int]]:
    """[start, end) ranges of `window` given frames that share their end frames: 0..w-1, w-1..2w-2, ..."""
    out, a = [], 0
    while a < n - 1:
        b = min(a + window, n)
        out.append((a, b))
        a = b - 1
    return out


def interpolate(model, cfg, frames: Any, src_fps: float, target_fps: float | None = None,
                factor: float | None = None, learned: bool = False, steps: int = 50, seed: int = 0,
                window: int = 8, max_frames: int | None = None, average: int = 1,
                progress: Progress | None = None) -> Video:
    """New frames between the given ones (context: all active but the last, which is passive).

    target_fps or factor: an exact grid. With r = target / src = p / q, every gap gets exactly p - 1
    frames (a p x grid) and every q-th frame is kept, so output frame k is at exactly k / target_fps
    and the output frames at input times are the input frames. learned: the rates decide each gap.
    Windows of `window` given frames, sharing their end frames, are sampled one after another;
    max_frames caps the frames of one window (None: the window plus 4 x the training length).
    average > 1 (exact grid): the mean of that many samples, in antithetic pairs (the same noise,
    then its negative), sampled together as one batch; with one step, an estimate of the mean frame.
    """
    _check_model(cfg, "interpolation", need_insertion=True, per_frame=True)
    _check_common(cfg, steps, 1.0, -1)
    if sum([target_fps is not None, factor is not None, bool(learned)]) != 1:
        raise UsageError("give exactly one of target fps (--target-fps), factor (--factor) or learned (--learned)")
    if not (math.isfinite(src_fps) and src_fps > 0):
        raise UsageError(f"the input frame rate must be > 0, got {src_fps}")
    if window < 2:
        raise UsageError(f"window must hold at least 2 given frames, got {window}")
    if average < 1 or (average > 1 and learned):
        given_as = f"{average} with --learned" if learned else str(average)
        raise UsageError(f"--average must be >= 1 and needs an exact grid (--factor or --target-fps): the "
                         f"samples of learned gaps differ in length; got {given_as}")
    given = fit_frames(frames, cfg, "the input frames")
    n = given.shape[0]
    if n < 2:
        raise UsageError(f"interpolation needs at least 2 frames, got {n}")
    p = q = 1
    if not learned:
        p, q = grid_for(src_fps, target_fps, factor)
    given_per_window = min(window, n)
    cap = _cap(cfg, max_frames, given_per_window)
    made = (given_per_window - 1) * p + 1  # a window is sampled whole: its length is the memory
    if cap and made > cap:
        raise UsageError(f"a {p}x grid makes windows of {made} frames, above the length cap of {cap}; lower the "
                         f"factor or --window, or raise --max-frames")
    _check_result_fits((n - 1) * p + 1, cfg, "lower the factor, or interpolate the input in parts")
    wins = _windows(n, window)
    t0, results, seeds, nfe, parts = time.perf_counter(), [], [], 0, [given[:1]]
    for w, (a, b) in enumerate(wins):
        ctx, k = given[a:b], b - a
        if p == 1 and not learned:  # ratio 1: nothing to insert
            parts.append(ctx[1:])
            continue
        tasks = [ClipTask(context=to_model_input(ctx, cfg), passive=[False] * (k - 1) + [True], noise_after=0,
                          gap_counts=() if learned else [p - 1] * (k - 1) + [0],
                          seed=seed + w + (j // 2) * AVERAGE_SEED_STRIDE, noise_sign=-1.0 if j % 2 else 1.0)
                 for j in range(average)]
        # a prescribed grid fixes the length; learned gaps get the usual cap (no unbounded growth)
        sampler = _sampler(model, cfg, steps, cap if learned else 0, 1.0)
        rs = sampler.sample(tasks, _sub_progress(progress, w, len(wins), sampler.max_steps))
        _part_done(progress, w, len(wins), sampler.max_steps)
        r = rs[0]
        mean = torch.stack([to_pixels(x.frames, cfg) for x in rs]).mean(0)  # (F, 3, H, W)
        out = _restore_given(to_uint8(mean), r.is_context, ctx, cfg)
        if not learned and (out.shape[0] != (k - 1) * p + 1 or r.is_context[::p].sum() != k):
            raise RuntimeError(f"the sampler returned {out.shape[0]} frames for a grid of {(k - 1) * p + 1}")
        results.append(r)
        seeds.append(seed + w)
        nfe += sampler.stats.nfe * average  # one packed call evaluates all the averaged samples
        parts.append(out[1:])  # the window's first frame is the previous window's last
    joined = torch.cat(parts)
    if learned:
        fps = src_fps * (joined.shape[0] - 1) / (n - 1)
        kept = joined
        given_idx = _given_indices(results, n) if results else list(range(n))
        grid = {"mode": "learned", "windows": [list(ab) for ab in wins]}
    else:
        fps = float(target_fps) if target_fps is not None else src_fps * p / q
        kept = joined[::q]
        given_idx = [j for j in range(kept.shape[0]) if (j * q) % p == 0]
        grid = {"mode": "exact", "ratio": p / q, "p": p, "q": q, "gap_frames": p - 1, "average": average,
                "generated_frames": int(joined.shape[0]), "windows": [list(ab) for ab in wins]}
    return _video("interpolate", cfg, seed, steps, nfe, t0, fps, kept.contiguous(), results or [_empty(given)],
                  seeds or [seed], given=given_idx, grid=grid)


def _given_indices(results: list[ClipResult], n: int) -> list[int]:
    """Output indices of the given frames after joining windows that share their end frames."""
    out, offset = [], 0
    for w, r in enumerate(results):
        idx = torch.nonzero(r.is_context).flatten().tolist()
        out += [offset + i for i in (idx if w == 0 else idx[1:])]
        offset += r.frames.shape[0] - 1
    assert len(out) == n
    return out


def _empty(given: Tensor) -> ClipResult:
    """A ClipResult for a task that needed no sampling (ratio 1)."""
    return ClipResult(to_model_space(given), torch.ones(given.shape[0], dtype=torch.bool), [], False, 0)


# ----------------------------------------------------------------------------- extend


def extend(model, cfg, frames: Any, src_fps: float, num_frames: int | None = None, learned: bool = False,
           steps: int = 50, seed: int = 0, max_frames: int | None = None,
           progress: Progress | None = None) -> Video:
    """New frames after the given ones (context: passive, except the last, active).

    num_frames N: exactly N new frames (n_start - 1 of them start as noise after the context, the rest
    are inserted after the last given frame at times u ~ kappa^-1(U), as in training); learned: the
    rates decide, up to max_frames in all (default: given + 4 x data.max_frames).
    """
    _check_model(cfg, "extension", need_insertion=True, per_frame=True)
    _check_common(cfg, steps, 1.0, -1)
    if (num_frames is not None) == bool(learned):
        raise UsageError("give exactly one of a frame count (--frames N) or learned (--learned)")
    if not (math.isfinite(src_fps) and src_fps > 0):
        raise UsageError(f"the input frame rate must be > 0, got {src_fps}")
    given = fit_frames(frames, cfg, "the input frames")
    k = given.shape[0]
    if k < 1:
        raise UsageError("extension needs at least 1 given frame, got none")
    if num_frames is not None:
        if num_frames < 1:
            raise UsageError(f"--frames must be >= 1, got {num_frames}")
        cap = _cap(cfg, max_frames, given=k)
        if cap and k + num_frames > cap:
            raise UsageError(f"the length cap ({cap}) is below the {k} given frames plus the {num_frames} asked; "
                             f"raise --max-frames")
        _check_result_fits(k + num_frames, cfg, "ask for fewer --frames")
        noise = min(cfg.path.n_start - 1, num_frames)
        gaps: Sequence[int | None] = [0] * (k - 1) + [num_frames - noise]
    else:
        cap = _cap(cfg, max_frames, given=k)
        noise, gaps = cfg.path.n_start - 1, ()
    task = ClipTask(context=to_model_input(given, cfg), passive=[True] * (k - 1) + [False], noise_after=noise,
                    gap_counts=gaps, seed=seed)
    t0 = time.perf_counter()
    sampler = _sampler(model, cfg, steps, cap, 1.0)
    r = sampler.sample([task], progress)[0]
    _part_done(progress, 0, 1, sampler.max_steps)
    out = _restore_given(to_uint8(to_pixels(r.frames, cfg)), r.is_context, given, cfg)
    if not bool(r.is_context[:k].all()):
        raise RuntimeError("the sampler placed new frames inside the given prefix")
    if num_frames is not None and out.shape[0] != k + num_frames:
        raise RuntimeError(f"the sampler returned {out.shape[0] - k} new frames, {num_frames} asked")
    return _video("extend", cfg, seed, steps, sampler.stats.nfe, t0, float(src_fps), out, [r], [seed], cap=cap)


# ----------------------------------------------------------------------------- complete


def complete(model, cfg, frames: Sequence[Any], src_fps: float, learned: bool = False, steps: int = 50,
             seed: int = 0, max_frames: int | None = None, progress: Progress | None = None) -> Video:
    """Fill the holes (None entries) of a frame sequence; the given frames are context (scene completion).

    Exact (default): each run of holes gets exactly its frames, so output frame i is input position
    i. learned: the model decides how many frames each gap holds (the holes only say where a gap
    continues past the last given frame). The first frame must be given: frames are only ever
    inserted after an existing one. All given frames are active but the last when nothing follows it.
    """
    _check_model(cfg, "completion", need_insertion=True, per_frame=True)
    _check_common(cfg, steps, 1.0, -1)
    if not (math.isfinite(src_fps) and src_fps > 0):
        raise UsageError(f"the input frame rate must be > 0, got {src_fps}")
    at = [i for i, f in enumerate(frames) if f is not None]
    if not at or at[0] != 0:
        raise UsageError("the first frame must be given (new frames are only inserted after an existing one); "
                         f"got holes at the start of {len(frames)} positions")
    if len(at) == len(frames) and not learned:
        raise UsageError("no hole to fill: mark the missing frames (e.g. a.png,_,_,b.png) or use --learned")
    given = fit_frames(np.stack([np.asarray(frames[i]) for i in at]), cfg, "the given frames")
    k, trailing = len(at), len(frames) - 1 - at[-1]
    gaps = () if learned else [b - a - 1 for a, b in zip(at, at[1:])] + [trailing]
    task = ClipTask(context=to_model_input(given, cfg), passive=[False] * (k - 1) + [trailing == 0], noise_after=0,
                    gap_counts=gaps, seed=seed)
    cap = _cap(cfg, max_frames, given=k) if learned else 0
    t0 = time.perf_counter()
    sampler = _sampler(model, cfg, steps, cap, 1.0)
    r = sampler.sample([task], progress)[0]
    _part_done(progress, 0, 1, sampler.max_steps)
    out = _restore_given(to_uint8(to_pixels(r.frames, cfg)), r.is_context, given, cfg)
    if not learned and out.shape[0] != len(frames):
        raise RuntimeError(f"the sampler returned {out.shape[0]} frames for {len(frames)} positions")
    return _video("complete", cfg, seed, steps, sampler.stats.nfe, t0, float(src_fps), out, [r], [seed], cap=cap)
